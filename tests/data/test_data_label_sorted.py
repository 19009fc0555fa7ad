"""The bucketing paper's label-sorted non-IID partition."""

import numpy as np
import pytest

from tff_ditto.data import label_sorted


def _pool(num_examples, num_classes=4, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, num_examples)
  x = np.arange(num_examples, dtype=np.float32)[:, None]  # x = pool index
  return x, y


def test_honest_chunks_are_contiguous_label_sorted_and_equal():
  _, y = _pool(103)
  indices = label_sorted.label_sorted_indices(y, num_honest=4, num_byzantine=2)
  assert len(indices) == 6
  assert all(len(i) == 103 // 4 for i in indices)
  honest = np.concatenate(indices[:4])
  # The honest workers together hold the first 4 * 25 label-sorted indices.
  np.testing.assert_array_equal(honest, np.argsort(y, kind='stable')[:100])
  assert np.all(np.diff(y[honest]) >= 0)
  # Non-IID: with ~25 examples per class, no worker sees more than 2 classes.
  assert all(len(np.unique(y[i])) <= 2 for i in indices[:4])


def test_byzantine_shards_are_iid_strided_and_disjoint():
  _, y = _pool(400)
  indices = label_sorted.label_sorted_indices(y, num_honest=4, num_byzantine=3)
  byzantine = indices[4:]
  assert len(set(byzantine[0]) & set(byzantine[1])) == 0
  # Rank 4 uses shard 4 % 4 = 0, spread over all classes.
  assert len(np.unique(y[byzantine[0]])) == 4


def test_partition_test_pool_goes_to_the_honest_workers():
  x, y = _pool(200)
  test_x, test_y = _pool(37, seed=1)
  dataset = label_sorted.label_sorted_partition(
      x,
      y,
      test_x,
      test_y,
      num_honest=5,
      num_byzantine=2,
      validation_fraction=0.2,
      byzantine_test_examples=3,
  )
  assert dataset.client_ids == [f'worker_{r:02d}' for r in range(7)]
  honest_test = np.concatenate(
      [dataset.test[c]['x'][:, 0] for c in dataset.client_ids[:5]]
  )
  np.testing.assert_array_equal(np.sort(honest_test), np.arange(37))
  assert all(dataset.test[c]['y'].shape[0] == 3 for c in dataset.client_ids[5:])
  # Validation is carved from each chunk: train + validation = the chunk.
  chunk = label_sorted.label_sorted_indices(y, 5, 2)[0]
  first = dataset.client_ids[0]
  held = np.concatenate(
      [dataset.train[first]['x'][:, 0], dataset.validation[first]['x'][:, 0]]
  )
  np.testing.assert_array_equal(
      np.sort(held), np.sort(chunk).astype(np.float32)
  )
  assert dataset.validation[first]['y'].shape[0] == 8
  assert dataset.train[first]['y'].dtype == np.int32


def test_too_few_examples_raise():
  with pytest.raises(ValueError):
    label_sorted.label_sorted_indices(
        np.zeros(3), num_honest=4, num_byzantine=0
    )
