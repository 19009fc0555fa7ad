"""The TFF templates every learning process of this project is composed from.

Ditto (`tff_ditto.ditto`; its client update in `tff_ditto.ditto_client`) and
each baseline (`tff_ditto.baselines`) differ only in their client update: a
`tf.function` `(initial weights w_t, client data) -> (update, weight,
statistics)` run by each sampled client, with
update = w_t - w_k (TFF's sign convention; `model_delta`), weight its
aggregation weight and statistics from `loss_statistics`. The rest is shared:

* `build_client_work`: the client update in a `ClientWorkProcess`; malicious
  clients of the simulation transform their update there
  (`tff_ditto.attacks.apply_update_attack`), and an update holding a NaN or
  Inf is zeroed and does not count (`zero_if_non_finite`);
* `client_work_from_computation`: its summed statistics (and the largest
  update norm) finalized as the train metrics
  `tff_ditto.training.ExperimentRunner` reads;
* `compose_process`: TFF's broadcast of w, the client work, any
  `tff.aggregators` factory and an apply-optimizer finalizer, composed into a
  `tff.learning.templates.LearningProcess`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import attacks
from tff_ditto import client_data_schema

AggregationFactory = Union[
    tff.aggregators.WeightedAggregationFactory,
    tff.aggregators.UnweightedAggregationFactory,
]
# `fn(initial_weights, client_data) -> (update, weight, statistics)`.
ClientUpdate = Callable[..., tuple]


def zero_if_non_finite(structure: Any) -> tuple[Any, tf.Tensor]:
  """Zeroes a structure of tensors if any entry is NaN or Inf.

  Args:
    structure: A structure of float tensors (a client's update).

  Returns:
    (the structure, or zeros like it; int32 1 if it was zeroed, else 0).
  """
  flat = tf.nest.flatten(structure)
  is_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
  zeroed = [tf.where(is_finite, t, tf.zeros_like(t)) for t in flat]
  return (
      tf.nest.pack_sequence_as(structure, zeroed),
      tf.cast(tf.logical_not(is_finite), tf.int32),
  )


def model_delta(
    initial_weights: tff.learning.models.ModelWeights,
    new_trainable: Sequence[tf.Tensor],
    after: Sequence[tf.Operation] = (),
) -> list[tf.Tensor]:
  """The update a client sends, w_t - w_k (TFF's sign convention).

  Args:
    initial_weights: The broadcast model w_t.
    new_trainable: The client's new trainable weights w_k (variables or
      tensors), in the order of `initial_weights.trainable`.
    after: Operations to run before w_k is read (e.g. the state file's
      write).

  Returns:
    The delta, one tensor per trainable weight.
  """
  with tf.control_dependencies(after):
    return tf.nest.map_structure(
        tf.subtract,
        initial_weights.trainable,
        [tf.identity(v) for v in new_trainable],
    )


def loss_statistics(**values: tf.Tensor) -> collections.OrderedDict:
  """The per-client statistics a client update returns.

  Args:
    **values: Any of global_loss_sum, personal_loss_sum, num_batches,
      personal_batches (the batches of personal steps; default num_batches)
      and num_examples (the others are 0), and further summed float32
      counts.

  Returns:
    The statistics, float32 scalars (or vectors) keyed in this order.
  """
  zero = tf.constant(0.0, tf.float32)
  statistics = collections.OrderedDict(
      global_loss_sum=zero,
      personal_loss_sum=zero,
      num_batches=zero,
      personal_batches=None,
      num_examples=zero,
  )
  for key, value in values.items():
    statistics[key] = tf.cast(value, tf.float32)
  if statistics['personal_batches'] is None:
    statistics['personal_batches'] = statistics['num_batches']
  return statistics


def build_client_work(
    model_fn: client_data_schema.ModelFn,
    data_type: tff.Type,
    make_client_update: Callable[[], ClientUpdate],
    simulate_attacks: bool,
    rejected_weight: float = 0.0,
    shares_of_batches: Optional[Mapping[str, str]] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """Wraps a client update in a `ClientWorkProcess`.

  Args:
    model_fn: The model builder.
    data_type: The per-client data type (`tff_ditto.client_data_schema`): a
      sequence of batches, which the client update receives as
      `{client_data_schema.BATCHES_KEY: batches}`, or a struct of fields.
    make_client_update: Called inside the client
      `tff.tensorflow.computation` (it builds the models there); returns
      `fn(initial_weights, client_data) -> (update, weight, statistics)`
      where update = w_t - (the client's new w), TFF's sign, weight the
      aggregation weight and statistics from `loss_statistics`.
    simulate_attacks: Malicious clients transform their update
      (`tff_ditto.attacks.apply_update_attack`, the data's `attack` field).
    rejected_weight: The weight of an update zeroed for a NaN or Inf: 0 for
      averaging rules; NaN for loss-based rules, which drop it (a loss of 0
      would rank first).
    shares_of_batches: See `client_work_from_computation`.

  Returns:
    The client work (`client_work_from_computation`).
  """

  @tff.tensorflow.computation(
      client_data_schema.model_weights_type(model_fn), data_type
  )
  def client_computation(initial_weights, client_data):
    client_update = make_client_update()
    if isinstance(data_type, tff.SequenceType):
      client_data = collections.OrderedDict(
          [(client_data_schema.BATCHES_KEY, client_data)]
      )
    update, weight, statistics = client_update(initial_weights, client_data)
    transforms_update = tf.constant(False)
    if simulate_attacks:
      attack = client_data_schema.attack_instruction(client_data)
      update, weight = attacks.apply_update_attack(update, weight, attack)
      transforms_update = tf.not_equal(
          attack['code'], attacks.UPDATE_ATTACK_CODES['none']
      )
    update, has_non_finite = zero_if_non_finite(update)
    weight = tf.where(has_non_finite > 0, rejected_weight, weight)
    summed = collections.OrderedDict(statistics)
    summed['non_finite_updates'] = tf.cast(has_non_finite, tf.float32)
    summed['clients'] = tf.constant(1.0, tf.float32)
    # The L2 norm of the update sent to the aggregator (0 when zeroed; Inf
    # when its square overflows float32), and the same norm counted only for
    # a client whose update an attack transforms (0 for every other).
    update_norm = tf.linalg.global_norm(tf.nest.flatten(update))
    largest = collections.OrderedDict(
        max_update_norm=update_norm,
        max_attacker_update_norm=tf.where(
            transforms_update, update_norm, tf.zeros_like(update_norm)
        ),
    )
    return (
        tff.learning.templates.ClientResult(
            update=update, update_weight=weight
        ),
        (summed, largest),
    )

  return client_work_from_computation(client_computation, shares_of_batches)


def client_work_from_computation(
    client_computation: tff.Computation,
    shares_of_batches: Optional[Mapping[str, str]] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """A stateless `ClientWorkProcess` around one client's computation.

  Args:
    client_computation: `(model weights, client data) -> (ClientResult,
      (summed, largest))`, where `summed` holds `global_loss_sum`,
      `personal_loss_sum`, `num_batches`, `personal_batches`, `num_examples`,
      `non_finite_updates` and `clients` (float32), summed over clients, and
      optionally counts of the keys of `shares_of_batches`; `largest` holds
      `max_update_norm` and `max_attacker_update_norm` (float32), their
      maxima over clients.
    shares_of_batches: {statistic: train metric}: counts over the round's
      personal steps (e.g. Ditto's lambda choices) reported as shares of the
      round's personal batches under the metric's name.

  Returns:
    The client work; its `train` measurements are the mean train losses per
    batch, the summed counts and the largest update norm (the keys
    `ExperimentRunner` reads), then the shares of `shares_of_batches`.
  """
  shares_of_batches = dict(shares_of_batches or {})
  weights_type, data_type = client_computation.type_signature.parameter
  metrics_type = client_computation.type_signature.result[1]

  @tff.tensorflow.computation(metrics_type)
  def finalize_metrics(summed, largest):
    num_batches = tf.maximum(summed['num_batches'], 1.0)
    # A client that trains no personal model this round (a frozen malicious
    # one, `ditto_client.trains_personal_models`) adds no personal batch.
    personal_batches = tf.maximum(summed['personal_batches'], 1.0)
    finalized = collections.OrderedDict(
        global_train_loss=summed['global_loss_sum'] / num_batches,
        personal_train_loss=summed['personal_loss_sum'] / personal_batches,
        num_examples=summed['num_examples'],
        num_batches=summed['num_batches'],
        num_clients=summed['clients'],
        non_finite_updates=summed['non_finite_updates'],
        max_update_norm=largest['max_update_norm'],
        max_attacker_update_norm=largest['max_attacker_update_norm'],
    )
    for count_key, share_key in shares_of_batches.items():
      finalized[share_key] = summed[count_key] / personal_batches
    return finalized

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS),
  )
  def next_fn(state, weights, client_data):
    client_result, client_metrics = tff.federated_map(
        client_computation, (weights, client_data)
    )
    train_metrics = tff.federated_map(
        finalize_metrics,
        tff.federated_zip((
            tff.federated_sum(client_metrics[0]),
            tff.federated_max(client_metrics[1]),
        )),
    )
    measurements = tff.federated_zip(
        collections.OrderedDict(train=train_metrics)
    )
    return tff.templates.MeasuredProcessOutput(
        state, client_result, measurements
    )

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


def compose_process(
    model_fn: client_data_schema.ModelFn,
    client_work: tff.learning.templates.ClientWorkProcess,
    model_aggregator: Optional[AggregationFactory] = None,
    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
) -> tff.learning.templates.LearningProcess:
  """Broadcast of w + `client_work` + aggregator + optimizer finalizer.

  Args:
    model_fn: The model builder.
    client_work: A `ClientWorkProcess` sending model deltas (TFF's sign).
    model_aggregator: A `tff.aggregators` factory (default
      `tff.aggregators.MeanFactory()`); unweighted ones ignore the weights
      (`tff.aggregators.as_weighted_aggregator`), weighted ones (such as
      `tff_ditto.aggregators.ExampleWeightedFactory`) are used as they are.
    server_optimizer: Default SGD at learning rate 1 (w <- w + mean delta).

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  if model_aggregator is None:
    model_aggregator = tff.aggregators.MeanFactory()
  if server_optimizer is None:
    server_optimizer = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  weights_type = client_data_schema.model_weights_type(model_fn)

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
    model_aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator)
  aggregator = model_aggregator.create(
      weights_type.trainable, tff.TensorType(np.float32)
  )
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn,
      tff.learning.templates.build_broadcast_process(weights_type),
      client_work,
      aggregator,
      tff.learning.templates.build_apply_optimizer_finalizer(
          server_optimizer, weights_type
      ),
  )
