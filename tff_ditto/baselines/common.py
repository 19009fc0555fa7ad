"""Pieces shared by the baseline learning processes of `tff_ditto.baselines`.

Every baseline is a `tff.learning.templates.LearningProcess` composed like
Ditto's (`tff_ditto.ditto.build_ditto_process`): TFF's broadcast of the global
model `w`, a `ClientWorkProcess` whose client computation is a
`tff.tensorflow.computation`, any weighted `tff.aggregators` factory, and TFF's
apply-optimizer finalizer. Per-client state (APFL's and L2SGD's local models,
MAPPER's local model and mixing weight) lives in the same versioned files as
Ditto's `v_k` (`tff_ditto.client_states.FileClientStateStore`): the client
computation reads the version it wrote last and writes a new one, and only
paths cross TFF.

A state file holds the flat float32 concatenation of a model's variables
(trainable, then non-trainable), optionally followed by method-specific extra
entries (APFL: a second model, MAPPER: the mixing weight). The store's shared
initial file holds the model only; `read_state` pads missing extras with their
initial values, so every method starts from the store's initial model.

The client data of a round is an `OrderedDict` with `batches` (the client's
training stream), and where the method needs them `personal_state` (dataset of
one `(read_path, write_path)` handle), `attack` (the malicious-client
instruction, as in Ditto) and `full_train` (the client's whole training set,
unshuffled, for round-start losses and SKL's teacher).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import ditto
from tff_ditto import optimization

BATCHES_KEY = ditto.BATCHES_KEY
STATE_KEY = ditto.STATE_KEY
ATTACK_KEY = ditto.ATTACK_KEY
FULL_TRAIN_KEY = ditto.FULL_TRAIN_KEY

ModelFn = ditto.ModelFn
ClientUpdate = Callable[..., tuple]


def weights_type(model_fn: ModelFn) -> tff.StructType:
  """The TFF type of `ModelWeights` of the model."""
  return ditto.model_weights_type(model_fn)


def element_type(model_fn: ModelFn) -> tff.Type:
  """The TFF type of one batch of the model's input."""
  return ditto.batch_element_type(model_fn)


def client_data_type(
    model_fn: ModelFn,
    *,
    stateful: bool,
    simulate_attacks: bool,
    full_train: bool,
) -> tff.StructType:
  """The per-client data type of a baseline's round (see module docstring).

  Args:
    model_fn: The model builder (gives the batch type).
    stateful: Include the `personal_state` handle.
    simulate_attacks: Include the `attack` instruction.
    full_train: Include the client's whole training set.

  Returns:
    A `tff.StructType` with `batches` first, then the requested fields.
  """
  batches_type = tff.SequenceType(element_type(model_fn))
  fields = [(BATCHES_KEY, batches_type)]
  if stateful:
    fields.append((STATE_KEY, tff.SequenceType(ditto.STATE_HANDLE_TYPE)))
  if simulate_attacks:
    fields.append((ATTACK_KEY, tff.SequenceType(ditto.ATTACK_TYPE)))
  if full_train:
    fields.append((FULL_TRAIN_KEY, batches_type))
  return tff.StructType(fields)


# ------------------------------------------------------------ model weights


def all_variables(weights: tff.learning.models.ModelWeights) -> list:
  return list(weights.trainable) + list(weights.non_trainable)


def num_entries(variables: Sequence[tf.Variable]) -> int:
  return int(sum(np.prod(v.shape) for v in variables))


