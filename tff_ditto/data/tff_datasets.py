"""Federated EMNIST and CelebA from TFF's SQLite files, strictly offline.

TFF 0.87's `tff.simulation.datasets.emnist.load_data` and
`tff.simulation.datasets.celeba.load_data` read `<cache_dir>/emnist_all.sqlite`
and `<cache_dir>/celeba.sqlite` and only download (the `.sqlite.lzma`) when
that file is absent. These loaders check for the file first and raise
`DataError` instead of letting TFF download anything.

To obtain the files on a machine with internet access, either run once

    python -c "import tensorflow_federated as tff; \
      tff.simulation.datasets.emnist.load_data(cache_dir='DIR')"

or download https://storage.googleapis.com/tff-datasets-public/
emnist_all.sqlite.lzma (resp. celeba.sqlite.lzma) and `unxz` it into DIR.
"""

from __future__ import annotations

import collections
import os
import sqlite3
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto.data.errors import DataError
from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays
from tff_ditto.data.leaf import carve_test

EMNIST_FILENAME = 'emnist_all.sqlite'
CELEBA_FILENAME = 'celeba.sqlite'
_URL_ROOT = 'https://storage.googleapis.com/tff-datasets-public/'
DEFAULT_CELEBA_TEST_FRACTION = 0.1


def default_cache_dir() -> str:
  """TFF's default cache folder, ~/.tff."""
  return os.path.join(os.path.expanduser('~'), '.tff')


