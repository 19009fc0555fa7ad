"""batch_loops: the in-graph loops give what `tf.data.Dataset.reduce` gives."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops


def _batches(num_examples: int, batch_size: int) -> tf.data.Dataset:
  """Batches of a dict dataset; the last one is partial when it does not fit."""
  x = np.arange(num_examples * 3, dtype=np.float32).reshape(num_examples, 3)
  y = np.arange(num_examples, dtype=np.int32) % 5
  return tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)
  ).batch(batch_size)


def _order_sensitive_body(state, batch):
  """A body whose result depends on the batches' order and sizes."""
  total, count = state
  size = tf.cast(tf.shape(batch['y'])[0], tf.float32)
  return (
      total * 1.5
      + tf.reduce_sum(batch['x'])
      + tf.reduce_sum(tf.cast(batch['y'], tf.float32)),
      count + size,
  )


def _initial():
  return (tf.constant(0.0), tf.constant(0.0))


@pytest.mark.parametrize(
    'num_examples,batch_size,max_batches',
    [
        (23, 5, None),
        (23, 5, 3),
        (23, 5, 10),
        (4, 10, None),
        (0, 5, None),
        (0, 5, 2),
    ],
)
def test_reduce_batches_equals_dataset_reduce(
    num_examples, batch_size, max_batches
):
  batches = _batches(num_examples, batch_size)
  taken = batches if max_batches is None else batches.take(max_batches)
  expected = taken.reduce(_initial(), _order_sensitive_body)

  @tf.function
  def in_graph():
    return batch_loops.reduce_batches(
        batches, _initial(), _order_sensitive_body, max_batches=max_batches
    )

  actual = in_graph()
  np.testing.assert_array_equal(
      np.array([t.numpy() for t in actual]),
      np.array([t.numpy() for t in expected]),
  )


def test_endless_dataset_needs_and_honours_max_batches():
  batches = _batches(7, 2).repeat()

  @tf.function
  def in_graph():
    return batch_loops.reduce_batches(
        batches, _initial(), _order_sensitive_body, max_batches=9
    )

  expected = batches.take(9).reduce(_initial(), _order_sensitive_body)
  # Batches of 2, 2, 2, 1 (a pass of 7 examples), then again: 16 examples.
  assert float(in_graph()[1]) == float(expected[1]) == 16.0
  assert float(in_graph()[0]) == float(expected[0])


def test_body_assignments_are_sequential():
  """Each iteration reads the variable the previous one assigned."""
  variable = tf.Variable(1.0)
  batches = _batches(12, 2)

  @tf.function
  def in_graph():
    variable.assign(1.0)

    def body(state, batch):
      new = variable * 2.0 + tf.reduce_sum(batch['x'])
      with tf.control_dependencies([variable.assign(new)]):
        return state + 1

    count = batch_loops.reduce_batches(batches, tf.constant(0), body)
    with tf.control_dependencies([count]):
      return tf.identity(variable.read_value()), count

  value, count = in_graph()
  expected = 1.0
  for batch in batches:
    expected = expected * 2.0 + float(np.sum(batch['x']))
  assert int(count) == 6
  assert float(value) == pytest.approx(expected, rel=0, abs=0)


def test_stacked_batches_unpad_each_batch():
  @tf.function
  def sizes_and_last():
    stacked = batch_loops.stack_batches(_batches(7, 3))
    return stacked.sizes, stacked.batch(stacked.count - 1)['y']

  sizes, last = sizes_and_last()
  np.testing.assert_array_equal(sizes.numpy(), [3, 3, 1])
  np.testing.assert_array_equal(last.numpy(), [6 % 5])


def test_stacked_batches_refuse_max_batches():
  with pytest.raises(ValueError, match='datasets only'):
    with tf.Graph().as_default():
      stacked = batch_loops.stack_batches(_batches(4, 2))
      batch_loops.reduce_batches(stacked, _initial(), _order_sensitive_body, 1)


def test_single_element():
  handle = collections.OrderedDict(read_path='a', write_path='b')

  @tf.function
  def read():
    return batch_loops.single_element(tf.data.Dataset.from_tensors(handle))

  value = read()
  assert value['read_path'].numpy() == b'a'
  assert value['write_path'].numpy() == b'b'


def test_inside_a_tff_computation_matches_dataset_reduce():
  element = tff.types.tensorflow_to_type(
      collections.OrderedDict(
          x=tf.TensorSpec([None, 3], tf.float32),
          y=tf.TensorSpec([None], tf.int32),
      )
  )

  @tff.tensorflow.computation(tff.SequenceType(element))
  def with_loop(batches):
    return batch_loops.reduce_batches(
        batches, _initial(), _order_sensitive_body, max_batches=4
    )

  @tff.tensorflow.computation(tff.SequenceType(element))
  def with_reduce(batches):
    return batches.take(4).reduce(_initial(), _order_sensitive_body)

  for num_examples in (0, 3, 23):
    batches = _batches(num_examples, 5)
    np.testing.assert_array_equal(
        np.array(with_loop(batches)), np.array(with_reduce(batches))
    )


def test_sliced_batches_equal_the_dataset_batches():
  arrays = _batches(11, 11).get_single_element()
  starts, sizes = [0, 4, 8], [4, 4, 3]
  expected = _batches(11, 4).reduce(_initial(), _order_sensitive_body)

  @tf.function
  def in_graph():
    return batch_loops.reduce_batches(
        batch_loops.SlicedBatches(
            arrays, tf.constant(starts), tf.constant(sizes)
        ),
        _initial(),
        _order_sensitive_body,
    )

  np.testing.assert_array_equal(
      np.array([t.numpy() for t in in_graph()]),
      np.array([t.numpy() for t in expected]),
  )
