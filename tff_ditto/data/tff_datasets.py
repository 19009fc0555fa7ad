"""Federated EMNIST and CelebA from TFF's SQLite files, strictly offline.

TFF 0.87's `tff.simulation.datasets.emnist.load_data` and
`tff.simulation.datasets.celeba.load_data` read `<cache_dir>/emnist_all.sqlite`
and `<cache_dir>/celeba.sqlite` (downloading the `.sqlite.lzma` when the file
is absent) through `SqlClientData`. The loaders here read the same files the
same way -- tables `examples` (split_name, client_id,
serialized_example_proto) and `client_metadata` (client_id, split_name), the
same split names, the same `tf.train.Example` features and shapes as TFF's
parsers -- but directly, so that:

  * nothing is ever downloaded: a missing file is a `DataError`;
  * client ids are bound as SQL parameters (TFF's `SqlClientData` pastes them
    into the query text, so an id holding a quote fails, or selects other
    clients' rows);
  * EMNIST labels are range-checked as int64 before the int32 cast (TFF casts
    first, so a label 2**32 + 3 would silently become 3), pixels must be
    finite, CelebA images must lie in 0..255 and `smiling` be 0 or 1 (only
    `image` and `smiling` are parsed; TFF casts any nonzero `smiling` to True);
  * every problem with the file -- not SQLite, truncated or corrupt, missing
    tables or columns, ids or protos of the wrong SQL type, unparseable or
    ill-shaped protos, bad values -- is a `DataError` naming the file.

To obtain the files on a machine with internet access, either run once

    python -c "import tensorflow_federated as tff; \
      tff.simulation.datasets.emnist.load_data(cache_dir='DIR')"

or download https://storage.googleapis.com/tff-datasets-public/
emnist_all.sqlite.lzma (resp. celeba.sqlite.lzma) and `unxz` it into DIR.
"""

from __future__ import annotations

import collections
import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tff_ditto.data.errors import DataError
from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_test
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays

EMNIST_FILENAME = 'emnist_all.sqlite'
CELEBA_FILENAME = 'celeba.sqlite'
_URL_ROOT = 'https://storage.googleapis.com/tff-datasets-public/'
DEFAULT_CELEBA_TEST_FRACTION = 0.1

# Columns the loaders read (TFF's tables may have more).
_REQUIRED_COLUMNS = collections.OrderedDict(
    examples=('split_name', 'client_id', 'serialized_example_proto'),
    client_metadata=('client_id', 'split_name'),
)

# The features TFF's parsers read, with TFF's shapes and dtypes.
_EMNIST_FEATURES = {
    'pixels': tf.io.FixedLenFeature(shape=(28, 28), dtype=tf.float32),
    'label': tf.io.FixedLenFeature(shape=(), dtype=tf.int64),
}
_CELEBA_FEATURES = {
    'image': tf.io.FixedLenFeature(shape=(84, 84, 3), dtype=tf.int64),
    'smiling': tf.io.FixedLenFeature(shape=(), dtype=tf.int64),
}

# (parsed features, 'path: client ..., split ...') -> (x, y).
Converter = Callable[[dict, str], tuple[np.ndarray, np.ndarray]]


def default_cache_dir() -> str:
  """TFF's default cache folder, ~/.tff."""
  return os.path.join(os.path.expanduser('~'), '.tff')


def _short(value: Any, limit: int = 300) -> str:
  text = str(value)
  return text if len(text) <= limit else text[: limit - 3] + '...'


def _sql_type(value: Any) -> str:
  if value is None:
    return 'NULL'
  return {bytes: 'BLOB', str: 'TEXT', int: 'INTEGER', float: 'REAL'}.get(
      type(value), type(value).__name__
  ) + f' {_short(repr(value), 40)}'


@contextlib.contextmanager
def _open_sqlite(path: str) -> Iterator[sqlite3.Connection]:
  """A read-only connection; any SQLite error in the body is a DataError."""
  # A URI, so that mode=ro applies; the path is quoted ('?', '#', '%').
  uri = (
      'file:'
      + urllib.parse.quote(os.fsencode(os.path.abspath(path)))
      + '?mode=ro'
  )
  connection = None
  try:
    connection = sqlite3.connect(uri, uri=True)
    yield connection
  except sqlite3.Error as e:
    raise DataError(
        f'{path}: unreadable or corrupt SQLite database '
        f'({type(e).__name__}: {e}).'
    ) from e
  finally:
    if connection is not None:
      connection.close()


