"""Tests of the Fashion-MNIST sources (idx, npz, TFDS) and Ditto's partition."""

import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tff_ditto.data import DataError
from tff_ditto.data import fashion_mnist as fm

REAL_NPZ_DIR = '/work/shared/data/fmnist'
REAL_NPZ = os.path.join(REAL_NPZ_DIR, fm.PFLIB_NPZ)


def _idx_bytes(array):
  header = bytes([0, 0, 0x08, array.ndim])
  for d in array.shape:
    header += int(d).to_bytes(4, 'big')
  return header + array.astype(np.uint8).tobytes()


def _write_idx(path, array, gz=False):
  data = _idx_bytes(array)
  if gz:
    with gzip.open(path + '.gz', 'wb') as f:
      f.write(data)
    return path + '.gz'
  with open(path, 'wb') as f:
    f.write(data)
  return path


def _pool(per_class, seed):
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(10), per_class)
  rng.shuffle(labels)
  images = rng.integers(0, 256, (labels.size, 28, 28), dtype=np.uint8)
  return images, labels.astype(np.uint8)


def _write_idx_dir(root, gz=False, train_per_class=30, test_per_class=8):
  os.makedirs(root, exist_ok=True)
  (trx, tr_y), (tex, te_y) = (
      _pool(train_per_class, 0),
      _pool(test_per_class, 1),
  )
  names = fm.IDX_FILES
  _write_idx(os.path.join(root, names['train_images']), trx, gz)
  _write_idx(os.path.join(root, names['train_labels']), tr_y, gz)
  _write_idx(os.path.join(root, names['test_images']), tex, gz)
  _write_idx(os.path.join(root, names['test_labels']), te_y, gz)
  return (trx, tr_y), (tex, te_y)


# ----------------------------------------------------------------------------
# idx parser.


@pytest.mark.parametrize('gz', [False, True])
def test_read_idx_round_trip(tmp_path, gz):
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  path = _write_idx(str(tmp_path / 'a-idx3-ubyte'), array, gz)
  np.testing.assert_array_equal(fm.read_idx(path, 3), array)


def _bad_idx_cases():
  good = _idx_bytes(np.zeros((2, 28, 28), np.uint8))
  return {
      'bad_magic': (b'\x01' + good[1:], 'magic'),
      'wrong_type': (good[:2] + b'\x0d' + good[3:], 'data type'),
      'wrong_ndim': (_idx_bytes(np.zeros((2, 784), np.uint8)), 'dimensions'),
      'truncated_header': (good[:10], 'truncated'),
      'truncated_data': (good[:-5], 'truncated'),
      'trailing_bytes': (good + b'\x00\x00', 'trailing'),
      'empty': (b'', 'truncated'),
  }


@pytest.mark.parametrize('case', sorted(_bad_idx_cases()))
def test_read_idx_rejects(tmp_path, case):
  data, words = _bad_idx_cases()[case]
  path = str(tmp_path / 'train-images-idx3-ubyte')
  with open(path, 'wb') as f:
    f.write(data)
  with pytest.raises(DataError, match=words) as info:
    fm.read_idx(path, 3)
  assert path in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
  path = str(tmp_path / 'train-labels-idx1-ubyte.gz')
  with open(path, 'wb') as f:
    f.write(b'\x1f\x8b\x08\x00garbage')
  with pytest.raises(DataError, match='train-labels-idx1-ubyte.gz'):
    fm.read_idx(path, 1)


def test_idx_label_image_count_mismatch(tmp_path):
  root = str(tmp_path)
  _write_idx_dir(root)
  _write_idx(
      os.path.join(root, fm.IDX_FILES['test_labels']), np.zeros(7, np.uint8)
  )
  with pytest.raises(DataError, match='t10k-labels-idx1-ubyte'):
    fm.load_fashion_mnist(root, num_devices=5)


# ----------------------------------------------------------------------------
# Partition.


def test_partition_totals_match_reference():
  """Counts depend only on the seed-233 draws: 61,251 train / 11,254 test."""
  train_y = np.repeat(np.arange(10), 6000)
  test_y = np.repeat(np.arange(10), 1000)
  train_idx, test_idx = fm.partition_indices(train_y, test_y)
  train_sizes = np.array([len(i) for i in train_idx])
  test_sizes = np.array([len(i) for i in test_idx])
  assert len(train_idx) == 500
  assert train_sizes.sum() == 61251 and test_sizes.sum() == 11254
  assert (
      train_sizes.min(),
      int(np.median(train_sizes)),
      train_sizes.max(),
  ) == (31, 88, 1378)
  assert int(np.median(test_sizes)) == 17
  for u in range(500):
    expected = {(u + j) % 10 for j in range(5)}
    assert set(train_y[train_idx[u]].tolist()) == expected
    assert set(test_y[test_idx[u]].tolist()) == expected


