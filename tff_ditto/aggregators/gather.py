"""Bringing every client's flattened update to the server, in O(n d).

TFF 0.87 has no `federated_collect`. Two ways are implemented; both end in a
SERVER-placed value from which `Gather.load` builds, inside the server's
TensorFlow computation, the `[n, d]` float32 matrix of client updates in
client order (and the `[n]` per-client scalars of weighted rules):

* `'auto'` (default): `'concat'` when the TFF context in force when the
  process is built merges partial aggregates (several workers, see
  `tff_ditto.runtime.configure_remote_execution`), else `'file'`.
* `'file'`. `tff.federated_aggregate`'s `accumulate` flattens the
  client's update, writes it with `tf.io.write_file` to
  `<directory>/<slot>` and appends only that file name to the accumulator, so
  the accumulator is a short vector of strings. The server computation reads
  the n files once, stacks them (O(n d)) and then truncates them to zero bytes
  (TF has no graph op that deletes a file). The directory defaults to a fresh
  UUID-named folder under `/dev/shm/tff_ditto_gather` (tmpfs: RAM-backed,
  no disk I/O), or under the system temp dir where there is no `/dev/shm`;
  it is removed when this Python process exits.
  Slot names (`00000000`, `00000001`, ...) are reused every round, so storage
  stays bounded by the largest round (its updates between the clients'
  writes and the server's read, then empty files). They are unique because
  TFF's C++ federating executor (the local worker and a single remote worker)
  folds `accumulate` over the clients in one sequential chain, in client
  order, and never calls `merge`. Requirements: the clients' `accumulate` and
  the server's computation must see the same file system (true for
  `tff_ditto.runtime`'s local worker; for a remote worker the directory is
  resolved on the worker's machine), and one aggregation of a given process
  runs at a time. `merge` concatenates names but asserts that they are
  distinct, so a context that merges partial aggregates (TFF's multi-worker
  mergeable context) fails loudly rather than silently mixing clients: use
  `'concat'` there.
  TF's in-process `ram://` file system is rejected: in TF 2.14 its
  `write_file` appends to an existing file instead of replacing it, so reused
  slots would corrupt the second round, and files could never be freed
  (measured: a second write of 'd' over 'abc' reads back 'abcd').
* `'concat'`. The accumulator is the `[k, d]` matrix of the k updates seen so
  far; `accumulate` concatenates one row. Works under every TFF context, but
  client i copies i rows, O(n^2 d) bytes in all (100 clients x 222k floats:
  ~4.4 GB of memcpy; 1000 clients: ~440 GB), and the accumulator is
  serialized once more between the client and server executors. Under
  TFF's mergeable context (several workers) the workers' partial aggregates
  are merged in the order the workers finish, so there the rows are put in a
  canonical order (by content) before the rule sees them: results do not
  depend on timing, but indices in measurements (Krum's selection) then
  count in that order, not in client order.

Measured numbers are in the package docstring (`tff_ditto.aggregators`).
"""

from __future__ import annotations

import atexit
import collections
import os
import shutil
import tempfile
import uuid
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto.aggregators.flatten import FlatLayout

GATHER_METHODS = ('auto', 'file', 'concat')
DEFAULT_GATHER = 'auto'


def resolve_gather_method(method: str) -> str:
  """'auto' -> 'concat' under a context that merges, else 'file'.

  Resolved when the aggregation process is built (`factory.create`), so the
  execution context (`tff_ditto.runtime`) must be configured first. Under
  TFF's multi-worker mergeable context each worker folds its own chunk of
  clients, so the 'file' gather's slot names collide (and the workers may not
  share a file system with the process that reads them); the concatenating
  gather carries the updates themselves and is valid there.

  Args:
    method: One of `GATHER_METHODS`.

  Returns:
    'file' or 'concat'.
  """
  if method not in GATHER_METHODS:
    raise ValueError(f'gather must be one of {GATHER_METHODS}, got {method!r}.')
  if method != 'auto':
    return method
  from tff_ditto import runtime  # pylint: disable=g-import-not-at-top

  return 'concat' if runtime.merges_partial_aggregates() else 'file'


