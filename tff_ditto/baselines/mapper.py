"""MAPPER (Mansour et al. 2020, model interpolation) as the Ditto reference's `mapper`.

Per sampled client k (reference_implementations.md A.2,
`trainers_MTL/mapper.py`), starting from its kept local model v_k:

1. For each candidate lambda in (0.25, 0.5, 0.75), in that order: u <- v_k;
   `local_steps + 1` times, on the next batch b of the stream,
   m <- lambda u + (1 - lambda) w_t, u <- u - lr * lambda * grad F_k(m; b).
   The candidate's score is the full training loss F_k(m) at the last m (the
   interpolation before the last step, as the reference evaluates it).
2. Keep the candidate with the lowest score (ties: the earlier one):
   v_k <- its u, lambda_k <- its lambda.
3. One global step on the last batch b drawn (that of the 0.75 candidate):
   w_k = w_t - lr * (1 - lambda_k) * grad F_k(lambda_k v_k + (1 - lambda_k)
   w_t; b); the client sends w_t - w_k.

The server averages EVERY sampled client's update (unweighted, learning rate
1). The reference appends `diff` after its client loop, so only the LAST
sampled client's update reaches its average; that is a bug and not reproduced.

Client state (versioned files): v_k followed by lambda_k (0 before the client
is first sampled, so its interpolation is the global model, as the
reference's `lambdas = zeros`). Evaluation fine-tunes from the interpolation
lambda_k v_k + (1 - lambda_k) w with plain SGD (`finetune_steps` steps), the
reference's final fine-tuning
(`tff_ditto.baselines.finetuning.build_finetune_family_evaluation`).

Deviations: the candidate score is computed in inference mode (no dropout);
the reference fine-tunes max(finetune_iters * n_k / B, finetune_iters) steps
once after training, here `finetune_steps` at every evaluation.
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

CANDIDATE_LAMBDAS = (0.25, 0.5, 0.75)
INITIAL_BEST_LOSS = 10000.0  # The reference's starting `tmp_loss`.


def batches_per_round(
    local_steps: int, candidate_lambdas: tuple[float, ...] = CANDIDATE_LAMBDAS
) -> int:
  """Batches a client takes per round: `local_steps + 1` per candidate."""
  return (local_steps + 1) * len(candidate_lambdas)


def build_mapper_process(
    model_fn: client_data_schema.ModelFn,
    *,
    learning_rate: float,
    local_steps: int,
    candidate_lambdas: tuple[float, ...] = CANDIDATE_LAMBDAS,
    model_aggregator=None,
    server_optimizer=None,
    simulate_attacks: bool = False,
) -> tff.learning.templates.LearningProcess:
  """Builds MAPPER training as a `LearningProcess` with file-backed (v_k, lambda_k).

  Client data: `OrderedDict(batches, personal_state, [attack], full_train)`.
  The stream must have equally sized batches (the runner's endless streams
  do): each candidate takes a block of `local_steps + 1` batches.

  Args:
    model_fn: No-arg `tff.learning.models.VariableModel` builder.
    learning_rate: The client SGD learning rate.
    local_steps: The reference's `local_iters` (each candidate runs one more).
    candidate_lambdas: Mixing weights tried, in order.
    model_aggregator: `tff.aggregators` factory (default mean).
    server_optimizer: Default SGD at learning rate 1.
    simulate_attacks: Add the malicious-client instruction to the data.

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    ValueError: On non-positive local_steps or learning_rate, or no
      candidates.
  """
  common.check_local_steps(local_steps)
  if learning_rate <= 0:
    raise ValueError(f'learning_rate must be > 0, got {learning_rate}.')
  if not candidate_lambdas:
    raise ValueError('candidate_lambdas is empty.')
  data_type = client_data_schema.client_data_struct_type(
      model_fn, personal_state=True, attack=simulate_attacks, full_train=True
  )
  block = local_steps + 1

  def make_client_update():
    # `candidate`: u; `mixed`: the interpolation m; `best`: the kept u.
    candidate_model = model_fn()
    candidate_weights = tff.learning.models.ModelWeights.from_model(
        candidate_model
    )
    mixed_model = model_fn()
    mixed_weights = tff.learning.models.ModelWeights.from_model(mixed_model)
    best_model = model_fn()
    best_weights = tff.learning.models.ModelWeights.from_model(best_model)
    model_size = client_states.num_entries(
        common.all_variables(candidate_weights)
    )

    @tf.function
    def client_update(initial_weights, client_data):
      handle = client_data_schema.state_handle(client_data)
      state = client_states.read_state(
          handle['read_path'], model_size, initial_extra=tf.zeros([1])
      )
      local_values = client_states.unflatten_tensors(
          state.model, common.all_variables(candidate_weights)
      )
      global_values = common.all_variables(initial_weights)
      # Before any candidate: best = v_k (kept if no score beats the start).
      with tf.control_dependencies(
          common.assign_all(common.all_variables(best_weights), local_values)
          + common.assign_all(
              common.all_variables(mixed_weights), global_values
          )
      ):
        lambdas = tf.constant(candidate_lambdas, tf.float32)
      candidate_trainable = tuple(tf.nest.flatten(candidate_weights.trainable))
      mixed_trainable = tuple(tf.nest.flatten(mixed_weights.trainable))
      best_trainable = tuple(tf.nest.flatten(best_weights.trainable))
      global_trainable = tuple(tf.nest.flatten(initial_weights.trainable))
      # Read once; every block scores its candidate on it.
      full_train = batch_loops.stack_batches(
          client_data[client_data_schema.FULL_TRAIN_KEY]
      )

      def candidate_block(loop_state, batches_of_block):
        (
            index,
            best_loss,
            best_lambda,
            new_global,
            loss_sum,
            num_batches,
            num_examples,
        ) = loop_state
        lam = tf.gather(lambdas, index)
        for variable, value in zip(
            common.all_variables(candidate_weights), local_values
        ):
          variable.assign(value)

        def local_step(inner_state, step):
          loss_sum, num_examples = inner_state
          batch = tf.nest.map_structure(lambda t: t[step], batches_of_block)
          for mixed, candidate, glob in zip(
              mixed_trainable, candidate_trainable, global_trainable
          ):
            mixed.assign(lam * candidate + (1.0 - lam) * glob)
          gradients, loss, examples = optimization.gradient(
              mixed_model, mixed_trainable, batch
          )
          for candidate, g in zip(candidate_trainable, gradients):
            candidate.assign(candidate - learning_rate * (lam * g))
          return loss_sum + loss, num_examples + tf.cast(examples, tf.float32)

        _, block_loss_sum, block_examples = tf.while_loop(
            lambda step, *_: step < block,
            lambda step, *sums: (step + 1, *local_step(sums, step)),
            (tf.constant(0, tf.int64), tf.constant(0.0), tf.constant(0.0)),
            parallel_iterations=1,
        )
        score = optimization.mean_loss(mixed_model, full_train)
        better = score < best_loss
        for best, candidate in zip(best_trainable, candidate_trainable):
          best.assign(tf.where(better, candidate, best))
        best_lambda = tf.where(better, lam, best_lambda)
        # The global step with the best so far, on this block's last batch;
        # only the last block's result is kept (the reference's last batch).
        last_batch = tf.nest.map_structure(
            lambda t: t[block - 1], batches_of_block
        )
        for mixed, best, glob in zip(
            mixed_trainable, best_trainable, global_trainable
        ):
          mixed.assign(best_lambda * best + (1.0 - best_lambda) * glob)
        gradients, _, _ = optimization.gradient(
            mixed_model, mixed_trainable, last_batch
        )
        new_global = tuple(
            glob - learning_rate * ((1.0 - best_lambda) * g)
            for glob, g in zip(global_trainable, gradients)
        )
        return (
            index + 1,
            tf.where(better, score, best_loss),
            best_lambda,
            new_global,
            loss_sum + block_loss_sum,
            num_batches + float(block),
            num_examples + block_examples,
        )

      zero = tf.constant(0.0)
      blocks = (
          client_data[client_data_schema.BATCHES_KEY]
          .take(batches_per_round(local_steps, candidate_lambdas))
          .batch(block, drop_remainder=True)
      )
      _, _, best_lambda, new_global, loss_sum, num_batches, num_examples = (
          batch_loops.reduce_batches(
              blocks,
              (
                  tf.constant(0),
                  tf.constant(INITIAL_BEST_LOSS),
                  tf.constant(0.0),
                  global_trainable,
                  zero,
                  zero,
                  zero,
              ),
              candidate_block,
          )
      )
      # v_k <- the kept candidate, then lambda_k.
      written = client_states.write_state(
          handle['write_path'],
          list(best_trainable)
          + list(best_weights.non_trainable)
          + [tf.reshape(best_lambda, [1])],
      )
      update = process_templates.model_delta(
          initial_weights, list(new_global), after=[written]
      )
      statistics = process_templates.loss_statistics(
          global_loss_sum=loss_sum,
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
