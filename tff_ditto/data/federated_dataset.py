"""The in-memory federated dataset that every loader returns.

Each loader reads its source format into per-client numpy arrays and returns a
`FederatedDataset`: per-client train / validation / test splits held as numpy
arrays (so the training loop can build one `tf.data.Dataset` per client per
round cheaply), each split also exposed as a
`tff.simulation.datasets.ClientData`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto.data.errors import DataError

# One client's examples: OrderedDict(x=features, y=labels), same first dim.
ClientArrays = collections.OrderedDict


def make_client_arrays(x: np.ndarray, y: np.ndarray) -> ClientArrays:
  return collections.OrderedDict(x=x, y=y)


def _num_examples(arrays: ClientArrays) -> int:
  return int(arrays['y'].shape[0])


def _client_data(
    arrays_by_client: Mapping[str, ClientArrays],
) -> tff.simulation.datasets.ClientData:
  client_ids = list(arrays_by_client)

  def dataset_fn(client_id: str) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(arrays_by_client[client_id])

  return tff.simulation.datasets.ClientData.from_clients_and_fn(
      client_ids, dataset_fn
  )


@dataclasses.dataclass(frozen=True)
class FederatedDataset:
  """Per-client train / validation / test splits of a federated dataset.

  Attributes:
    name: Dataset name, e.g. 'femnist'.
    train: client id -> OrderedDict(x, y) of training examples (validation
      already carved out).
    validation: client id -> OrderedDict(x, y) held out from each client's
      training data (may hold zero examples for tiny clients).
    test: client id -> OrderedDict(x, y) of test examples.
    num_classes: Number of classes (2 for the +-1 labelled Vehicle task).
    label_kind: 'categorical' (integer labels 0..C-1) or 'signed' (+-1).
    description: Free text: provenance and deviations from the paper.
  """

  name: str
  train: Mapping[str, ClientArrays]
  validation: Mapping[str, ClientArrays]
  test: Mapping[str, ClientArrays]
  num_classes: int
  label_kind: str = 'categorical'
  description: str = ''

  def __post_init__(self):
    if self.label_kind not in ('categorical', 'signed'):
      raise ValueError(f'Unknown label_kind {self.label_kind!r}.')
    for split_name in ('validation', 'test'):
      split = getattr(self, split_name)
      if list(split) != list(self.train):
        raise DataError(
            f'{self.name}: clients of the {split_name} split differ from the '
            'train split (they must be the same ids in the same order).'
        )

  @property
  def client_ids(self) -> list[str]:
    return list(self.train)

  @property
  def num_clients(self) -> int:
    return len(self.train)

  def num_train_examples(self) -> np.ndarray:
    return np.array([_num_examples(a) for a in self.train.values()], np.int64)

  def num_test_examples(self) -> np.ndarray:
    return np.array([_num_examples(a) for a in self.test.values()], np.int64)

  def num_validation_examples(self) -> np.ndarray:
    return np.array(
        [_num_examples(a) for a in self.validation.values()], np.int64
    )

  @property
  def element_spec(self) -> collections.OrderedDict:
    first = next(iter(self.train.values()))
    return collections.OrderedDict(
        (
            key,
            tf.TensorSpec((None,) + value.shape[1:], tf.as_dtype(value.dtype)),
        )
        for key, value in first.items()
    )

  def client_data(self, split: str) -> tff.simulation.datasets.ClientData:
    """Returns one split ('train', 'validation', 'test') as a ClientData."""
    if split not in ('train', 'validation', 'test'):
      raise ValueError(f'Unknown split {split!r}.')
    return _client_data(getattr(self, split))

  def subset(self, client_ids: Sequence[str]) -> FederatedDataset:
    """Returns the dataset restricted to `client_ids` (in that order)."""
    missing = [c for c in client_ids if c not in self.train]
    if missing:
      raise DataError(f'{self.name}: unknown client ids {missing[:5]}.')
    pick = lambda split: collections.OrderedDict(
        (c, split[c]) for c in client_ids
    )
    return dataclasses.replace(
        self,
        train=pick(self.train),
        validation=pick(self.validation),
        test=pick(self.test),
    )

  def summary(self) -> str:
    train = self.num_train_examples()
    return (
        f'{self.name}: {self.num_clients} clients, {int(train.sum())} train '
        f'(min {int(train.min())}, median {int(np.median(train))}, max '
        f'{int(train.max())}), {int(self.num_validation_examples().sum())} '
        f'validation, {int(self.num_test_examples().sum())} test examples'
    )


def carve_validation(
    train: Mapping[str, ClientArrays],
    validation_fraction: float,
    seed: int,
) -> tuple[collections.OrderedDict, collections.OrderedDict]:
  """Splits each client's training data into train and validation, seeded.

  Each client's examples are permuted with a generator seeded by (seed, client
  index) and the last `round(validation_fraction * n)` examples become its
  validation split (the paper holds out part of each device's training data).
  A client always keeps at least one training example.

  Args:
    train: client id -> OrderedDict(x, y).
    validation_fraction: In [0, 1).
    seed: Seed of the split.

  Returns:
    (train, validation), both client id -> OrderedDict(x, y).

  Raises:
    ValueError: If `validation_fraction` is outside [0, 1).
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(
        f'validation_fraction must be in [0, 1), got {validation_fraction}.'
    )
  new_train = collections.OrderedDict()
  validation = collections.OrderedDict()
  for index, (client_id, arrays) in enumerate(train.items()):
    n = _num_examples(arrays)
    num_validation = min(int(round(validation_fraction * n)), max(n - 1, 0))
    order = np.random.default_rng([seed, index]).permutation(n)
    train_index = np.sort(order[: n - num_validation])
    validation_index = np.sort(order[n - num_validation :])
    new_train[client_id] = collections.OrderedDict(
        (k, v[train_index]) for k, v in arrays.items()
    )
    validation[client_id] = collections.OrderedDict(
        (k, v[validation_index]) for k, v in arrays.items()
    )
  return new_train, validation


def carve_test(
    train: Mapping[str, collections.OrderedDict],
    test_fraction: float,
    seed: int,
) -> tuple[collections.OrderedDict, collections.OrderedDict]:
  """Holds out a seeded per-client test split from train data.

  Each client keeps `n - t` examples, with `t = max(1, round(fraction * n))`
  capped at `n - 1` (so a client with a single example gets no test example
  and a DataError is raised instead, since every client needs a test split).

  Args:
    train: client id -> OrderedDict(x, y).
    test_fraction: In (0, 1).
    seed: Seed; client `i` uses the generator seeded by (seed, i, 7).

  Returns:
    (train, test).
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}.')
  new_train = collections.OrderedDict()
  test = collections.OrderedDict()
  for index, (client_id, arrays) in enumerate(train.items()):
    n = int(arrays['y'].shape[0])
    if n < 2:
      raise DataError(
          f'client {client_id!r} has {n} example(s); at least 2 '
          'are needed to carve a test split.'
      )
    t = min(max(1, int(round(test_fraction * n))), n - 1)
    order = np.random.default_rng([seed, index, 7]).permutation(n)
    keep, held = np.sort(order[: n - t]), np.sort(order[n - t :])
    new_train[client_id] = collections.OrderedDict(
        (k, v[keep]) for k, v in arrays.items()
    )
    test[client_id] = collections.OrderedDict(
        (k, v[held]) for k, v in arrays.items()
    )
  return new_train, test