def test_partition_pointer_semantics():
  """Blocks are consecutive in each class; a block that would overflow
  restarts the class at 0."""
  per_class = 100
  train_y = np.repeat(np.arange(10), per_class)
  test_y = np.repeat(np.arange(10), 50)
  train_idx, _ = fm.partition_indices(
      train_y, test_y, num_devices=40, total_train=1500
  )
  pointer = [0] * 10
  restarts = 0
  for u in range(40):
    labels = train_y[train_idx[u]]
    for j in range(5):
      c = (u + j) % 10
      block = train_idx[u][labels == c]
      assert len(block) <= per_class  # no cycling needed at this size
      start = int(block[0]) - per_class * c
      if pointer[c] + len(block) > per_class:
        assert start == 0
        restarts += 1
      else:
        assert start == pointer[c]
      np.testing.assert_array_equal(
          block, per_class * c + start + np.arange(len(block))
      )
      pointer[c] = start + len(block)
  assert restarts > 0


def test_partition_seeded():
  train_y = np.repeat(np.arange(10), 100)
  test_y = np.repeat(np.arange(10), 20)
  a, _ = fm.partition_indices(train_y, test_y, num_devices=20, seed=233)
  b, _ = fm.partition_indices(train_y, test_y, num_devices=20, seed=233)
  c, _ = fm.partition_indices(train_y, test_y, num_devices=20, seed=1)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(
      len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c)
  )


# ----------------------------------------------------------------------------
# Loaders per source.


def test_idx_source_standardized(tmp_path):
  root = str(tmp_path)
  (trx, tr_y), _ = _write_idx_dir(root, gz=True)
  ds = fm.load_fashion_mnist(
      root, num_devices=500, max_clients=12, validation_fraction=0.0
  )
  assert 'idx' in ds.description
  assert ds.num_clients == 12 and ds.client_ids[0] == 'f_00000'
  assert ds.num_classes == 10
  flat = trx.reshape(len(trx), -1).astype(np.float64)
  mu, sigma = flat.mean(0), flat.std(0)
  for u, cid in enumerate(ds.client_ids):
    x, y = ds.train[cid]['x'], ds.train[cid]['y']
    assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1)
    assert y.dtype == np.int32
    assert set(np.unique(y).tolist()) == {(u + j) % 10 for j in range(5)}
    # Every example is a standardized pool image of the same label.
    raw = x.reshape(len(x), -1) * (sigma + 0.001) + mu
    raw = np.round(raw).astype(np.int64)
    pool_rows = {
        r.tobytes(): int(l) for r, l in zip(flat.astype(np.int64), tr_y)
    }
    assert all(pool_rows[r.tobytes()] == l for r, l in zip(raw, y))
  # Same sizes as the first 12 devices of the full partition.
  full_train, full_test = fm.partition_indices(tr_y, _pool(8, 1)[1])
  assert ds.num_train_examples().tolist() == [len(i) for i in full_train[:12]]
  assert ds.num_test_examples().tolist() == [len(i) for i in full_test[:12]]


def test_idx_deterministic_and_validation(tmp_path):
  root = str(tmp_path)
  _write_idx_dir(root)
  a = fm.load_fashion_mnist(root, num_devices=30, total_train=3000)
  b = fm.load_fashion_mnist(root, num_devices=30, total_train=3000)
  c = fm.load_fashion_mnist(
      root, num_devices=30, total_train=3000, validation_seed=1
  )
  for cid in a.client_ids:
    np.testing.assert_array_equal(a.train[cid]['x'], b.train[cid]['x'])
    np.testing.assert_array_equal(
        a.validation[cid]['y'], b.validation[cid]['y']
    )
  assert any(
      not np.array_equal(a.train[cid]['x'], c.train[cid]['x'])
      for cid in a.client_ids
  )
  assert a.num_validation_examples().sum() > 0
  assert a.num_train_examples().sum() + a.num_validation_examples().sum() < 4000


def test_unstandardized(tmp_path):
  root = str(tmp_path)
  _write_idx_dir(root)
  ds = fm.load_fashion_mnist(
      root, num_devices=10, total_train=500, standardize=False
  )
  x = ds.train['f_00000']['x']
  assert 0.0 <= x.min() and x.max() <= 1.0


def _write_pflib_npz(path, per_class=(20, 6, 3)):
  xs, ys, splits = [], [], []
  for split, n in enumerate(per_class):
    x, y = _pool(n, 10 + split)
    xs.append(x)
    ys.append(y)
    splits.append(np.full(len(y), split, np.int8))
  np.savez_compressed(
      path,
      x=np.concatenate(xs),
      y=np.concatenate(ys),
      orig_split=np.concatenate(splits),
  )


def test_npz_source_pools(tmp_path):
  root = str(tmp_path)
  _write_pflib_npz(os.path.join(root, fm.PFLIB_NPZ))
  (trx, _), (tex, _), note = fm.load_pools(root)
  assert trx.shape == (200, 28, 28) and tex.shape == (60, 28, 28)
  assert 'DEVIATION' in note and 'ambiguous' in note
  (trx2, _), _, _ = fm.load_pools(root, include_ambiguous=True)
  assert trx2.shape[0] == 230
  ds = fm.load_fashion_mnist(root, num_devices=20, total_train=2000)
  assert ds.num_clients == 20 and 'npz' in ds.description


