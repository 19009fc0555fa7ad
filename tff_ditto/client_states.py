"""Versioned, file-backed storage of the clients' personalized models.

Each client's personalized model `v_k` is one file holding the flat float32
concatenation of its weights (trainable, then non-trainable), serialized with
`tf.io.serialize_tensor`. A file may hold several models one after the other
(Ditto's personal model per lambda), or a model followed by method-specific
extra entries (APFL: a second model; MAPPER: the mixing weight); the store's
shared initial file holds one model only.

The client computation reads and writes these files itself (`tf.io.read_file`
/ `tf.io.write_file` inside TFF's worker, the in-graph functions at the end of
this module); only their paths cross TFF. Files are versioned by round: in
round t a client reads the version it last wrote (or the shared initial model)
and writes version t, so a re-executed or interrupted round never corrupts the
state it started from and a checkpoint of round r names exactly the files it
needs (`FileClientStateStore.versions`).
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

INITIAL_VERSION = -1
_INITIAL_FILE = 'initial.tensor'


def flatten_weights(weights: Sequence[np.ndarray]) -> np.ndarray:
  """Concatenates weight arrays into one flat float32 vector."""
  return np.concatenate(
      [np.asarray(w, np.float32).reshape(-1) for w in weights]
  )


def unflatten_weights(
    flat: np.ndarray, shapes: Sequence[tuple[int, ...]]
) -> list[np.ndarray]:
  sizes = [int(np.prod(s)) for s in shapes]
  if flat.shape != (sum(sizes),):
    raise ValueError(
        f'State vector has shape {flat.shape}, expected ({sum(sizes)},).'
    )
  pieces = np.split(flat, np.cumsum(sizes)[:-1])
  return [p.reshape(s) for p, s in zip(pieces, shapes)]


def read_flat_state(path: str) -> np.ndarray:
  return tf.io.parse_tensor(tf.io.read_file(path), tf.float32).numpy()


def write_flat_state(path: str, flat: np.ndarray) -> None:
  """Writes a state file atomically (temporary file, then rename)."""
  temporary = f'{path}.tmp{os.getpid()}'
  tf.io.write_file(
      temporary, tf.io.serialize_tensor(tf.constant(flat, tf.float32))
  )
  os.replace(temporary, path)


ClientStateHandle = collections.namedtuple(
    'ClientStateHandle', ['read_path', 'write_path']
)


class FileClientStateStore:
  """Where each client's personalized model lives between rounds.

  Attributes:
    directory: Root directory of the state files.
    versions: int32 array, per client index the round whose file holds its
      current state (`INITIAL_VERSION` = never trained, uses the initial
      model). This array is what a checkpoint must save.
  """

  def __init__(
      self,
      directory: str,
      num_clients: int,
      initial_weights: Sequence[np.ndarray],
  ):
    """Creates the store and writes the shared initial model.

    Args:
      directory: Root directory (created if missing).
      num_clients: Number of clients, indexed 0..num_clients-1.
      initial_weights: The initial personalized model of every client (the
        reference code starts every v_k from the initial global model).
    """
    self.directory = directory
    self.shapes = [tuple(np.shape(w)) for w in initial_weights]
    self.versions = np.full([num_clients], INITIAL_VERSION, np.int32)
    os.makedirs(directory, exist_ok=True)
    if not os.path.exists(self._path(0, INITIAL_VERSION)):
      write_flat_state(
          self._path(0, INITIAL_VERSION), flatten_weights(initial_weights)
      )

  @property
  def num_clients(self) -> int:
    return int(self.versions.shape[0])

  def _path(self, client_index: int, version: int) -> str:
    if version == INITIAL_VERSION:
      return os.path.join(self.directory, _INITIAL_FILE)
    return os.path.join(
        self.directory,
        f'client_{client_index:06d}',
        f'round_{version:06d}.tensor',
    )

  def read_path(self, client_index: int) -> str:
    return self._path(client_index, int(self.versions[client_index]))

  def handles(
      self, client_indices: Sequence[int], round_num: int
  ) -> list[ClientStateHandle]:
    """Read/write paths for the clients training in `round_num`."""
    handles = []
    for index in client_indices:
      if self.versions[index] >= round_num:
        raise ValueError(
            f'Client {index} already has state of round '
            f'{self.versions[index]}; cannot train it in round {round_num}.'
        )
      write_path = self._path(index, round_num)
      os.makedirs(os.path.dirname(write_path), exist_ok=True)
      handles.append(ClientStateHandle(self.read_path(index), write_path))
    return handles

  def commit(self, client_indices: Sequence[int], round_num: int) -> None:
    """Records that the clients' round `round_num` files are now current."""
    for index in client_indices:
      path = self._path(index, round_num)
      if not os.path.exists(path):
        raise RuntimeError(f'Client computation did not write {path}.')
      self.versions[index] = round_num

  def restore(self, versions: np.ndarray) -> None:
    """Resets the current versions (from a checkpoint)."""
    versions = np.asarray(versions, np.int32)
    if versions.shape != self.versions.shape:
      raise ValueError(
          f'Checkpoint holds {versions.shape[0]} client states, the store '
          f'{self.num_clients}.'
      )
    for index, version in enumerate(versions):
      if not os.path.exists(self._path(index, int(version))):
        raise FileNotFoundError(
            f'Client state file {self._path(index, int(version))} named by '
            'the checkpoint is missing.'
        )
    self.versions = versions.copy()

  def read(self, client_index: int) -> list[np.ndarray]:
    """The current personalized weights of a client, as numpy arrays."""
    return unflatten_weights(
        read_flat_state(self.read_path(client_index)), self.shapes
    )

  def prune(self, oldest_needed_versions: np.ndarray) -> None:
    """Deletes files no longer needed by the current state or a checkpoint.

    Args:
      oldest_needed_versions: Per client, the version that the oldest kept
        checkpoint names. Files older than that, and files newer than the
        current version (left by an interrupted round), are deleted.
    """
    for index in range(self.num_clients):
      client_directory = os.path.dirname(self._path(index, 0))
      if not os.path.isdir(client_directory):
        continue
      low = int(oldest_needed_versions[index])
      high = int(self.versions[index])
      for name in os.listdir(client_directory):
        if not name.startswith('round_'):
          continue
        version = int(name[len('round_') : len('round_') + 6])
        if version < low or version > high:
          os.remove(os.path.join(client_directory, name))


