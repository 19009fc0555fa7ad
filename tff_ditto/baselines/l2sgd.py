"""L2SGD (Hanzely and Richtarik 2020), the Ditto paper's mean-regularized MTL baseline.

As the Ditto reference code (`trainers_MTL/l2sgd.py`;
reference_implementations.md A.2): only the local models are trained. Each
sampled client k runs `local_steps` steps

    v_k <- v_k - lr * (grad F_k(v_k; b) + lambda * (v_k - w_t)),

keeps v_k (client state, a versioned file as Ditto's), and sends v_k - w_t
(TFF sign: w_t - v_k). The server applies

    w_{t+1} = w_t + mean_k (v_k - w_t) * clients_per_round / N,

i.e. the unweighted mean with server learning rate `server_lr *
clients_per_round / N`. Evaluation is on the local models v_k (clients never
sampled keep the initial model, as in the reference).

No global model is trained on the clients, so the round's
`global_train_loss` metric is NaN; `personal_train_loss` is the local models'
loss.

Deviations: none in the update. The reference's `comm_freq` is unused there
too. Non-trainable variables of a model (none in this project's models) are
kept in v_k but not sent.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import optimization
from tff_ditto import process_templates
from tff_ditto import sampling
from tff_ditto.baselines import common


def server_learning_rate(
    server_lr: float, clients_per_round: int, num_clients: int
) -> float:
  """The reference's w += mean(delta) * clients_per_round / N, times server_lr."""
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}.')
  return (
      server_lr
      * sampling.clients_in_round(clients_per_round, num_clients)
      / num_clients
  )


def build_l2sgd_process(
    model_fn: client_data_schema.ModelFn,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    mean_regularization: float,
    local_steps: int,
    model_aggregator=None,
    server_optimizer=None,
    simulate_attacks: bool = False,
) -> tff.learning.templates.LearningProcess:
  """Builds L2SGD as a `LearningProcess` with file-backed local models.

  Client data: `OrderedDict(batches, personal_state, [attack])`; each client
  reads v_k from `read_path` and writes the new v_k to `write_path`.

  Args:
    model_fn: No-arg `tff.learning.models.VariableModel` builder.
    client_optimizer: Optimizer of the local steps (reference: SGD at lr).
    mean_regularization: lambda >= 0 of lambda/2 ||v_k - w||^2.
    local_steps: Steps per client per round.
    model_aggregator: `tff.aggregators` factory (default mean).
    server_optimizer: Pass SGD at `server_learning_rate(...)` for the
      reference's N-scaled step; default SGD at learning rate 1.
    simulate_attacks: Add the malicious-client instruction to the data.

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    ValueError: On a negative lambda or non-positive local_steps.
  """
  common.check_local_steps(local_steps)
  if mean_regularization < 0:
    raise ValueError(
        f'mean_regularization must be >= 0, got {mean_regularization}.'
    )
  data_type = client_data_schema.client_data_struct_type(
      model_fn, personal_state=True, attack=simulate_attacks
  )

  def make_client_update():
    local_model = model_fn()
    local_weights = tff.learning.models.ModelWeights.from_model(local_model)

    @tf.function
    def client_update(initial_weights, client_data):
      handle = client_data_schema.state_handle(client_data)
      with tf.control_dependencies(
          client_states.read_personal_weights(
              handle['read_path'], [local_weights]
          )
      ):
        optimizer_state = optimization.initialize_optimizer(
            client_optimizer, local_weights
        )
      center = tuple(tf.nest.flatten(initial_weights.trainable))

      loss_sum, num_batches, num_examples = common.proximal_sgd(
          local_model,
          local_weights,
          client_optimizer,
          optimizer_state,
          client_data[client_data_schema.BATCHES_KEY].take(local_steps),
          center,
          float(mean_regularization),
      )
      written = client_states.write_state(
          handle['write_path'], client_states.state_variables([local_weights])
      )
      update = process_templates.model_delta(
          initial_weights, local_weights.trainable, after=[written]
      )
      statistics = process_templates.loss_statistics(
          global_loss_sum=tf.constant(float('nan')),
          personal_loss_sum=loss_sum,
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
