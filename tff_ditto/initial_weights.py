"""The seeded initial model of a run, the same for every method.

TFF's own initial-weights computation is not seeded; this builds the model
in a private graph with a graph-level seed instead (building Keras models
eagerly after TFF has traced them in graphs breaks Sequential models under
absl's app.run), once per `model_fn` and seed.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import client_data_schema
from tff_ditto import computation_cache

# Initial weights per model_fn and seed; copies are handed out.
_INITIAL_WEIGHTS = computation_cache.PerObjectMemo()


def initial_model_weights(
    model_fn: client_data_schema.ModelFn, seed: int
) -> tff.learning.models.ModelWeights:
  """Seeded initial weights, built once per `model_fn` and seed.

  Args:
    model_fn: The model builder.
    seed: The experiment seed.

  Returns:
    Fresh copies of the initial weights' arrays (callers may change them).
  """
  weights = _INITIAL_WEIGHTS.get_or_build(
      model_fn, seed, lambda: _build_initial_model_weights(model_fn, seed)
  )
  return tff.learning.models.ModelWeights(
      trainable=[np.array(w, copy=True) for w in weights.trainable],
      non_trainable=[np.array(w, copy=True) for w in weights.non_trainable],
  )


def _build_initial_model_weights(
    model_fn: client_data_schema.ModelFn, seed: int
) -> tff.learning.models.ModelWeights:
  with tf.Graph().as_default() as graph:
    tf.keras.utils.set_random_seed(seed)  # Python, NumPy and TF seeds
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      trainable, non_trainable = session.run(
          [list(weights.trainable), list(weights.non_trainable)]
      )
  return tff.learning.models.ModelWeights(
      trainable=trainable, non_trainable=non_trainable
  )