def _check_sqlite_size(path: str, header: bytes, file_size: int) -> None:
  """Detects truncated files, which SQLite itself may read without an error.

  SQLite zero-fills a short read of the last page, so a file cut inside its
  last page can load with silently damaged rows. A database file is a whole
  number of pages, and (when the header's size field is valid, as in every
  file written by SQLite >= 3.7) exactly as many pages as the header says.
  """
  if len(header) < 100:
    raise DataError(
        f'{path}: truncated SQLite header ({len(header)} of 100 bytes).'
    )
  page_size = int.from_bytes(header[16:18], 'big')
  page_size = 65536 if page_size == 1 else page_size
  if page_size < 512 or page_size & (page_size - 1):
    raise DataError(f'{path}: corrupt SQLite header (page size {page_size}).')
  if file_size % page_size:
    raise DataError(
        f'{path}: {file_size} bytes is not a whole number of '
        f'{page_size}-byte pages: the file is truncated or '
        'corrupt.'
    )
  num_pages = int.from_bytes(header[28:32], 'big')
  size_field_valid = header[24:28] == header[92:96]
  if size_field_valid and num_pages * page_size > file_size:
    raise DataError(
        f'{path}: truncated SQLite file: the header says '
        f'{num_pages} pages of {page_size} bytes, the file holds '
        f'{file_size // page_size}.'
    )


def _require_sqlite(
    cache_dir: Optional[str], filename: str, dataset: str
) -> str:
  """The path of a readable TFF SQLite file with the expected tables."""
  cache_dir = default_cache_dir() if cache_dir is None else cache_dir
  path = os.path.join(cache_dir, filename)
  if not os.path.isfile(path):
    raise DataError(
        f'{path}: TFF {dataset} SQLite file not found (nothing is downloaded '
        f'here). On a machine with internet, download {_URL_ROOT}{filename}'
        f'.lzma and decompress it (unxz) to {path}, or run '
        f'tff.simulation.datasets.{dataset}.load_data(cache_dir='
        f'{cache_dir!r}) there once and copy {filename}.'
    )
  try:
    with open(path, 'rb') as f:
      header = f.read(100)
    file_size = os.path.getsize(path)
  except OSError as e:
    raise DataError(f'{path}: cannot read file ({e}).') from e
  if header[:16] != b'SQLite format 3\x00':
    raise DataError(f'{path}: not an SQLite database.')
  _check_sqlite_size(path, header, file_size)
  with _open_sqlite(path) as connection:
    tables = {
        r[0]
        for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type='table'"
        )
    }
    missing = set(_REQUIRED_COLUMNS) - tables
    if missing:
      raise DataError(
          f'{path}: missing table(s) {sorted(missing)}; expected '
          'TFF tables examples and client_metadata.'
      )
    for table, columns in _REQUIRED_COLUMNS.items():
      have = {r[1] for r in connection.execute(f'PRAGMA table_info({table})')}
      lacking = [c for c in columns if c not in have]
      if lacking:
        raise DataError(
            f'{path}: table {table} has no column(s) {lacking} '
            f'(TFF files have {", ".join(columns)}).'
        )
  return path


def _client_ids(
    connection: sqlite3.Connection, path: str, split: str
) -> list[str]:
  """The distinct client ids of one split, from client_metadata."""
  ids = []
  for (cid,) in connection.execute(
      'SELECT DISTINCT client_id FROM client_metadata WHERE split_name = ?',
      (split,),
  ):
    if not isinstance(cid, str):
      raise DataError(
          f'{path}: client_metadata holds a client_id of split '
          f'{split} that is {_sql_type(cid)}, expected TEXT.'
      )
    ids.append(cid)
  return ids


def _read_protos(
    connection: sqlite3.Connection, path: str, split: str, cid: str
) -> list[bytes]:
  protos = []
  for (proto,) in connection.execute(
      'SELECT serialized_example_proto FROM examples WHERE client_id = ? AND '
      'split_name = ?',
      (cid, split),
  ):
    if not isinstance(proto, bytes):
      raise DataError(
          f'{path}: an example of client {cid!r} in split {split} '
          f'is {_sql_type(proto)}, expected a BLOB holding a '
          'serialized tf.train.Example.'
      )
    protos.append(proto)
  if not protos:
    raise DataError(f'{path}: client {cid!r} has no {split} examples.')
  return protos


def _parse(
    protos: list[bytes], features: dict, path: str, split: str, cid: str
) -> dict[str, np.ndarray]:
  try:
    parsed = tf.io.parse_example(tf.constant(protos, dtype=tf.string), features)
    return {key: value.numpy() for key, value in parsed.items()}
  except (tf.errors.OpError, ValueError, TypeError) as e:
    detail = e.message if isinstance(e, tf.errors.OpError) else str(e)
    raise DataError(
        f'{path}: cannot parse the {split} examples of client '
        f'{cid!r} as tf.train.Example with features '
        f'{sorted(features)} ({type(e).__name__}: '
        f'{_short(detail)}).'
    ) from e