# ------------------------------------------------- in-graph (client side)


def state_variables(
    weights_list: Sequence[tff.learning.models.ModelWeights],
) -> list[tf.Variable]:
  """The variables of the models, in the order of their state file.

  Args:
    weights_list: `ModelWeights` of the models the file holds, in order.

  Returns:
    Each model's trainable, then non-trainable variables, model after model.
  """
  return [
      v
      for weights in weights_list
      for v in list(weights.trainable) + list(weights.non_trainable)
  ]


def num_entries(tensors: Sequence[tf.Variable]) -> int:
  """Entries of the tensors (or variables) together: their flat size."""
  return int(sum(np.prod(t.shape) for t in tensors))


def flatten_tensors(tensors: Sequence[tf.Tensor]) -> tf.Tensor:
  """The flat float32 concatenation of the tensors (in-graph)."""
  if not tensors:
    return tf.zeros([0], tf.float32)
  return tf.concat([tf.reshape(t, [-1]) for t in tensors], axis=0)


def unflatten_tensors(
    flat: tf.Tensor, like: Sequence[tf.Variable]
) -> list[tf.Tensor]:
  """Splits a flat vector into tensors shaped as `like` (in-graph)."""
  sizes = [int(np.prod(v.shape)) for v in like]
  return [
      tf.reshape(piece, v.shape)
      for piece, v in zip(tf.split(flat, sizes), like)
  ]


def read_personal_weights(
    path: tf.Tensor,
    personal_weights_list: Sequence[tff.learning.models.ModelWeights],
) -> list[tf.Operation]:
  """Loads a state file into the variables of the models it holds.

  Args:
    path: Scalar string tensor, the file.
    personal_weights_list: `ModelWeights` of the models, in file order.

  Returns:
    The assignments (run them before using the models).

  Raises:
    tf.errors.InvalidArgumentError: When run on a file of the wrong size
      (the message names the expected shape).
  """
  variables = state_variables(personal_weights_list)
  flat = tf.io.parse_tensor(tf.io.read_file(path), tf.float32)
  sizes = [int(np.prod(v.shape)) for v in variables]
  flat = tf.ensure_shape(flat, [sum(sizes)])
  pieces = tf.split(flat, sizes)
  return [v.assign(tf.reshape(p, v.shape)) for v, p in zip(variables, pieces)]


class StateParts(NamedTuple):
  """A state file read as a model followed by extra entries.

  Attributes:
    model: The model part, float32 [model_size].
    extra: The extra part, float32 [extra size]: the file's, or the initial
      values for a file holding the model only; None without extras.
    has_extra: Scalar bool tensor, whether the file itself held more than the
      model (False for the store's initial file).
  """

  model: tf.Tensor
  extra: Optional[tf.Tensor]
  has_extra: tf.Tensor


def read_state(
    path: tf.Tensor, model_size: int, initial_extra: Optional[tf.Tensor] = None
) -> StateParts:
  """Reads a state file as a model and extra entries (in-graph).

  Args:
    path: Scalar string tensor.
    model_size: Entries of the model part.
    initial_extra: Flat values of the extra part for files holding the model
      only (the store's initial file); None when the method has no extras.

  Returns:
    The parts of the file.
  """
  flat = tf.io.parse_tensor(tf.io.read_file(path), tf.float32)
  model = tf.ensure_shape(flat[:model_size], [model_size])
  has_extra = tf.size(flat) > model_size
  if initial_extra is None:
    return StateParts(model, None, has_extra)
  extra_size = int(initial_extra.shape[0])
  # Files written by the method hold the extras; the initial file does not,
  # and then the padding supplies them.
  padded = tf.concat([flat, initial_extra], axis=0)
  extra = tf.ensure_shape(
      padded[model_size : model_size + extra_size], [extra_size]
  )
  return StateParts(model, extra, has_extra)


def write_state(path: tf.Tensor, tensors: Sequence[tf.Tensor]) -> tf.Operation:
  """Writes the tensors, flattened and concatenated, as a state file.

  Args:
    path: Scalar string tensor, the file (the handle's write path).
    tensors: The state in file order, e.g. `state_variables(...)`, then any
      extra entries.

  Returns:
    The write operation.
  """
  return tf.io.write_file(
      path, tf.io.serialize_tensor(flatten_tensors(tensors))
  )