def test_npz_keras_style(tmp_path):
  (trx, tr_y), (tex, te_y) = _pool(10, 0), _pool(3, 1)
  np.savez(
      str(tmp_path / 'fmnist.npz'),
      x_train=trx,
      y_train=tr_y,
      x_test=tex,
      y_test=te_y,
  )
  ds = fm.load_fashion_mnist(str(tmp_path), num_devices=5, total_train=300)
  assert ds.num_clients == 5


def test_npz_bad_keys(tmp_path):
  np.savez(str(tmp_path / 'other.npz'), a=np.zeros(3))
  with pytest.raises(DataError, match='other.npz'):
    fm.load_fashion_mnist(str(tmp_path))


def test_npz_missing_class(tmp_path):
  x, y = _pool(5, 0)
  keep = y != 4
  np.savez(
      str(tmp_path / 'f.npz'),
      x=x[keep],
      y=y[keep],
      orig_split=np.where(np.arange(keep.sum()) % 3 == 0, 1, 0),
  )
  with pytest.raises(DataError, match=r'f\.npz.*class'):
    fm.load_fashion_mnist(str(tmp_path))


def test_idx_preferred_over_npz(tmp_path):
  root = str(tmp_path)
  _write_idx_dir(root)
  _write_pflib_npz(os.path.join(root, fm.PFLIB_NPZ))
  assert fm.detect_source(root) == 'idx'
  ds = fm.load_fashion_mnist(root, num_devices=5, total_train=300, source='npz')
  assert 'npz' in ds.description


def test_no_source(tmp_path):
  root = str(tmp_path)
  # Only the label files, as in the shared data folder.
  _write_idx(
      os.path.join(root, fm.IDX_FILES['train_labels']),
      np.zeros(3, np.uint8),
      gz=True,
  )
  with pytest.raises(DataError, match='no Fashion-MNIST source') as info:
    fm.load_fashion_mnist(root)
  assert root in str(info.value)
  with pytest.raises(DataError, match='idx files missing'):
    fm.load_fashion_mnist(root, source='idx')
  with pytest.raises(DataError, match='not found'):
    fm.load_fashion_mnist(str(tmp_path / 'absent'))


def _prepare_tfds(data_dir, train_per_class=12, test_per_class=4):
  """Writes real TFDS fashion_mnist files with a local builder."""

  pools = {'train': _pool(train_per_class, 0), 'test': _pool(test_per_class, 1)}

  class LocalFashionMnist(
      tfds.image_classification.FashionMNIST, skip_registration=True
  ):
    name = 'fashion_mnist'

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._examples(split) for split in pools}

    def _examples(self, split):
      images, labels = pools[split]
      for i, (image, label) in enumerate(zip(images, labels)):
        yield i, {'image': image[..., np.newaxis], 'label': int(label)}

  tfds.disable_progress_bar()
  LocalFashionMnist(data_dir=data_dir).download_and_prepare()
  return pools


def test_tfds_source(tmp_path):
  root = str(tmp_path)
  pools = _prepare_tfds(root)
  assert fm.detect_source(root) == 'tfds'
  (trx, tr_y), (tex, te_y), note = fm.load_pools(root)
  assert 'TFDS' in note
  assert trx.shape == (120, 28, 28) and tex.shape == (40, 28, 28)
  # Same images (TFDS reorders them).
  key = lambda x, y: sorted((r.tobytes(), int(l)) for r, l in zip(x, y))
  assert key(trx, tr_y) == key(*pools['train'])
  assert key(tex, te_y) == key(*pools['test'])
  ds = fm.load_fashion_mnist(root, num_devices=10, total_train=600)
  assert ds.num_clients == 10 and 'TFDS' in ds.description


def test_tfds_unprepared(tmp_path):
  os.makedirs(tmp_path / 'fashion_mnist')
  with pytest.raises(DataError, match='fashion_mnist'):
    fm.load_fashion_mnist(str(tmp_path))


@pytest.mark.skipif(
    not os.path.isfile(REAL_NPZ), reason='real Fashion-MNIST pool not present'
)
def test_real_pool_partition():
  ds = fm.load_fashion_mnist(REAL_NPZ_DIR)
  print(f'\nreal Fashion-MNIST: {ds.summary()}')
  train = ds.num_train_examples() + ds.num_validation_examples()
  assert ds.num_clients == 500
  assert int(train.sum()) == 61251
  assert int(ds.num_test_examples().sum()) == 11254
  assert (int(train.min()), int(np.median(train)), int(train.max())) == (
      31,
      88,
      1378,
  )
  for u, cid in enumerate(ds.client_ids):
    labels = np.concatenate([ds.train[cid]['y'], ds.validation[cid]['y']])
    expected = {(u + j) % 10 for j in range(5)}
    assert set(np.unique(labels).tolist()) == expected
    assert set(np.unique(ds.test[cid]['y']).tolist()) == expected
  x = ds.train['f_00000']['x']
  assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1)
  assert 'npz' in ds.description and 'DEVIATION' in ds.description
