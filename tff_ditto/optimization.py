"""The proximal SGD step shared by Ditto, FedProx and fine-tuning.

One function, `proximal_step`, takes a step of a `tff.learning.optimizers`
optimizer on F(x; batch) + strength/2 * ||x - center||^2 for the trainable
weights x of a `tff.learning.models.VariableModel`. Ditto's personal step is
`strength = lambda`, `center = w_t`; FedProx's local step is `strength = mu`;
plain SGD is `strength = 0`; prox fine-tuning centers on the final global model.
Its two halves, `gradient` and `proximal_update`, serve steps that share one
gradient between several proximal strengths: `lambda_selecting_step`, Ditto's
per-step lambda selection; `mean_loss` is the validation loss those steps are
chosen by.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops


def build_server_optimizer(
    kind: str, learning_rate: float
) -> tff.learning.optimizers.Optimizer:
  """The server optimizer named by `ExperimentConfig.server_optimizer`.

  Args:
    kind: 'adam', or anything else for SGD (lr 1.0 = the reference FedAvg).
    learning_rate: Its learning rate.

  Returns:
    A `tff.learning.optimizers.Optimizer`.
  """
  if kind == 'adam':
    return tff.learning.optimizers.build_adam(learning_rate=learning_rate)
  return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate)


def initialize_optimizer(
    optimizer: tff.learning.optimizers.Optimizer,
    weights: tff.learning.models.ModelWeights,
):
  specs = tuple(
      tf.TensorSpec(v.shape, v.dtype)
      for v in tf.nest.flatten(weights.trainable)
  )
  return optimizer.initialize(specs)


def gradient(model, trainable, batch, training: bool = True):
  """(gradient of the batch loss w.r.t. `trainable`, loss, examples)."""
  with tf.GradientTape() as tape:
    output = model.forward_pass(batch, training=training)
  gradients = tape.gradient(output.loss, trainable)
  num_examples = output.num_examples
  if num_examples is None:
    num_examples = tf.shape(output.predictions)[0]
  return tuple(gradients), output.loss, num_examples


def mean_loss(
    model, batches: Union[tf.data.Dataset, batch_loops.StackedBatches]
) -> tf.Tensor:
  """Example-weighted mean loss of the model over `batches` (inference)."""

  def accumulate(totals, batch):
    output = model.forward_pass(batch, training=False)
    count = tf.cast(tf.shape(output.predictions)[0], tf.float32)
    return totals + tf.stack([output.loss * count, count])

  totals = batch_loops.reduce_batches(
      batches, tf.zeros([2], tf.float32), accumulate
  )
  return totals[0] / tf.maximum(totals[1], 1.0)


def proximal_update(
    optimizer: tff.learning.optimizers.Optimizer,
    optimizer_state,
    trainable,
    gradients,
    center,
    strength: float,
):
  """The optimizer's step on grad F + strength (x - center), not assigned.

  Args:
    optimizer: A `tff.learning.optimizers.Optimizer`.
    optimizer_state: Its state for `trainable`.
    trainable: Flat tuple of the current values x (variables or tensors).
    gradients: Flat tuple of grad F at x.
    center: Flat tuple of tensors, same structure as `trainable`.
    strength: Proximal coefficient (Python float; 0 skips the term).

  Returns:
    (new optimizer state, flat tuple of the stepped values).
  """
  if strength:
    gradients = tuple(
        g + strength * (x - c) for g, x, c in zip(gradients, trainable, center)
    )
  return optimizer.next(optimizer_state, trainable, gradients)


def proximal_step(
    model: tff.learning.models.VariableModel,
    weights: tff.learning.models.ModelWeights,
    optimizer: tff.learning.optimizers.Optimizer,
    optimizer_state,
    batch,
    center,
    strength: float,
):
  """One optimizer step on F(x; batch) + strength/2 ||x - center||^2.

  Args:
    model: The model whose `forward_pass(batch, training=True).loss` is F.
    weights: `ModelWeights.from_model(model)` (variables, updated in place).
    optimizer: A `tff.learning.optimizers.Optimizer`.
    optimizer_state: Its state for `weights.trainable`.
    batch: One batch of the model's input spec.
    center: Flat tuple of tensors, same structure as the flat trainables.
    strength: Proximal coefficient (Python float; 0 skips the term).

  Returns:
    (new optimizer state, batch loss F before the step, examples in batch).
  """
  trainable = tuple(tf.nest.flatten(weights.trainable))
  gradients, loss, num_examples = gradient(model, trainable, batch)
  optimizer_state, updated = proximal_update(
      optimizer, optimizer_state, trainable, gradients, center, strength
  )
  for variable, value in zip(trainable, updated):
    variable.assign(value)
  return optimizer_state, loss, num_examples


def _first_argmin(values: Sequence[tf.Tensor]) -> tf.Tensor:
  """Index of the smallest scalar: the first on ties, never a NaN or Inf."""
  finite = [
      tf.where(tf.math.is_finite(v), v, tf.constant(np.inf, v.dtype))
      for v in values
  ]
  best_index, best_value = tf.constant(0, tf.int32), finite[0]
  for index, value in enumerate(finite[1:], start=1):
    better = value < best_value
    best_index = tf.where(better, index, best_index)
    best_value = tf.where(better, value, best_value)
  return best_index


def _take(structures: Sequence, index: tf.Tensor):
  """`structures[index]` for a list of equal structures and a tensor index."""
  return tf.nest.map_structure(
      lambda *values: tf.gather(tf.stack(values), index), *structures
  )


def lambda_selecting_step(
    model: tff.learning.models.VariableModel,
    weights: tff.learning.models.ModelWeights,
    optimizer: tff.learning.optimizers.Optimizer,
    optimizer_state,
    batch,
    center,
    lambdas: Sequence[float],
    validation: batch_loops.StackedBatches,
    use_validation: tf.Tensor,
    fallback_index: int,
):
  """One personal step with lambda chosen among candidates by validation loss.

  The reference code's `--dynamic_lam=1`: from the current v, every candidate
  takes a tentative step on the same batch, sharing the gradient of F at v,
  v_i = v - lr (grad F(v; b) + lambda_i (v - center)) (for SGD; in general
  `proximal_update`), and the step kept is the one whose v_i has
  the lowest mean loss over `validation` (the first on ties). A client
  without enough validation data (`use_validation` false) keeps the step of
  `lambdas[fallback_index]`.

  Args:
    model: The personal model (its `forward_pass` loss is F).
    weights: `ModelWeights.from_model(model)` (variables, updated in place).
    optimizer: The personal optimizer.
    optimizer_state: Its state for `weights.trainable`.
    batch: One training batch.
    center: Flat tuple of tensors, w_t.
    lambdas: The candidate lambdas (Python floats).
    validation: The client's whole validation split, batched and stacked
      (`batch_loops.stack_batches`).
    use_validation: Scalar bool tensor: choose by validation loss.
    fallback_index: Index into `lambdas` of the step taken otherwise.

  Returns:
    (new optimizer state, batch loss F(v; b) before the step, examples in
    the batch, int32 choice: the index of the kept candidate, or
    `len(lambdas)` for a fallback step).
  """
  trainable = tuple(tf.nest.flatten(weights.trainable))
  gradients, loss, num_examples = gradient(model, trainable, batch)
  start = tuple(tf.identity(v) for v in trainable)
  tentative = [
      proximal_update(
          optimizer, optimizer_state, start, gradients, center, strength
      )
      for strength in lambdas
  ]
  validation_losses = []
  for _, values in tentative:
    with tf.control_dependencies(validation_losses[-1:]):
      assigned = [v.assign(t) for v, t in zip(trainable, values)]
    with tf.control_dependencies(assigned):
      validation_losses.append(mean_loss(model, validation))
  best = _first_argmin(validation_losses)
  kept = tf.where(use_validation, best, fallback_index)
  with tf.control_dependencies(validation_losses):
    for variable, candidates in zip(
        trainable, zip(*[values for _, values in tentative])
    ):
      variable.assign(_take(candidates, kept))
  optimizer_state = _take([state for state, _ in tentative], kept)
  choice = tf.where(use_validation, best, len(lambdas))
  return optimizer_state, loss, num_examples, choice