def flatten(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
  if not tensors:
    return tf.zeros([0], tf.float32)
  return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten(flat: tf.Tensor, like: Sequence[tf.Variable]) -> list[tf.Tensor]:
  sizes = [int(np.prod(v.shape)) for v in like]
  return [
      tf.reshape(piece, v.shape) for piece, v in zip(tf.split(flat, sizes), like)
  ]


def assign_all(variables: Sequence[tf.Variable], values) -> list:
  return [v.assign(t) for v, t in zip(variables, values)]


def read_state(
    path: tf.Tensor, model_size: int, initial_extra: Optional[tf.Tensor] = None
) -> tuple[tf.Tensor, Optional[tf.Tensor]]:
  """Reads a state file: (flat model, flat extra entries or None).

  Args:
    path: Scalar string tensor.
    model_size: Entries of the model part.
    initial_extra: Flat values of the extra part for files holding the model
      only (the store's initial file); None when the method has no extras.

  Returns:
    The model part, shape [model_size], and the extra part (or None).
  """
  flat = tf.io.parse_tensor(tf.io.read_file(path), tf.float32)
  model = tf.ensure_shape(flat[:model_size], [model_size])
  if initial_extra is None:
    return model, None
  extra_size = int(initial_extra.shape[0])
  # Files written by the method hold the extras; the initial file does not,
  # and then the padding supplies them.
  padded = tf.concat([flat, initial_extra], axis=0)
  extra = tf.ensure_shape(
      padded[model_size : model_size + extra_size], [extra_size]
  )
  return model, extra


def state_handle(client_data) -> collections.OrderedDict:
  """The `(read_path, write_path)` handle from a client's data."""
  return batch_loops.single_element(client_data[STATE_KEY])


# ----------------------------------------------------------- computations


# The loss gradient and validation loss live with the proximal step (Ditto's
# per-step lambda selection uses them too).
gradient = optimization.gradient
mean_loss = optimization.mean_loss


def proximal_sgd(
    model, weights, optimizer, optimizer_state, batches, center, strength
):
  """`optimization.proximal_step` over every batch of `batches` (in order).

  Returns:
    (loss sum, number of batches, number of examples), float32 scalars.
  """

  def train_on_batch(loop_state, batch):
    optimizer_state, loss_sum, num_batches, num_examples = loop_state
    optimizer_state, loss, examples = optimization.proximal_step(
        model, weights, optimizer, optimizer_state, batch, center, strength,
    )
    return (
        optimizer_state, loss_sum + loss, num_batches + 1.0,
        num_examples + tf.cast(examples, tf.float32),
    )

  zero = tf.constant(0.0)
  _, loss_sum, num_batches, num_examples = batch_loops.reduce_batches(
      batches, (optimizer_state, zero, zero, zero), train_on_batch
  )
  return loss_sum, num_batches, num_examples


def loss_statistics(**values) -> collections.OrderedDict:
  """The per-client statistics every baseline's client update returns."""
  zero = tf.constant(0.0, tf.float32)
  statistics = collections.OrderedDict(
      global_loss_sum=zero,
      personal_loss_sum=zero,
      num_batches=zero,
      num_examples=zero,
  )
  for key, value in values.items():
    statistics[key] = tf.cast(value, tf.float32)
  return statistics


def build_client_work(
    model_fn: ModelFn,
    data_type: tff.StructType,
    make_client_update: Callable[[], ClientUpdate],
    simulate_attacks: bool,
) -> tff.learning.templates.ClientWorkProcess:
  """Wraps a baseline's client update in a `ClientWorkProcess`.

  Args:
    model_fn: The model builder.
    data_type: From `client_data_type`.
    make_client_update: Called inside the client `tff.tensorflow.computation`;
      returns `fn(initial_weights, client_data) -> (update, weight,
      statistics)` where update = w_t - (the client's new w), TFF's sign,
      weight the aggregation weight and statistics from `loss_statistics`.
    simulate_attacks: Malicious clients transform their update as in Ditto
      (A2, A3, bit flip; see `tff_ditto.attacks`).

  Returns:
    The client work; its train metrics have Ditto's keys (global_train_loss,
    personal_train_loss, num_examples, num_batches, num_clients,
    non_finite_updates), so `ExperimentRunner` reads them unchanged.
  """
  model_weights_type = weights_type(model_fn)

  @tff.tensorflow.computation(model_weights_type, data_type)
  def client_computation(initial_weights, client_data):
    client_update = make_client_update()
    update, weight, statistics = client_update(initial_weights, client_data)
    if simulate_attacks:
      attack = batch_loops.single_element(client_data[ATTACK_KEY])
      update, weight = ditto.apply_update_attack(update, weight, attack)
    update, has_non_finite = ditto.zero_if_non_finite(update)
    weight = tf.where(has_non_finite > 0, 0.0, weight)
    client_metrics = collections.OrderedDict(statistics)
    client_metrics['non_finite_updates'] = tf.cast(has_non_finite, tf.float32)
    client_metrics['clients'] = tf.constant(1.0, tf.float32)
    return (
        tff.learning.templates.ClientResult(update=update, update_weight=weight),
        client_metrics,
    )

  return ditto.client_work_from_computation(client_computation)


# Broadcast + client work + aggregator + optimizer finalizer, shared with Ditto.
compose_process = ditto.compose_process


def check_local_steps(local_steps: int) -> None:
  if local_steps < 1:
    raise ValueError(f'local_steps must be >= 1, got {local_steps}.')
