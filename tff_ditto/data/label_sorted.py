"""The bucketing paper's non-IID partition: label-sorted contiguous chunks.

The bucketing reference (epfml/byzantine-robust-noniid-optimizer,
`NONIIDLTSampler` without long tail) gives the n - f honest workers (ranks
0 .. n-f-1) contiguous, equal chunks of the training indices sorted by label,
so each honest worker sees one or two classes. Byzantine workers (ranks
n-f .. n-1) get an IID shard `rank % (n - f)` of a seeded permutation (their
data only matters for non-omniscient attacks). Any remainder of the sorted
indices beyond `(n - f) * chunk` is dropped, as an equal split does.

The test pool is split into contiguous parts over the honest workers only, so
the benign pooled test accuracy of a global model is its accuracy on the
whole test pool. Each Byzantine worker gets a small strided slice of the test
pool (reported apart, as malicious clients' metrics).
"""

from __future__ import annotations

import collections

import numpy as np

from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays


def worker_id(rank: int) -> str:
  """Client id of worker `rank`: 'worker_00', 'worker_01', ..."""
  return f'worker_{rank:02d}'


def label_sorted_indices(
    labels: np.ndarray, num_honest: int, num_byzantine: int, seed: int = 0
) -> list[np.ndarray]:
  """Training indices per worker (honest first, then Byzantine).

  Args:
    labels: Integer labels of the training pool, shape [N].
    num_honest: n - f, the honest workers (label-sorted chunks).
    num_byzantine: f, the Byzantine workers (IID shards).
    seed: Seed of the Byzantine workers' IID permutation.

  Returns:
    `num_honest + num_byzantine` int64 index arrays into the pool; every
    array has `N // num_honest` entries.

  Raises:
    ValueError: If `num_honest < 1`, `num_byzantine < 0` or the pool has
      fewer examples than honest workers.
  """
  labels = np.asarray(labels)
  if num_honest < 1 or num_byzantine < 0:
    raise ValueError(
        f'need num_honest >= 1 and num_byzantine >= 0, got {num_honest}, '
        f'{num_byzantine}.'
    )
  chunk = labels.shape[0] // num_honest
  if chunk < 1:
    raise ValueError(
        f'{labels.shape[0]} examples cannot be split over {num_honest} '
        'honest workers.'
    )
  order = np.argsort(labels, kind='stable').astype(np.int64)
  indices = [order[r * chunk : (r + 1) * chunk] for r in range(num_honest)]
  permutation = (
      np.random.default_rng([seed, 7])
      .permutation(labels.shape[0])
      .astype(np.int64)
  )
  for rank in range(num_honest, num_honest + num_byzantine):
    indices.append(permutation[rank % num_honest :: num_honest][:chunk])
  return indices


def label_sorted_partition(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_honest: int,
    num_byzantine: int,
    validation_fraction: float = 0.1,
    seed: int = 0,
    byzantine_test_examples: int = 50,
    name: str = 'label_sorted',
) -> FederatedDataset:
  """A `FederatedDataset` with the bucketing paper's non-IID partition.

  Workers are ordered by rank: `worker_00 .. worker_{n-f-1}` honest, then the
  f Byzantine workers (pass their indices, `range(num_honest, n)`, as the
  malicious clients).

  Args:
    train_x: Training features [N, ...].
    train_y: Integer training labels [N].
    test_x: Test features [M, ...].
    test_y: Integer test labels [M].
    num_honest: n - f.
    num_byzantine: f.
    validation_fraction: Held out from each worker's chunk (seeded), e.g.
      for tuning the learning rate without the test set.
    seed: Seed of the Byzantine shards and the validation split.
    byzantine_test_examples: Test examples of each Byzantine worker (a
      strided slice of the test pool; at least 1).
    name: Dataset name.

  Returns:
    The FederatedDataset (labels int32, features as given).

  Raises:
    ValueError: On inconsistent shapes or counts.
  """
  if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
    raise ValueError('features and labels differ in length.')
  if test_y.shape[0] < num_honest:
    raise ValueError(
        f'{test_y.shape[0]} test examples cannot be split over {num_honest} '
        'honest workers.'
    )
  indices = label_sorted_indices(train_y, num_honest, num_byzantine, seed)
  test_parts = np.array_split(np.arange(test_y.shape[0]), num_honest)
  count = max(1, int(byzantine_test_examples))
  train = collections.OrderedDict()
  test = collections.OrderedDict()
  for rank, train_indices in enumerate(indices):
    if rank < num_honest:
      test_indices = test_parts[rank]
    else:
      test_indices = np.arange(rank % num_honest, test_y.shape[0], num_honest)[
          :count
      ]
    train[worker_id(rank)] = make_client_arrays(
        train_x[train_indices], train_y[train_indices].astype(np.int32)
    )
    test[worker_id(rank)] = make_client_arrays(
        test_x[test_indices], test_y[test_indices].astype(np.int32)
    )
  train, validation = carve_validation(train, validation_fraction, seed)
  description = (
      f'label-sorted non-IID partition (bucketing paper): {num_honest} honest '
      f'workers with contiguous chunks of {len(indices[0])} label-sorted '
      f'examples, {num_byzantine} Byzantine workers with IID shards; '
      f'{validation_fraction:.0%} of each chunk held out for validation; '
      'the test pool split over the honest workers.'
  )
  return FederatedDataset(
      name=name,
      train=train,
      validation=validation,
      test=test,
      num_classes=int(max(train_y.max(), test_y.max())) + 1,
      description=description,
  )