_NAMES = 'names'
_ROWS = 'rows'
_WEIGHTS = 'weights'


def _is_local_path(path: str) -> bool:
  return '://' not in path


def default_gather_root() -> str:
  """`/dev/shm/tff_ditto_gather` if /dev/shm is writable, else under TMPDIR."""
  if os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK):
    return '/dev/shm/tff_ditto_gather'
  return os.path.join(tempfile.gettempdir(), 'tff_ditto_gather')


def _new_gather_directory(root: Optional[str]) -> str:
  root = default_gather_root() if root is None else root.rstrip('/')
  if root.startswith('ram://'):
    raise ValueError(
        "gather_dir may not be on TF's ram:// file system: in TF 2.14 "
        'write_file appends there instead of replacing, which corrupts reused '
        'slot files (see tff_ditto.aggregators.gather).'
    )
  directory = f'{root}/{uuid.uuid4().hex}'
  if _is_local_path(directory):
    # Written by the TFF worker on this machine (tf.io.write_file creates the
    # folders); the emptied slot files are removed when Python exits.
    atexit.register(shutil.rmtree, directory, True)
  return directory


def _canonical_order(rows, weights):
  """Sorts gathered rows by content, so that their order never depends on
  which worker finished first (TFF's mergeable context merges partial
  aggregates in completion order). Order-sensitive rules (bucketing's
  permutation, float summation order) then give the same result for the
  same clients under any number of workers. The key is each row's dot
  product with a fixed pseudo-random vector (plus the weight); rows with
  equal keys are, up to a ~2^-24 chance, equal, so their order is moot.
  """
  dim = rows.shape[1]
  direction = tf.random.stateless_uniform(
      [dim], seed=[1234, 5678], minval=-1.0, maxval=1.0
  )
  key = tf.reduce_sum(rows * direction, axis=1)
  if weights is not None:
    key = key + 1e-3 * weights
  # NaN keys have no order; such rows are dropped by the rule's guard anyway.
  key = tf.where(tf.math.is_finite(key), key, tf.float32.max)
  order = tf.argsort(key, stable=True)
  ordered_weights = None if weights is None else tf.gather(weights, order)
  return tf.gather(rows, order), ordered_weights


