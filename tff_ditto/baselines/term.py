"""TERM (tilted empirical risk, Li et al. 2021) as the Ditto paper's fair baseline.

The Ditto reference code's FedAvg with `--q > 0` (litian96/ditto
`trainers_global/fedavg.py`; reference_implementations.md A.2): every sampled
client k computes its training loss F_k(w_t) on its full local training set at
the start of the round, runs `local_steps` plain SGD steps from w_t, and the
server averages the updates with weights exp(t * F_k(w_t)):

    w_{t+1} = w_t + sum_k exp(t L_k) (w_k - w_t) / sum_k exp(t L_k).

t = 0 gives weights 1, i.e. FedAvg bit for bit (same code path as `global`).

Deviations from the reference:
* The round-start loss is computed in inference mode (`training=False`: no
  dropout); the reference's FEMNIST graph drops units in every forward pass.
* The exponent t * L_k is capped at 80 so that the float32 weight stays finite
  (exp(88) overflows); the reference computes it in float64 without a cap.
* The reference ignores its robust-aggregation options when q != 0; here TERM
  needs a weighted aggregator (the registry uses `tff.aggregators.MeanFactory`)
  and refuses robust rules (see `tff_ditto.baselines.registry`).
"""

from __future__ import annotations


import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import client_data_schema
from tff_ditto import optimization
from tff_ditto import process_templates
from tff_ditto.baselines import common

MAX_EXPONENT = 80.0


def build_term_process(
    model_fn: client_data_schema.ModelFn,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    tilt: float,
    local_steps: int,
    model_aggregator=None,
    server_optimizer=None,
    simulate_attacks: bool = False,
) -> tff.learning.templates.LearningProcess:
  """Builds TERM-weighted FedAvg as a `LearningProcess`.

  Client data per round: `OrderedDict(batches=training stream,
  [attack=...], full_train=whole training set)`
  (`client_data_schema.client_data_struct_type(..., full_train=True)`).

  Args:
    model_fn: No-arg `tff.learning.models.VariableModel` builder.
    client_optimizer: Local optimizer (reference: SGD at the client lr).
    tilt: t of the exp(t * loss) weights (the paper uses 1, 2, 5; 0 = FedAvg).
    local_steps: Mini-batch steps per client per round.
    model_aggregator: A WEIGHTED `tff.aggregators` factory (default
      `tff.aggregators.MeanFactory()`).
    server_optimizer: Default SGD at learning rate 1.
    simulate_attacks: Add the malicious-client instruction to the data.

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    ValueError: On non-positive local_steps or an unweighted aggregator.
  """
  common.check_local_steps(local_steps)
  if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
    raise ValueError(
        'TERM weights client updates by exp(t * loss); it needs a weighted '
        f'aggregator, got {type(model_aggregator).__name__}.'
    )
  data_type = client_data_schema.client_data_struct_type(
      model_fn, attack=simulate_attacks, full_train=True
  )

  def make_client_update():
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)

    @tf.function
    def client_update(initial_weights, client_data):
      common.assign_all(
          common.all_variables(weights), common.all_variables(initial_weights)
      )
      round_start_loss = optimization.mean_loss(
          model, client_data[client_data_schema.FULL_TRAIN_KEY]
      )
      center = tuple(tf.nest.flatten(initial_weights.trainable))
      optimizer_state = optimization.initialize_optimizer(
          client_optimizer, weights
      )

      loss_sum, num_batches, num_examples = common.proximal_sgd(
          model,
          weights,
          client_optimizer,
          optimizer_state,
          client_data[client_data_schema.BATCHES_KEY].take(local_steps),
          center,
          0.0,
      )
      update = process_templates.model_delta(initial_weights, weights.trainable)
      weight = tf.exp(
          tf.minimum(
              tf.constant(tilt, tf.float32) * round_start_loss, MAX_EXPONENT
          )
      )
      statistics = process_templates.loss_statistics(
          global_loss_sum=loss_sum,
          num_batches=num_batches,
          num_examples=num_examples,
      )
      # Reported as the "personal" loss: the round-start loss that tilts.
      statistics['personal_loss_sum'] = round_start_loss * num_batches
      return update, weight, statistics

    return client_update

  client_work = process_templates.build_client_work(
      model_fn, data_type, make_client_update, simulate_attacks
  )
  return process_templates.compose_process(
      model_fn, client_work, model_aggregator, server_optimizer
  )
