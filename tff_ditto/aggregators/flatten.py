"""Flattening a structure of float tensors to one float32 vector and back.

Every robust rule in this package works on an `[n, d]` float32 matrix: one
row per client, the update's tensors flattened and concatenated in the order
of `tff.structure.flatten(value_type)`. `FlatLayout` holds that order, the
shapes and dtypes, and builds the TF ops that go back and forth. Its methods
are called inside `tff.tensorflow.computation`s.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def _leaf_types(value_type: tff.Type) -> list[tff.TensorType]:
  if isinstance(value_type, tff.TensorType):
    return [value_type]
  if isinstance(value_type, tff.StructType):
    return list(tff.structure.flatten(value_type))
  raise TypeError(
      'Robust aggregators take a tensor or a structure of tensors, got '
      f'{value_type}.'
  )


class FlatLayout:
  """How a `value_type` maps to a flat float32 vector of length `dim`."""

  def __init__(self, value_type: tff.Type):
    self.value_type = value_type
    self.leaves = _leaf_types(value_type)
    for leaf in self.leaves:
      if not isinstance(leaf, tff.TensorType):
        raise TypeError(f'Expected only tensors in {value_type}, got {leaf}.')
      if not np.issubdtype(leaf.dtype, np.floating):
        raise TypeError(
            f'Robust aggregators need floating tensors; {value_type} has '
            f'{leaf.dtype}.'
        )
      if not tff.types.is_shape_fully_defined(leaf.shape):
        raise TypeError(
            f'Robust aggregators need fully defined shapes; {value_type} has '
            f'{leaf.shape}.'
        )
    self.shapes = [tuple(leaf.shape) for leaf in self.leaves]
    self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
    self.dtypes = [tf.as_dtype(leaf.dtype) for leaf in self.leaves]
    self.dim = int(sum(self.sizes))
    if self.dim == 0:
      raise TypeError(f'{value_type} has no elements to aggregate.')

  def flatten(self, value) -> tf.Tensor:
    """A value of `value_type` (as TF passes it in) -> float32 `[dim]`."""
    if isinstance(self.value_type, tff.TensorType):
      tensors = [value]
    else:
      tensors = tff.structure.flatten(
          tff.structure.from_container(value, recursive=True)
      )
    parts = [tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tensors]
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)

  def unflatten(self, flat: tf.Tensor):
    """Float32 `[dim]` -> a value of `value_type` (its Python container)."""
    parts = tf.split(flat, self.sizes) if len(self.sizes) > 1 else [flat]
    tensors = [
        tf.cast(tf.reshape(p, shape), dtype)
        for p, shape, dtype in zip(parts, self.shapes, self.dtypes)
    ]
    if isinstance(self.value_type, tff.TensorType):
      return tensors[0]
    packed = tff.structure.pack_sequence_as(self.value_type, tensors)
    return tff.types.type_to_py_container(packed, self.value_type)