class Gather:
  """Federated gather of flattened client updates (and optional weights).

  Build one per `AggregationFactory.create` call. `federated_gather` is used
  inside a `tff.federated_computation`; `load` inside the server-side
  `tff.tensorflow.computation` that receives its result.
  """

  def __init__(
      self,
      layout: FlatLayout,
      method: str = DEFAULT_GATHER,
      directory: Optional[str] = None,
      weight_type: Optional[tff.Type] = None,
  ):
    method = resolve_gather_method(method)
    from tff_ditto import runtime  # pylint: disable=g-import-not-at-top

    # Under a merging context rows arrive in worker completion order.
    self.canonical_order = (
        method == 'concat' and runtime.merges_partial_aggregates()
    )
    self.layout = layout
    self.method = method
    self.weighted = weight_type is not None
    self.directory = (
        _new_gather_directory(directory) if method == 'file' else None
    )
    dim = layout.dim
    if method == 'file':
      fields = [(_NAMES, tff.TensorType(np.str_, [None]))]
    else:
      fields = [(_ROWS, tff.TensorType(np.float32, [None, dim]))]
    if self.weighted:
      fields.append((_WEIGHTS, tff.TensorType(np.float32, [None])))
    self.accumulator_type = tff.StructWithPythonType(
        fields, collections.OrderedDict
    )
    if self.weighted:
      self.client_type = tff.StructType(
          [(None, layout.value_type), (None, weight_type)]
      )
    else:
      self.client_type = layout.value_type
    self._build_computations()

  def _build_computations(self):
    layout, method, weighted = self.layout, self.method, self.weighted
    acc_type, client_type = self.accumulator_type, self.client_type
    directory = self.directory
    dim = layout.dim

    @tff.tensorflow.computation
    def zero():
      acc = collections.OrderedDict()
      if method == 'file':
        acc[_NAMES] = tf.zeros([0], tf.string)
      else:
        acc[_ROWS] = tf.zeros([0, dim], tf.float32)
      if weighted:
        acc[_WEIGHTS] = tf.zeros([0], tf.float32)
      return acc

    @tff.tensorflow.computation(acc_type, client_type)
    def accumulate(acc, client):
      if weighted:
        value, weight = client[0], client[1]
      else:
        value, weight = client, None
      flat = layout.flatten(value)
      out = collections.OrderedDict()
      if method == 'file':
        slot = tf.size(acc[_NAMES])
        name = tf.strings.join(
            [directory, '/', tf.strings.as_string(slot, width=8, fill='0')]
        )
        write = tf.io.write_file(name, tf.io.serialize_tensor(flat))
        with tf.control_dependencies([write]):
          out[_NAMES] = tf.concat([acc[_NAMES], name[tf.newaxis]], axis=0)
      else:
        out[_ROWS] = tf.concat([acc[_ROWS], flat[tf.newaxis]], axis=0)
      if weighted:
        weight = tf.reshape(tf.cast(weight, tf.float32), [1])
        out[_WEIGHTS] = tf.concat([acc[_WEIGHTS], weight], axis=0)
      return out

    @tff.tensorflow.computation(acc_type, acc_type)
    def merge(a, b):
      out = collections.OrderedDict()
      if method == 'file':
        names = tf.concat([a[_NAMES], b[_NAMES]], axis=0)
        unique = tf.debugging.assert_equal(
            tf.size(tf.unique(names).y),
            tf.size(names),
            message=(
                "gather='file' cannot merge partial aggregates whose slot "
                "files collide; use gather='concat' with contexts that merge."
            ),
        )
        with tf.control_dependencies([unique]):
          out[_NAMES] = tf.identity(names)
      else:
        out[_ROWS] = tf.concat([a[_ROWS], b[_ROWS]], axis=0)
      if weighted:
        out[_WEIGHTS] = tf.concat([a[_WEIGHTS], b[_WEIGHTS]], axis=0)
      return out

    @tff.tensorflow.computation(acc_type)
    def report(acc):
      return collections.OrderedDict(
          (k, tf.identity(v)) for k, v in acc.items()
      )

    self._zero = zero
    self._accumulate = accumulate
    self._merge = merge
    self._report = report

  def federated_gather(self, client_value):
    """CLIENTS-placed values (zipped with weights if weighted) -> SERVER."""
    return tff.federated_aggregate(
        client_value, self._zero(), self._accumulate, self._merge, self._report
    )

  def load(self, gathered):
    """Gathered value -> (`[n, d]` updates, `[n]` weights or None, deps).

    `deps` are ops (file truncation) that the caller's outputs must depend on
    via `tf.control_dependencies`, or TF prunes them.
    """
    dim = self.layout.dim
    weights = gathered[_WEIGHTS] if self.weighted else None
    if self.method == 'concat':
      rows = tf.reshape(gathered[_ROWS], [-1, dim])
      if self.canonical_order:
        rows, weights = _canonical_order(rows, weights)
      return rows, weights, []
    names = gathered[_NAMES]

    def read(name):
      return tf.reshape(
          tf.io.parse_tensor(tf.io.read_file(name), tf.float32), [dim]
      )

    updates = tf.map_fn(
        read, names, fn_output_signature=tf.TensorSpec([dim], tf.float32)
    )

    def truncate(name):
      with tf.control_dependencies([tf.io.write_file(name, '')]):
        return tf.constant(True)

    with tf.control_dependencies([updates]):
      cleared = tf.map_fn(
          truncate, names, fn_output_signature=tf.TensorSpec([], tf.bool)
      )
    return tf.reshape(updates, [-1, dim]), weights, [cleared]
