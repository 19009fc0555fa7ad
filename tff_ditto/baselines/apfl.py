"""APFL (Deng et al. 2020) as coded in the Ditto reference (`trainers_MTL/apfl.py`).

Per sampled client k and local iteration, on one mini-batch b
(reference_implementations.md A.2):

1. the client's copy of the global model takes a plain SGD step,
   w_k <- w_k - lr * grad F_k(w_k; b);
2. the local model steps with the gradient at the client's interpolation
   a_k (kept from the previous iteration), v_k <- v_k - alpha * lr *
   grad F_k(a_k; b);
3. a_k <- alpha * v_k + (1 - alpha) * w_k.

The client sends w_t - w_k (TFF sign); the server averages (unweighted) at
learning rate 1. Evaluation is on alpha * v_k + (1 - alpha) * w with the
current global model w (`tff_ditto.baselines.finetuning.build_interpolated_evaluation`).
alpha = 1 is purely local training of v_k, bit for bit the `local` method's
personal models.

Client state (versioned files as Ditto's): v_k followed by a_k. As in the
reference, a_k persists across rounds: the first step of a round uses the
interpolation left by the client's previous round (built with that round's
w_k), not alpha v_k + (1 - alpha) w_t; initially a_k = v_k = the initial
model. The mixing weight alpha is fixed (`--apfl_alpha`; reference default
0.5): the reference does not implement APFL's adaptive alpha update.

Deviations: none in the update. The reference draws its corrupt clients with
replacement and without the seed offset; here the runner's fixed malicious set
is used, as for every method.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import optimization
from tff_ditto import process_templates
from tff_ditto.baselines import common


def build_apfl_process(
    model_fn: client_data_schema.ModelFn,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    alpha: float,
    local_steps: int,
    model_aggregator=None,
    server_optimizer=None,
    simulate_attacks: bool = False,
) -> tff.learning.templates.LearningProcess:
  """Builds APFL as a `LearningProcess` with file-backed (v_k, a_k).

  Client data: `OrderedDict(batches, personal_state, [attack])`.

  Args:
    model_fn: No-arg `tff.learning.models.VariableModel` builder.
    client_optimizer: Optimizer of both models' steps (reference: SGD at lr;
      the local model's gradient is scaled by alpha).
    alpha: Mixing weight in [0, 1].
    local_steps: Iterations per client per round.
    model_aggregator: `tff.aggregators` factory (default mean).
    server_optimizer: Default SGD at learning rate 1.
    simulate_attacks: Add the malicious-client instruction to the data.

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    ValueError: On alpha outside [0, 1] or non-positive local_steps.
  """
  common.check_local_steps(local_steps)
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}.')
  data_type = client_data_schema.client_data_struct_type(
      model_fn, personal_state=True, attack=simulate_attacks
  )

  def make_client_update():
    global_model = model_fn()
    global_weights = tff.learning.models.ModelWeights.from_model(global_model)
    local_model = model_fn()
    local_weights = tff.learning.models.ModelWeights.from_model(local_model)
    mixed_model = model_fn()
    mixed_weights = tff.learning.models.ModelWeights.from_model(mixed_model)
    local_variables = common.all_variables(local_weights)
    mixed_variables = common.all_variables(mixed_weights)
    global_variables = common.all_variables(global_weights)
    model_size = client_states.num_entries(local_variables)

    @tf.function
    def client_update(initial_weights, client_data):
      handle = client_data_schema.state_handle(client_data)
      state = client_states.read_state(
          handle['read_path'],
          model_size,
          initial_extra=tf.zeros([model_size], tf.float32),
      )
      # The initial file holds v only; then a = v (both the initial model).
      mixed_flat = tf.where(state.has_extra, state.extra, state.model)
      assigned = (
          common.assign_all(
              local_variables,
              client_states.unflatten_tensors(state.model, local_variables),
          )
          + common.assign_all(
              mixed_variables,
              client_states.unflatten_tensors(mixed_flat, mixed_variables),
          )
          + common.assign_all(
              global_variables, common.all_variables(initial_weights)
          )
      )
      with tf.control_dependencies(assigned):
        global_state = optimization.initialize_optimizer(
            client_optimizer, global_weights
        )
        local_state = optimization.initialize_optimizer(
            client_optimizer, local_weights
        )
      local_trainable = tuple(tf.nest.flatten(local_weights.trainable))
      mixed_trainable = tuple(tf.nest.flatten(mixed_weights.trainable))
      global_trainable = tuple(tf.nest.flatten(global_weights.trainable))

      def train_on_batch(loop_state, batch):
        (
            global_state,
            local_state,
            global_loss_sum,
            local_loss_sum,
            num_batches,
            num_examples,
        ) = loop_state
        # 1. Plain SGD on the client's copy of the global model.
        global_state, global_loss, examples = optimization.proximal_step(
            global_model,
            global_weights,
            client_optimizer,
            global_state,
            batch,
            (),
            0.0,
        )
        # 2. Local model: alpha * gradient at the kept interpolation.
        mixed_gradients, mixed_loss, _ = optimization.gradient(
            mixed_model, mixed_trainable, batch
        )
        local_state, updated = client_optimizer.next(
            local_state,
            local_trainable,
            tuple(alpha * g for g in mixed_gradients),
        )
        for variable, value in zip(local_trainable, updated):
          variable.assign(value)
        # 3. New interpolation with the new v_k and w_k.
        for mixed, local, glob in zip(
            mixed_trainable, local_trainable, global_trainable
        ):
          mixed.assign(alpha * local + (1.0 - alpha) * glob)
        return (
            global_state,
            local_state,
            global_loss_sum + global_loss,
            local_loss_sum + mixed_loss,
            num_batches + 1.0,
            num_examples + tf.cast(examples, tf.float32),
        )

      zero = tf.constant(0.0)
      _, _, global_loss_sum, local_loss_sum, num_batches, num_examples = (
          batch_loops.reduce_batches(
              client_data[client_data_schema.BATCHES_KEY],
              (global_state, local_state, zero, zero, zero, zero),
              train_on_batch,
              max_batches=local_steps,
          )
      )
      written = client_states.write_state(
          handle['write_path'],
          client_states.state_variables([local_weights, mixed_weights]),
      )
      update = process_templates.model_delta(
          initial_weights, global_weights.trainable, after=[written]
      )
      statistics = process_templates.loss_statistics(
          global_loss_sum=global_loss_sum,
          personal_loss_sum=local_loss_sum,
          num_batches=num_batches,
          num_examples=num_examples,
      )
      return update, tf.constant(1.0), statistics

    return client_update

  client_work = process_templates.build_client_work(
      model_fn, data_type, make_client_update, simulate_attacks
  )
  return process_templates.compose_process(
      model_fn, client_work, model_aggregator, server_optimizer
  )
