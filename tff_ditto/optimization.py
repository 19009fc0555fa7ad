"""The proximal SGD step shared by Ditto, FedProx and fine-tuning.

One function, `proximal_step`, takes a step of a `tff.learning.optimizers`
optimizer on F(x; batch) + strength/2 * ||x - center||^2 for the trainable
weights x of a `tff.learning.models.VariableModel`. Ditto's personal step is
`strength = lambda`, `center = w_t`; FedProx's local step is `strength = mu`;
plain SGD is `strength = 0`; prox fine-tuning centers on the final global model.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff


def initialize_optimizer(
    optimizer: tff.learning.optimizers.Optimizer,
    weights: tff.learning.models.ModelWeights,
):
  specs = tuple(
      tf.TensorSpec(v.shape, v.dtype) for v in tf.nest.flatten(weights.trainable)
  )
  return optimizer.initialize(specs)


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
  with tf.GradientTape() as tape:
    output = model.forward_pass(batch, training=True)
  gradients = tape.gradient(output.loss, trainable)
  if strength:
    gradients = tuple(
        g + strength * (x - c) for g, x, c in zip(gradients, trainable, center)
    )
  optimizer_state, updated = optimizer.next(
      optimizer_state, trainable, gradients
  )
  for variable, value in zip(trainable, updated):
    variable.assign(value)
  num_examples = output.num_examples
  if num_examples is None:
    num_examples = tf.shape(output.predictions)[0]
  return optimizer_state, output.loss, num_examples
