"""Tiny models, data and numpy references shared by the core tests.

The toy model is a linear classifier 5 features -> 3 logits (a Keras Dense
layer wrapped with `tff.learning.models.from_keras_model`), small enough that
every TFF computation runs in well under a second once traced, and whose loss
gradient is easy to write in numpy (float64) as an independent reference.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import client_states
from tff_ditto import ditto
from tff_ditto import training_config

NUM_FEATURES = 5
NUM_CLASSES = 3
SHAPES = [(NUM_FEATURES, NUM_CLASSES), (NUM_CLASSES,)]  # kernel, bias

INPUT_SPEC = collections.OrderedDict(
    x=tf.TensorSpec([None, NUM_FEATURES], tf.float32),
    y=tf.TensorSpec([None], tf.int32),
)
ELEMENT_SPEC = collections.OrderedDict(
    x=tf.TensorSpec([NUM_FEATURES], tf.float32),
    y=tf.TensorSpec([], tf.int32),
)


def keras_model() -> tf.keras.Model:
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(NUM_FEATURES,)),
      tf.keras.layers.Dense(NUM_CLASSES),
  ])


def model_fn() -> tff.learning.models.VariableModel:
  return tff.learning.models.from_keras_model(
      keras_model(),
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=INPUT_SPEC,
      metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')],
  )


# ------------------------------------------------------------------ weights


def random_weights(seed: int, scale: float = 0.5) -> list[np.ndarray]:
  """[kernel (5, 3), bias (3,)] float32."""
  rng = np.random.default_rng(seed)
  return [(scale * rng.normal(size=s)).astype(np.float32) for s in SHAPES]


def model_weights(weights) -> tff.learning.models.ModelWeights:
  return tff.learning.models.ModelWeights(
      trainable=[np.asarray(w, np.float32) for w in weights], non_trainable=[]
  )


def global_weights(process, state) -> list[np.ndarray]:
  return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def with_global_weights(process, weights):
  """A fresh process state whose global model is `weights`."""
  return process.set_model_weights(process.initialize(), model_weights(weights))


def write_state(path: str, weights) -> None:
  client_states.write_flat_state(path, client_states.flatten_weights(weights))


def state_file_names(*names: str) -> list[str]:
  """The sorted file names of the states `names` (given without suffix)."""
  return sorted(
      os.path.basename(f)
      for name in names
      for f in client_states.state_files(name + client_states.STATE_SUFFIX)
  )


def read_state(path: str) -> list[np.ndarray]:
  return client_states.unflatten_weights(
      client_states.read_flat_state(path), SHAPES
  )


# --------------------------------------------------------------------- data


def client_arrays(seed: int, n: int, label_shift: int = 0):
  """Separable 3-cluster data; labels rotated by `label_shift` per client."""
  rng = np.random.default_rng(seed)
  centers = 3.0 * np.eye(NUM_CLASSES, NUM_FEATURES)
  cluster = rng.integers(0, NUM_CLASSES, size=n)
  x = centers[cluster] + 0.5 * rng.normal(size=(n, NUM_FEATURES))
  y = (cluster + label_shift) % NUM_CLASSES
  return collections.OrderedDict(x=x.astype(np.float32), y=y.astype(np.int32))


def fixed_batches(arrays, batch_size: int) -> tf.data.Dataset:
  """The arrays in order, batched (no shuffling: a fixed batch sequence)."""
  return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)


eval_dataset = fixed_batches


def split_batches(arrays, batch_size: int) -> list[collections.OrderedDict]:
  n = int(arrays['y'].shape[0])
  return [
      collections.OrderedDict(
          (k, v[i : i + batch_size]) for k, v in arrays.items()
      )
      for i in range(0, n, batch_size)
  ]


def handle_dataset(read_path: str, write_path: str) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensors(
      collections.OrderedDict(read_path=read_path, write_path=write_path)
  )


def personal_client_data(batches: tf.data.Dataset, read_path, write_path):
  return collections.OrderedDict(
      batches=batches, personal_state=handle_dataset(read_path, write_path)
  )


# --------------------------------------------------- numpy reference (fp64)


def loss_and_grad(weights, batch):
  """Mean softmax cross-entropy of the linear model and its gradient."""
  kernel, bias = (np.asarray(w, np.float64) for w in weights)
  x = np.asarray(batch['x'], np.float64)
  y = np.asarray(batch['y'])
  logits = x @ kernel + bias
  logits = logits - logits.max(axis=1, keepdims=True)
  p = np.exp(logits)
  p /= p.sum(axis=1, keepdims=True)
  n = x.shape[0]
  loss = -np.log(p[np.arange(n), y]).mean()
  d = p.copy()
  d[np.arange(n), y] -= 1.0
  d /= n
  return loss, [x.T @ d, d.sum(axis=0)]


def sgd_reference(start, batches, lr, center=None, lam=0.0):
  """SGD on F(v; b) + lam/2 ||v - center||^2 over `batches` (numpy, fp64)."""
  v = [np.asarray(w, np.float64) for w in start]
  for batch in batches:
    _, grads = loss_and_grad(v, batch)
    if lam:
      grads = [g + lam * (vi - c) for g, vi, c in zip(grads, v, center)]
    v = [vi - lr * g for vi, g in zip(v, grads)]
  return v


def evaluate_reference(weights, arrays):
  """(mean loss, accuracy) of the linear model on all of `arrays`."""
  loss, _ = loss_and_grad(weights, arrays)
  kernel, bias = (np.asarray(w, np.float64) for w in weights)
  logits = np.asarray(arrays['x'], np.float64) @ kernel + bias
  accuracy = float(np.mean(np.argmax(logits, axis=1) == arrays['y']))
  return float(loss), accuracy


def distance(a, b) -> float:
  return float(
      np.sqrt(
          sum(
              np.sum((np.asarray(x, np.float64) - y) ** 2) for x, y in zip(a, b)
          )
      )
  )


def assert_weights_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_weights_close(a, b, atol=1e-5):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_allclose(
        np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=0, atol=atol
    )


def sgd(lr: float):
  return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def build_process(**kwargs):
  kwargs.setdefault('client_optimizer', sgd(kwargs.pop('lr', 0.1)))
  kwargs.setdefault('personal_lambda', 0.5)
  kwargs.setdefault('local_steps', 3)
  return ditto.build_ditto_process(model_fn, **kwargs)


def tiny_ditto_config(**overrides) -> training_config.ExperimentConfig:
  """A 3-round Ditto run's config (lambda 1, 3 clients a round), overridden."""
  values = dict(
      method='ditto',
      rounds=3,
      clients_per_round=3,
      local_steps=2,
      batch_size=10,
      lam=1.0,
      eval_every=3,
      checkpoint_every=0,
      seed=0,
  )
  values.update(overrides)
  return training_config.ExperimentConfig(**values)
