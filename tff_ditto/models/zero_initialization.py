"""Build models whose variables start at zeros, for computations that assign them.

A `tff.tensorflow.computation` runs the initializers of every variable it
creates at every call, before its body runs. A client computation that builds
its models with `model_fn()` and then assigns their weights from its inputs
(the broadcast global model, the client's state file) pays for random
initial values that nothing reads. Measured on the 2-core machine: building
five Fashion-MNIST CNNs (3.27 M parameters each) in a computation costs
190-220 ms a call with their Keras initializers and 6-9 ms with zeros, while
two training runs shared the cores; a Fashion-MNIST Ditto client builds five
(its copy of the global model and four personal models).

Only use this where every variable built inside is assigned before it is
read; results are then bit-identical (`tests/models/test_zero_initialization.py`,
the golden metrics). Never around the model that produces the initial global
weights.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import tensorflow as tf


def _zeros_creator(next_creator: Callable[..., tf.Variable], **kwargs: Any):
  """Replaces a shaped variable's initializer with zeros of its shape."""
  shape = kwargs.get('shape')
  dtype = kwargs.get('dtype')
  if shape is not None and dtype is not None:
    kwargs['initial_value'] = lambda: tf.zeros(shape, dtype)
  return next_creator(**kwargs)


@contextlib.contextmanager
def zero_initialized_variables() -> Iterator[None]:
  """Variables created inside start at zeros, not at their initializers' values.

  Applies to variables created with a declared shape and dtype (every Keras
  layer and metric weight); any other variable keeps its initial value.

  Yields:
    Nothing; the scope is active until the `with` block ends.
  """
  with tf.variable_creator_scope(_zeros_creator):
    yield
