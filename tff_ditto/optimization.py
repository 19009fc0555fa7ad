"""The proximal SGD step shared by Ditto, FedProx and fine-tuning.

One function, `proximal_step`, takes a step of a `tff.learning.optimizers`
optimizer on F(x; batch) + strength/2 * ||x - center||^2 for the trainable
weights x of a `tff.learning.models.VariableModel`. Ditto's personal step is
`strength = lambda`, `center = w_t`; FedProx's local step is `strength = mu`;
plain SGD is `strength = 0`; prox fine-tuning centers on the final global model.
Its two halves, `gradient` and `proximal_update`, serve steps that share one
gradient between several proximal strengths (Ditto's per-step lambda
selection); `mean_loss` is the validation loss those steps are chosen by.
"""

from __future__ import annotations

from typing import Union

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
      tf.TensorSpec(v.shape, v.dtype) for v in tf.nest.flatten(weights.trainable)
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