def _materialize(
    connection, path, split, client_ids, features, convert: Converter
) -> collections.OrderedDict:
  """client id -> OrderedDict(x, y) for the given clients of one split."""
  out = collections.OrderedDict()
  for cid in client_ids:
    parsed = _parse(
        _read_protos(connection, path, split, cid), features, path, split, cid
    )
    x, y = convert(parsed, f'{path}: client {cid!r} of split {split}')
    out[cid] = make_client_arrays(x, y)
  return out


def _select(ids, max_clients):
  ids = sorted(ids)
  if max_clients is not None:
    if max_clients < 1:
      raise ValueError(f'max_clients must be positive, got {max_clients}.')
    ids = ids[:max_clients]
  return ids


def _first_bad(mask: np.ndarray) -> int:
  return int(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0])


def _emnist_converter(num_classes: int) -> Converter:
  def convert(parsed, where):
    pixels, labels = parsed['pixels'], parsed['label']
    bad = ~np.isfinite(pixels)
    if np.any(bad):
      raise DataError(
          f'{where}: example {_first_bad(bad)} has NaN or Inf pixels.'
      )
    bad = (labels < 0) | (labels >= num_classes)
    if np.any(bad):
      i = _first_bad(bad)
      raise DataError(
          f'{where}: example {i} has label {int(labels[i])}, '
          f'outside [0, {num_classes - 1}].'
      )
    return pixels.astype(np.float32)[..., np.newaxis], labels.astype(np.int32)

  return convert


def _celeba_convert(parsed, where):
  image, smiling = parsed['image'], parsed['smiling']
  bad = (image < 0) | (image > 255)
  if np.any(bad):
    raise DataError(
        f'{where}: example {_first_bad(bad)} has image values outside 0..255.'
    )
  bad = (smiling != 0) & (smiling != 1)
  if np.any(bad):
    i = _first_bad(bad)
    raise DataError(
        f'{where}: example {i} has smiling = {int(smiling[i])}, '
        'expected 0 or 1.'
    )
  return (
      image.astype(np.float32) / np.float32(255.0),
      smiling.astype(np.int32),
  )


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
  split = 'digits_only' if only_digits else 'all'
  num_classes = 10 if only_digits else 62
  convert = _emnist_converter(num_classes)
  with _open_sqlite(path) as connection:
    train_ids = set(_client_ids(connection, path, f'{split}_train'))
    test_ids = set(_client_ids(connection, path, f'{split}_test'))
    if not train_ids:
      raise DataError(f'{path}: no clients in split {split}_train.')
    only_train = sorted(train_ids - test_ids)
    only_test = sorted(test_ids - train_ids)
    if only_train or only_test:
      raise DataError(
          f'{path}: clients of {split}_train and {split}_test differ (train '
          f'only: {only_train[:5]}, test only: {only_test[:5]}).'
      )
    ids = _select(train_ids, max_clients)
    train = _materialize(
        connection, path, f'{split}_train', ids, _EMNIST_FEATURES, convert
    )
    test = _materialize(
        connection, path, f'{split}_test', ids, _EMNIST_FEATURES, convert
    )
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
          + (f' First {len(ids)} sorted clients.' if max_clients else '')
      ),
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
  prefix = 'split_by_clients' if split_by_clients else 'split_by_examples'
  notes = [
      f'TFF CelebA ({prefix}) from {path}; label = smiling; image '
      '84x84x3 / 255.'
  ]
  with _open_sqlite(path) as connection:
    train_ids = set(_client_ids(connection, path, f'{prefix}_train'))
    test_ids = set(_client_ids(connection, path, f'{prefix}_test'))
    if not train_ids:
      raise DataError(f'{path}: no clients in split {prefix}_train.')
    if split_by_clients:
      ids = _select(train_ids, max_clients)
      full = _materialize(
          connection,
          path,
          f'{prefix}_train',
          ids,
          _CELEBA_FEATURES,
          _celeba_convert,
      )
    else:
      if train_ids != test_ids:
        raise DataError(
            f'{path}: clients of {prefix}_train and {prefix}_test differ.'
        )
      ids = _select(train_ids, max_clients)
      train = _materialize(
          connection,
          path,
          f'{prefix}_train',
          ids,
          _CELEBA_FEATURES,
          _celeba_convert,
      )
      test = _materialize(
          connection,
          path,
          f'{prefix}_test',
          ids,
          _CELEBA_FEATURES,
          _celeba_convert,
      )
  if split_by_clients:
    for cid, arrays in full.items():
      if arrays['y'].shape[0] < 2:
        raise DataError(
            f'{path}: client {cid!r} of {prefix}_train has '
            f'{arrays["y"].shape[0]} example; at least 2 are '
            'needed to carve its test split.'
        )
    train, test = carve_test(full, test_fraction, seed)
    notes.append(
        "TFF's test split holds other celebrities, so each train client's "
        f'test split is carved from its own data ({test_fraction:g}, at least '
        f'1 example, seed {seed}); the {len(test_ids)} test-split clients are '
        'not used.'
    )
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