def _require_sqlite(cache_dir: Optional[str], filename: str,
                    dataset: str) -> str:
  cache_dir = default_cache_dir() if cache_dir is None else cache_dir
  path = os.path.join(cache_dir, filename)
  if not os.path.isfile(path):
    raise DataError(
        f'{path}: TFF {dataset} SQLite file not found (nothing is downloaded '
        f'here). On a machine with internet, download {_URL_ROOT}{filename}'
        f'.lzma and decompress it (unxz) to {path}, or run '
        f'tff.simulation.datasets.{dataset}.load_data(cache_dir='
        f'{cache_dir!r}) there once and copy {filename}.')
  try:
    with open(path, 'rb') as f:
      header = f.read(16)
  except OSError as e:
    raise DataError(f'{path}: cannot read file ({e}).') from e
  if header != b'SQLite format 3\x00':
    raise DataError(f'{path}: not an SQLite database.')
  try:
    connection = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
    try:
      tables = {r[0] for r in connection.execute(
          "SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
      connection.close()
  except sqlite3.Error as e:
    raise DataError(f'{path}: unreadable SQLite database ({e}).') from e
  missing = {'examples', 'client_metadata'} - tables
  if missing:
    raise DataError(f'{path}: missing table(s) {sorted(missing)}; expected '
                    'TFF tables examples and client_metadata.')
  return path


def _materialize(client_data, client_ids, convert, path, split):
  """client id -> OrderedDict(x, y) for the given ids of a ClientData."""
  out = collections.OrderedDict()
  for cid in client_ids:
    try:
      ds = client_data.create_tf_dataset_for_client(cid)
      batches = [b for b in ds.batch(4096).as_numpy_iterator()]
    except (tf.errors.OpError, ValueError) as e:
      raise DataError(f'{path}: cannot parse the {split} examples of client '
                      f'{cid!r} ({type(e).__name__}: {e}).') from e
    if not batches:
      raise DataError(f'{path}: client {cid!r} has no {split} examples.')
    merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    x, y = convert(merged)
    out[cid] = make_client_arrays(x, y)
  return out


def _select(ids, max_clients):
  ids = sorted(ids)
  if max_clients is not None:
    if max_clients < 1:
      raise ValueError(f'max_clients must be positive, got {max_clients}.')
    ids = ids[:max_clients]
  return ids


def load_tff_emnist(
    cache_dir: Optional[str] = None,
    only_digits: bool = False,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Federated EMNIST (TFF): x float32 [n, 28, 28, 1], y int32.

  Pixels as in LEAF (1.0 = background). Every client must be in both the
  train and the test split (true of TFF's file).

  Args:
    cache_dir: Folder holding `emnist_all.sqlite` (default ~/.tff).
    only_digits: 10 digit classes (3,383 writers) instead of 62 (3,400).
    validation_fraction: Fraction of each client's train data held out.
    seed: Seed of the validation split.
    max_clients: Keep only the first N sorted client ids.
  """
  path = _require_sqlite(cache_dir, EMNIST_FILENAME, 'emnist')
  train_cd, test_cd = tff.simulation.datasets.emnist.load_data(
      only_digits=only_digits, cache_dir=os.path.dirname(path))
  split = 'digits_only' if only_digits else 'all'
  train_ids, test_ids = set(train_cd.client_ids), set(test_cd.client_ids)
  if not train_ids:
    raise DataError(f'{path}: no clients in split {split}_train.')
  only_train = sorted(train_ids - test_ids)
  only_test = sorted(test_ids - train_ids)
  if only_train or only_test:
    raise DataError(
        f'{path}: clients of {split}_train and {split}_test differ (train only: '
        f'{only_train[:5]}, test only: {only_test[:5]}).')
  ids = _select(train_ids, max_clients)

  def convert(batch):
    x = batch['pixels'].astype(np.float32)[..., np.newaxis]
    return x, batch['label'].astype(np.int32)

  train = _materialize(train_cd, ids, convert, path, f'{split}_train')
  test = _materialize(test_cd, ids, convert, path, f'{split}_test')
  num_classes = 10 if only_digits else 62
  for name, arrays in (('train', train), ('test', test)):
    for cid, a in arrays.items():
      if a['y'].min() < 0 or a['y'].max() >= num_classes:
        raise DataError(f'{path}: client {cid!r} has {name} labels outside '
                        f'[0, {num_classes - 1}].')
  train, validation = carve_validation(train, validation_fraction, seed)
  return FederatedDataset(
      name='emnist',
      train=train,
      validation=validation,
      test=test,
      num_classes=num_classes,
      description=(
          f'TFF Federated EMNIST ({split}) from {path}; pixels in [0, 1], 1.0 '
          f'= background; validation = {validation_fraction:g} of train '
          f'(seed {seed}).'
          + (f' First {len(ids)} sorted clients.' if max_clients else '')),
  )


def load_tff_celeba(
    cache_dir: Optional[str] = None,
    *,
    split_by_clients: bool = True,
    test_fraction: float = DEFAULT_CELEBA_TEST_FRACTION,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Federated CelebA (TFF), Smiling task: x float32 [n, 84, 84, 3] in [0, 1].

  With `split_by_clients=True` (TFF's `split_by_clients_{train,test}`), the
  train and test splits hold disjoint celebrities, which a personalized
  method cannot be evaluated on. The federation is then the train-split
  clients, each with a seeded per-client test split of `test_fraction`
  (at least one example); the held-out test-split clients are not used.
  With `split_by_clients=False` (`split_by_examples_*`) every client is in
  both splits and they are paired directly.

  Args:
    cache_dir: Folder holding `celeba.sqlite` (default ~/.tff).
    split_by_clients: Which TFF split pair to read (see above).
    test_fraction: Per-client test fraction when split_by_clients=True.
    validation_fraction: Fraction of each client's train data held out.
    seed: Seed of the splits.
    max_clients: Keep only the first N sorted client ids.
  """
  path = _require_sqlite(cache_dir, CELEBA_FILENAME, 'celeba')
  train_cd, test_cd = tff.simulation.datasets.celeba.load_data(
      split_by_clients=split_by_clients, cache_dir=os.path.dirname(path))
  prefix = 'split_by_clients' if split_by_clients else 'split_by_examples'
  train_ids = set(train_cd.client_ids)
  if not train_ids:
    raise DataError(f'{path}: no clients in split {prefix}_train.')

  def convert(batch):
    x = batch['image'].astype(np.float32) / np.float32(255.0)
    return x, batch['smiling'].astype(np.int32)

  notes = [f'TFF CelebA ({prefix}) from {path}; label = smiling; image '
           '84x84x3 / 255.']
  if split_by_clients:
    ids = _select(train_ids, max_clients)
    full = _materialize(train_cd, ids, convert, path, f'{prefix}_train')
    train, test = carve_test(full, test_fraction, seed)
    notes.append(
        f'TFF\'s test split holds other celebrities, so each train client\'s '
        f'test split is carved from its own data ({test_fraction:g}, at least '
        f'1 example, seed {seed}); the {len(test_cd.client_ids)} test-split '
        'clients are not used.')
  else:
    test_ids = set(test_cd.client_ids)
    if train_ids != test_ids:
      raise DataError(f'{path}: clients of {prefix}_train and {prefix}_test '
                      'differ.')
    ids = _select(train_ids, max_clients)
    train = _materialize(train_cd, ids, convert, path, f'{prefix}_train')
    test = _materialize(test_cd, ids, convert, path, f'{prefix}_test')
  train, validation = carve_validation(train, validation_fraction, seed)
  notes.append(f'Validation = {validation_fraction:g} of train (seed {seed}).')
  if max_clients:
    notes.append(f'First {len(ids)} sorted clients.')
  return FederatedDataset(
      name='tff_celeba',
      train=train,
      validation=validation,
      test=test,
      num_classes=2,
      description=' '.join(notes),
  )
