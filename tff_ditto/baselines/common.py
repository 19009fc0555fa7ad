"""Pieces shared by the baseline learning processes of `tff_ditto.baselines`.

Every baseline is a `tff.learning.templates.LearningProcess` composed like
Ditto's (`tff_ditto.ditto.build_ditto_process`) from the templates of
`tff_ditto.process_templates`: TFF's broadcast of the global model `w`, a
client work around the method's client update, any weighted `tff.aggregators`
factory, and TFF's apply-optimizer finalizer. The client data are those of
`tff_ditto.client_data_schema` (`client_data_struct_type`). Per-client state
(APFL's and L2SGD's local models, MAPPER's local model and mixing weight)
lives in the same versioned files as Ditto's `v_k` (`tff_ditto.client_states`):
the client update reads the version it wrote last (`read_state`,
`read_personal_weights`) and writes a new one (`write_state`), and only paths
cross TFF; the store's shared initial file holds the model only, so every
method starts from it.

This module holds what the baselines' client updates share besides: the
variables of a model, proximal SGD over a client's batches and the check of
`local_steps`.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import optimization


def all_variables(weights: tff.learning.models.ModelWeights) -> list:
  """The trainable, then the non-trainable weights of a model."""
  return list(weights.trainable) + list(weights.non_trainable)


def assign_all(variables: Sequence[tf.Variable], values) -> list:
  """Assigns `values` to `variables`, pairwise; returns the assignments."""
  return [v.assign(t) for v, t in zip(variables, values)]


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
        model,
        weights,
        optimizer,
        optimizer_state,
        batch,
        center,
        strength,
    )
    return (
        optimizer_state,
        loss_sum + loss,
        num_batches + 1.0,
        num_examples + tf.cast(examples, tf.float32),
    )

  zero = tf.constant(0.0)
  _, loss_sum, num_batches, num_examples = batch_loops.reduce_batches(
      batches, (optimizer_state, zero, zero, zero), train_on_batch
  )
  return loss_sum, num_batches, num_examples


def check_local_steps(local_steps: int) -> None:
  """Raises ValueError unless local_steps >= 1."""
  if local_steps < 1:
    raise ValueError(f'local_steps must be >= 1, got {local_steps}.')
