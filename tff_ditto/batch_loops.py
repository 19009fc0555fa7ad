"""Loops over a client's batches that TFF's worker does not set up per call.

TFF's C++ worker runs each computation's graph in a session it keeps, but a
`tf.data` reduce function (`dataset.reduce(state, body)`) is instantiated
anew at every call, and with it every nested function of its body (the Keras
model's `forward_pass`, the optimizer), each optimized by Grappler again.
Measured on the FEMNIST Ditto round (2 cores, `perf record` of the worker, 10
clients, 1 local step): 45 % of the worker's CPU went to instantiating and
freeing those functions, about 50 ms per client call against ~6 ms of SGD.

The loops here keep the body in the computation's own graph instead: one
`DatasetToSingleElement` reads the batches into padded tensors (its only
function is a one-line `map` that records each batch's size) and a
`tf.while_loop` runs the body over them, so the functions are instantiated
once, when the worker's session first runs the graph. The body sees the same
batches, unpadded, in the same order as `dataset.reduce` would give them, one
iteration at a time (`parallel_iterations=1`: the variables the body assigns
are read by the next iteration), so results are bit-identical
(`tests/test_golden_metrics.py`; `tests/test_batch_loops.py`).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any, Optional, TypeVar, Union

import tensorflow as tf

State = TypeVar('State')

# `max_batches=None` reads every batch; padded_batch needs a number.
_ALL_BATCHES = 1 << 24


def single_element(dataset: tf.data.Dataset) -> Any:
  """The element of a dataset holding exactly one (e.g. a state handle)."""
  return tf.data.experimental.get_single_element(dataset)


def _leading_size(batch) -> tf.Tensor:
  return tf.shape(tf.nest.flatten(batch)[0])[0]


def _loop(count, batch_at, initial_state, body):
  """`body` over batches 0 .. count - 1 in order, one at a time."""

  def step(index, state):
    return index + 1, body(state, batch_at(index))

  _, final_state = tf.while_loop(
      lambda index, _: index < count,
      step,
      (tf.constant(0), initial_state),
      parallel_iterations=1,
  )
  return final_state


@dataclasses.dataclass(frozen=True)
class StackedBatches:
  """Batches read into tensors: `stacked[i, :sizes[i]]` is batch i.

  Attributes:
    stacked: The batches' structure with a new leading dimension, each batch
      zero-padded to the largest one.
    sizes: int32 [number of batches], each batch's own size.
  """

  stacked: Any
  sizes: tf.Tensor

  @property
  def count(self) -> tf.Tensor:
    return tf.shape(self.sizes)[0]

  def batch(self, index: tf.Tensor):
    """Batch `index`, without its padding."""
    return tf.nest.map_structure(
        lambda tensor: tensor[index, : self.sizes[index]], self.stacked
    )

  def reduce(
      self, initial_state: State, body: Callable[[State, Any], State]
  ) -> State:
    """`body` over the batches in order, as `tf.data.Dataset.reduce`."""
    return _loop(self.count, self.batch, initial_state, body)


@dataclasses.dataclass(frozen=True)
class SlicedBatches:
  """Batches as slices of one concatenated structure of examples.

  Attributes:
    examples: A structure of tensors whose leading dimension runs over
      examples.
    starts: int32 [number of batches], where each batch starts.
    sizes: int32 [number of batches], each batch's size.
  """

  examples: Any
  starts: tf.Tensor
  sizes: tf.Tensor

  @property
  def count(self) -> tf.Tensor:
    return tf.shape(self.sizes)[0]

  def batch(self, index: tf.Tensor):
    """Batch `index`: `examples[starts[index]:][:sizes[index]]`."""
    start = self.starts[index]
    end = start + self.sizes[index]
    return tf.nest.map_structure(
        lambda tensor: tensor[start:end], self.examples
    )

  def reduce(
      self, initial_state: State, body: Callable[[State, Any], State]
  ) -> State:
    """`body` over the batches in order, as `tf.data.Dataset.reduce`."""
    return _loop(self.count, self.batch, initial_state, body)


def stack_batches(
    batches: tf.data.Dataset, max_batches: Optional[int] = None
) -> StackedBatches:
  """Reads the first `max_batches` batches (None: all) into tensors.

  Args:
    batches: A dataset of batches (structures of tensors with a leading batch
      dimension); may be empty, or endless if `max_batches` is given.
    max_batches: Batches taken from its start; None for all of them.

  Returns:
    A `StackedBatches`.
  """
  if max_batches is not None:
    batches = batches.take(max_batches)
  sized = batches.map(lambda batch: (batch, _leading_size(batch)))
  padded = sized.padded_batch(
      _ALL_BATCHES if max_batches is None else max_batches
  )

  def empty(spec):
    shape = [0 if dim is None else dim for dim in spec.shape.as_list()]
    return tf.zeros(shape, spec.dtype)

  nothing = tf.data.Dataset.from_tensors(
      tf.nest.map_structure(empty, padded.element_spec)
  )
  stacked, sizes = single_element(padded.concatenate(nothing).take(1))
  return StackedBatches(stacked, sizes)


def reduce_batches(
    batches: Union[tf.data.Dataset, StackedBatches, SlicedBatches],
    initial_state: State,
    body: Callable[[State, Any], State],
    max_batches: Optional[int] = None,
) -> State:
  """`batches.take(max_batches).reduce(initial_state, body)`, in the graph.

  Args:
    batches: A dataset of batches, or batches already in tensors.
    initial_state: The loop state (a structure of tensors of fixed shapes).
    body: `(state, batch) -> state`.
    max_batches: At most this many batches are used (None: all; must be None
      for batches already in tensors).

  Returns:
    The state after the last batch.
  """
  if isinstance(batches, (StackedBatches, SlicedBatches)):
    if max_batches is not None:
      raise ValueError('max_batches applies to datasets only.')
    return batches.reduce(initial_state, body)
  return stack_batches(batches, max_batches).reduce(initial_state, body)
