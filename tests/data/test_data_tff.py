"""Tests of the TFF SQLite loaders (EMNIST, CelebA) on tiny files, offline."""

import collections
import os
import socket
import sqlite3
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto.data import DataError
from tff_ditto.data import tff_datasets

CELEBA_ATTRIBUTES = tff.simulation.datasets.celeba.ATTRIBUTE_NAMES


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Any Python-level network access fails loudly."""

  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args!r}')

  monkeypatch.setattr(urllib.request, 'urlopen', refuse)
  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'create_connection', refuse)


def _create_tables(connection):
  connection.execute(
      'CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT '
      'NULL, serialized_example_proto BLOB NOT NULL);'
  )
  connection.execute(
      'CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT '
      'NOT NULL, num_examples INTEGER NOT NULL);'
  )


def _insert(connection, split, client_id, protos):
  connection.executemany(
      'INSERT INTO examples (split_name, client_id, serialized_example_proto) '
      'VALUES (?, ?, ?);',
      [(split, client_id, p) for p in protos],
  )
  connection.execute(
      'INSERT INTO client_metadata (client_id, split_name, num_examples) '
      'VALUES (?, ?, ?);',
      (client_id, split, len(protos)),
  )


def _emnist_proto(pixels, label):
  return tf.train.Example(
      features=tf.train.Features(
          feature={
              'pixels': tf.train.Feature(
                  float_list=tf.train.FloatList(
                      value=pixels.reshape(-1).tolist()
                  )
              ),
              'label': tf.train.Feature(
                  int64_list=tf.train.Int64List(value=[label])
              ),
          }
      )
  ).SerializeToString()


def _write_emnist(
    cache_dir, clients=('w2', 'w0', 'w1'), sizes=(4, 3, 5), test_clients=None
):
  """Same client ids in train and test, as in the real file."""
  os.makedirs(cache_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  truth = collections.defaultdict(dict)
  test_clients = clients if test_clients is None else test_clients
  with sqlite3.connect(os.path.join(cache_dir, 'emnist_all.sqlite')) as con:
    _create_tables(con)
    for prefix, num_classes in (('all', 62), ('digits_only', 10)):
      for split, ids in (('train', clients), ('test', test_clients)):
        for cid, n in zip(ids, sizes):
          n = n if split == 'train' else 2
          pixels = rng.random((n, 28, 28)).astype(np.float32)
          labels = rng.integers(0, num_classes, n)
          _insert(
              con,
              f'{prefix}_{split}',
              cid,
              [_emnist_proto(p, int(l)) for p, l in zip(pixels, labels)],
          )
          truth[(prefix, split)][cid] = (pixels, labels)
  return truth


def _sorted_rows(x, y):
  """Rows of (x, y) in a canonical order (SQLite row order is not promised)."""
  order = np.lexsort((x.reshape(len(x), -1)[:, 0], y))
  return x[order], y[order]


@pytest.mark.parametrize('only_digits', [False, True])
def test_emnist(tmp_path, only_digits):
  truth = _write_emnist(str(tmp_path))
  ds = tff_datasets.load_tff_emnist(
      str(tmp_path), only_digits=only_digits, validation_fraction=0.0
  )
  prefix = 'digits_only' if only_digits else 'all'
  assert ds.client_ids == ['w0', 'w1', 'w2']
  assert ds.num_classes == (10 if only_digits else 62)
  for split in ('train', 'test'):
    for cid in ds.client_ids:
      arrays = getattr(ds, split)[cid]
      assert arrays['x'].dtype == np.float32
      assert arrays['x'].shape[1:] == (28, 28, 1)
      assert arrays['y'].dtype == np.int32
      pixels, labels = truth[(prefix, split)][cid]
      got_x, got_y = _sorted_rows(arrays['x'][..., 0], arrays['y'])
      want_x, want_y = _sorted_rows(pixels, labels)
      np.testing.assert_array_equal(got_y, want_y)
      np.testing.assert_array_equal(got_x, want_x)


def test_emnist_validation_and_max_clients(tmp_path):
  _write_emnist(str(tmp_path))
  ds = tff_datasets.load_tff_emnist(
      str(tmp_path), validation_fraction=0.25, max_clients=2
  )
  assert ds.client_ids == ['w0', 'w1']
  assert ds.num_validation_examples().tolist() == [1, 1]
  assert (ds.num_train_examples() + ds.num_validation_examples()).tolist() == [
      3,
      5,
  ]


def test_emnist_missing_file_names_path_and_downloads_nothing(tmp_path):
  cache = tmp_path / 'cache'
  with pytest.raises(DataError) as info:
    tff_datasets.load_tff_emnist(str(cache))
  message = str(info.value)
  assert os.path.join(str(cache), 'emnist_all.sqlite') in message
  assert 'emnist_all.sqlite.lzma' in message
  assert not cache.exists()


def test_emnist_not_sqlite(tmp_path):
  (tmp_path / 'emnist_all.sqlite').write_bytes(b'not a database at all....')
  with pytest.raises(DataError, match='not an SQLite database'):
    tff_datasets.load_tff_emnist(str(tmp_path))


def test_emnist_missing_tables(tmp_path):
  with sqlite3.connect(str(tmp_path / 'emnist_all.sqlite')) as con:
    con.execute('CREATE TABLE other (a TEXT);')
  with pytest.raises(DataError, match='emnist_all.sqlite.*client_metadata'):
    tff_datasets.load_tff_emnist(str(tmp_path))


def test_emnist_client_mismatch(tmp_path):
  _write_emnist(str(tmp_path), test_clients=('w2', 'w0', 'w9'))
  with pytest.raises(DataError, match=r'emnist_all\.sqlite.*w9'):
    tff_datasets.load_tff_emnist(str(tmp_path))


def test_emnist_bad_proto(tmp_path):
  with sqlite3.connect(str(tmp_path / 'emnist_all.sqlite')) as con:
    _create_tables(con)
    for split in ('all_train', 'all_test'):
      _insert(con, split, 'w0', [b'\x00garbage'])
  with pytest.raises(DataError, match=r"emnist_all\.sqlite.*'w0'"):
    tff_datasets.load_tff_emnist(str(tmp_path))


def _celeba_dataset_fn(seed_by_client):
  def dataset_fn(client_id):
    rng = np.random.default_rng(seed_by_client[client_id])
    n = 5
    features = collections.OrderedDict()
    features['image'] = rng.integers(0, 256, (n, 84, 84, 3)).astype(np.int64)
    for name in CELEBA_ATTRIBUTES:
      features[name] = rng.integers(0, 2, n).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices(features)

  return dataset_fn


def test_celeba_split_by_clients(tmp_path):
  seeds = {'c0': 0, 'c1': 1, 'c2': 2}
  dataset_fn = _celeba_dataset_fn(seeds)
  tff.simulation.datasets.save_to_sql_client_data(
      list(seeds),
      dataset_fn,
      str(tmp_path / 'celeba.sqlite'),
      allow_overwrite=True,
      split_names_by_client_id={
          'c0': 'split_by_clients_train',
          'c1': 'split_by_clients_train',
          'c2': 'split_by_clients_test',
      },
  )
  ds = tff_datasets.load_tff_celeba(
      str(tmp_path), validation_fraction=0.0, test_fraction=0.2, seed=3
  )
  assert ds.client_ids == ['c0', 'c1']
  assert ds.num_classes == 2
  assert ds.num_test_examples().tolist() == [1, 1]
  assert ds.num_train_examples().tolist() == [4, 4]
  assert 'carved' in ds.description
  for cid in ds.client_ids:
    expected = next(iter(dataset_fn(cid).batch(100)))
    x = np.concatenate([ds.train[cid]['x'], ds.test[cid]['x']])
    y = np.concatenate([ds.train[cid]['y'], ds.test[cid]['y']])
    assert x.dtype == np.float32 and x.shape[1:] == (84, 84, 3)
    assert y.dtype == np.int32
    want_x = expected['image'].numpy().astype(np.float32) / 255.0
    want_y = expected['smiling'].numpy()
    # Compare as multisets of (image, label) rows.
    key = lambda xs, ys: sorted(
        (float(xi.sum()), int(yi)) for xi, yi in zip(xs, ys)
    )
    assert key(x, y) == key(want_x, want_y)
    assert 0.0 <= x.min() and x.max() <= 1.0
  again = tff_datasets.load_tff_celeba(
      str(tmp_path), validation_fraction=0.0, test_fraction=0.2, seed=3
  )
  np.testing.assert_array_equal(again.test['c0']['x'], ds.test['c0']['x'])


def test_celeba_split_by_examples(tmp_path):
  seeds = {'c0': 0, 'c1': 1}
  dataset_fn = _celeba_dataset_fn(seeds)
  serializer_path = str(tmp_path / 'tmp.sqlite')
  tff.simulation.datasets.save_to_sql_client_data(
      list(seeds), dataset_fn, serializer_path, allow_overwrite=True
  )
  # Copy every client's rows into both split_by_examples splits.
  with sqlite3.connect(serializer_path) as src:
    rows = src.execute(
        'SELECT client_id, serialized_example_proto FROM examples'
    ).fetchall()
  with sqlite3.connect(str(tmp_path / 'celeba.sqlite')) as con:
    _create_tables(con)
    for split in ('split_by_examples_train', 'split_by_examples_test'):
      for cid in seeds:
        _insert(con, split, cid, [p for c, p in rows if c == cid])
  ds = tff_datasets.load_tff_celeba(
      str(tmp_path), split_by_clients=False, validation_fraction=0.2
  )
  assert ds.client_ids == ['c0', 'c1']
  assert ds.num_test_examples().tolist() == [5, 5]
  assert ds.num_train_examples().tolist() == [4, 4]


def test_celeba_missing_file(tmp_path):
  with pytest.raises(DataError) as info:
    tff_datasets.load_tff_celeba(str(tmp_path))
  assert os.path.join(str(tmp_path), 'celeba.sqlite') in str(info.value)
