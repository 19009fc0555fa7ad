"""Per-client batch streams: the reference's gen_batch behaviour, resumable."""

import collections

import numpy as np
import pytest

from tff_ditto import batch_streams


def _arrays(n):
  return collections.OrderedDict(
      x=np.arange(n, dtype=np.float32).reshape(n, 1) * 10.0,
      y=np.arange(n, dtype=np.int32),
  )


def _labels(dataset):
  return [batch['y'].numpy().tolist() for batch in dataset]


def test_reference_batches_are_full_batches_within_one_pass():
  n, size = 25, 10
  batches = batch_streams.reference_batch_indices(
      n, size, start=0, count=6, seed=3, stream=1, client_index=7
  )
  assert [len(b) for b in batches] == [size] * 6
  # Two full batches per pass (the partial remainder of 5 is skipped), so
  # batches 2k and 2k + 1 come from one pass: disjoint, no repeats.
  for first, second in zip(batches[0::2], batches[1::2]):
    assert len(set(first) | set(second)) == 2 * size
  # Each pass is reshuffled.
  assert not np.array_equal(batches[0], batches[2])


def test_client_with_fewer_examples_than_the_batch_trains_on_all_of_them():
  streams = batch_streams.ClientBatchStreams('reference', 3, 32, seed=0)
  labels = _labels(streams.round_batches(0, 1, _arrays(7), count=4))
  assert len(labels) == 4
  for batch in labels:
    assert sorted(batch) == list(range(7))  # the whole data, no duplicates


def test_per_round_shuffle_repeats_examples_of_small_clients():
  # The earlier stream (kept as an option) batches across pass boundaries.
  streams = batch_streams.ClientBatchStreams('per_round_shuffle', 3, 32, 0)
  stream = streams.round_batches(0, 1, _arrays(7), count=4)  # endless
  first = _labels(stream.take(1))[0]
  assert len(first) == 32 and len(set(first)) == 7


def test_a_client_stream_continues_across_rounds():
  arrays = _arrays(23)
  continued = batch_streams.ClientBatchStreams('reference', 4, 5, seed=1)
  rounds = _labels(continued.round_batches(0, 2, arrays, count=3)) + _labels(
      continued.round_batches(5, 2, arrays, count=4)
  )
  at_once = batch_streams.ClientBatchStreams('reference', 4, 5, seed=1)
  assert rounds == _labels(at_once.round_batches(0, 2, arrays, count=7))
  # Only the client that drew batches moved.
  np.testing.assert_array_equal(continued.positions, [0, 0, 7, 0])


def test_streams_depend_on_seed_and_client_only():
  arrays = _arrays(40)
  a = batch_streams.ClientBatchStreams('reference', 2, 10, seed=1)
  b = batch_streams.ClientBatchStreams('reference', 2, 10, seed=1)
  c = batch_streams.ClientBatchStreams('reference', 2, 10, seed=2)
  first = _labels(a.round_batches(0, 0, arrays, 3))
  assert first == _labels(b.round_batches(9, 0, arrays, 3))  # round unused
  assert first != _labels(c.round_batches(0, 0, arrays, 3))
  assert _labels(b.round_batches(0, 1, arrays, 3)) != first


def test_finetune_batches_do_not_move_the_training_stream():
  streams = batch_streams.ClientBatchStreams('reference', 2, 4, seed=0)
  tuned = _labels(streams.finetune_batches(0, _arrays(9), count=5))
  assert [len(b) for b in tuned] == [4] * 5
  np.testing.assert_array_equal(streams.positions, [0, 0])


def test_client_without_examples_gets_no_batches():
  streams = batch_streams.ClientBatchStreams('reference', 1, 4, seed=0)
  assert _labels(streams.round_batches(0, 0, _arrays(0), count=3)) == []


def test_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match='batch_stream'):
    batch_streams.ClientBatchStreams('epochs', 1, 4, seed=0)
