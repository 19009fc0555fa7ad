"""Versioned, file-backed storage of the clients' personalized models.

Each client's personalized model `v_k` is one TensorFlow tensor bundle (the
format of TF checkpoints: `<path>.index` and `<path>.data-00000-of-00001`)
holding one tensor, the flat float32 concatenation of its weights (trainable,
then non-trainable). A state may hold several models one after the other
(Ditto's personal model per lambda), or a model followed by method-specific
extra entries (APFL: a second model; MAPPER: the mixing weight); the store's
shared initial state holds one model only.

The client computation reads and writes these states itself (`RestoreV2` /
`SaveV2` inside TFF's worker, the in-graph functions at the end of this
module); only their paths cross TFF. The bundle ops copy the tensor straight
between its file and its buffer; `tf.io.serialize_tensor` + `write_file` and
`read_file` + `parse_tensor`, used before, copy it twice more: a 52 MB
Fashion-MNIST state reads in 11 ms against 48 ms and writes in 54 ms against
65 ms (medians, scripts/bench_state_files.py). States of that earlier format
(one serialized `TensorProto`, paths ending in `.tensor`) are still read, so
that runs started before resume.

States are versioned by round: in round t a client reads the version it last
wrote (or the shared initial model) and writes version t, so a re-executed or
interrupted round never corrupts the state it started from and a checkpoint of
round r names exactly the states it needs (`FileClientStateStore.versions`).
SaveV2 writes each file under a temporary name and renames it, the index last,
so a state exists (`state_exists`) only once it is complete.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Collection, Sequence
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

INITIAL_VERSION = -1
STATE_SUFFIX = '.state'
LEGACY_SUFFIX = '.tensor'
_TENSOR_NAME = 'state'
_INITIAL_NAME = 'initial'


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


def is_legacy_path(path: str) -> bool:
  """Whether `path` names a state of the earlier format (`TensorProto`)."""
  return path.endswith(LEGACY_SUFFIX)


def state_files(path: str) -> list[str]:
  """The files that hold the state at `path` (index first)."""
  if is_legacy_path(path):
    return [path]
  return [f'{path}.index', f'{path}.data-00000-of-00001']


def state_exists(path: str) -> bool:
  """Whether a complete state is at `path` (its last-written file exists)."""
  return os.path.exists(state_files(path)[0])


def read_flat_state(path: str) -> np.ndarray:
  """The flat float32 state at `path`, in either format."""
  return read_flat(tf.constant(path)).numpy()


def write_flat_state(path: str, flat: np.ndarray) -> None:
  """Writes a state (a tensor bundle: temporary files, then renames).

  Raises:
    ValueError: If `path` ends in `.tensor`: the earlier format is read only.
  """
  if is_legacy_path(path):
    raise ValueError(
        f'{path}: states are written as tensor bundles; the {LEGACY_SUFFIX} '
        'format is read only.'
    )
  write_flat(tf.constant(path), tf.constant(flat, tf.float32))


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
    if not state_exists(self._existing_path(0, INITIAL_VERSION)):
      write_flat_state(
          self._path(0, INITIAL_VERSION), flatten_weights(initial_weights)
      )

  @property
  def num_clients(self) -> int:
    return int(self.versions.shape[0])

  def _path(
      self, client_index: int, version: int, suffix: str = STATE_SUFFIX
  ) -> str:
    if version == INITIAL_VERSION:
      return os.path.join(self.directory, _INITIAL_NAME + suffix)
    return os.path.join(
        self.directory,
        f'client_{client_index:06d}',
        f'round_{version:06d}{suffix}',
    )

  def _existing_path(self, client_index: int, version: int) -> str:
    """The state's path: the earlier format's where only that one exists."""
    path = self._path(client_index, version)
    legacy = self._path(client_index, version, LEGACY_SUFFIX)
    if not state_exists(path) and state_exists(legacy):
      return legacy
    return path

  def read_path(self, client_index: int) -> str:
    return self._existing_path(client_index, int(self.versions[client_index]))

  def handles(
      self,
      client_indices: Sequence[int],
      round_num: int,
      frozen: Collection[int] = (),
  ) -> list[ClientStateHandle]:
    """Read/write paths for the clients training in `round_num`.

    Args:
      client_indices: The round's clients.
      round_num: The round.
      frozen: Clients whose state stays as it is this round: their write
        path is empty (pass them to `commit` too).

    Returns:
      One handle per client, in order.

    Raises:
      ValueError: If a client already has a state of this round or later.
    """
    handles = []
    for index in client_indices:
      if self.versions[index] >= round_num:
        raise ValueError(
            f'Client {index} already has state of round '
            f'{self.versions[index]}; cannot train it in round {round_num}.'
        )
      if index in frozen:
        handles.append(ClientStateHandle(self.read_path(index), ''))
        continue
      write_path = self._path(index, round_num)
      os.makedirs(os.path.dirname(write_path), exist_ok=True)
      handles.append(ClientStateHandle(self.read_path(index), write_path))
    return handles

  def commit(
      self,
      client_indices: Sequence[int],
      round_num: int,
      frozen: Collection[int] = (),
  ) -> None:
    """Records that the clients' round `round_num` files are now current.

    Args:
      client_indices: The round's clients, as given to `handles`.
      round_num: The round.
      frozen: The clients `handles` gave no write path; they keep their
        state.

    Raises:
      RuntimeError: If another client's file of this round is missing.
    """
    for index in client_indices:
      if index in frozen:
        continue
      path = self._path(index, round_num)
      if not state_exists(path):
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
      path = self._existing_path(index, int(version))
      if not state_exists(path):
        raise FileNotFoundError(
            f'Client state {path} named by the checkpoint is missing.'
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
        current version (left by an interrupted round, temporary ones
        included), are deleted.
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


def read_flat(path: tf.Tensor) -> tf.Tensor:
  """The flat float32 state at `path` (in-graph), in either format.

  Args:
    path: Scalar string tensor; a path ending in `.tensor` is read as the
      earlier format, any other as a tensor bundle.

  Returns:
    Float32 tensor of unknown length.
  """
  return tf.cond(
      tf.strings.regex_full_match(path, '.*' + re.escape(LEGACY_SUFFIX)),
      lambda: tf.io.parse_tensor(tf.io.read_file(path), tf.float32),
      lambda: tf.raw_ops.RestoreV2(
          prefix=path,
          tensor_names=[_TENSOR_NAME],
          shape_and_slices=[''],
          dtypes=[tf.float32],
      )[0],
  )


def write_flat(path: tf.Tensor, flat: tf.Tensor) -> tf.Operation:
  """Writes a flat float32 tensor as the state at `path` (in-graph).

  Args:
    path: Scalar string tensor, not ending in `.tensor`.
    flat: Float32 vector.

  Returns:
    The write. Inside a `tf.function` or TFF computation it runs only as a
    control dependency of an output (`SaveV2` is not kept for its effect).
  """
  return tf.raw_ops.SaveV2(
      prefix=path,
      tensor_names=[_TENSOR_NAME],
      shape_and_slices=[''],
      tensors=[flat],
  )


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
  flat = read_flat(path)
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
  flat = read_flat(path)
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
  return write_flat(path, flatten_tensors(tensors))
