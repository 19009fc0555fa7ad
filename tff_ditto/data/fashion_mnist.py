"""Fashion-MNIST partitioned over 500 devices with Ditto's recipe.

Recipe (Ditto, `data/fmnist/create_dataset.py`; re-implemented here):
  1. Pixels as float in 0..255; per-pixel mean `mu` and std `sigma` over the
     train pool; train and test become `(X - mu) / (sigma + 0.001)`.
  2. Images grouped by class in their order in the pool.
  3. `RandomState(233)`: device sizes `lognormal(3, 1, 500) + 10`, rescaled
     to sum to 60,000 (floats).
  4. Device u, in order: proportions `lognormal(1, 1, 5)` normalised; for
     j = 0..4, class `(u + j) % 10` gets `int(p_j n_u) + 1` train and
     `int(p_j n_u / 6) + 1` test images, taken from running per-class
     pointers (train and test separately) that restart at 0 when the next
     block would run past the end of the class (images are reused).
  Totals: 61,251 train and 11,254 test examples (they depend only on the
  random draws, not on the images).

Deviations: the recipe's unseeded `random.shuffle` of each device's train
data is replaced by a permutation seeded by (seed, device). If a block is
longer than its whole class pool (only possible with tiny pools, e.g. in
tests) the class is cycled so the counts stay exact.

Sources, first found in `data_dir` wins (or pick one with `source=`):
  * 'idx': the four official files `train-images-idx3-ubyte`,
    `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
    `t10k-labels-idx1-ubyte` (each optionally `.gz`). The original image
    order: this is the exact Ditto partition.
  * 'npz': `fashion_mnist_70k_from_pflib60.npz` (x uint8 [70000, 28, 28], y,
    orig_split: 0 = official train, 1 = official test, 2 = ambiguous) or any
    .npz with x_train / y_train / x_test / y_test. For the pflib pool, split 0
    (59,160 images) is the train pool and split 1 (9,680) the test pool, the
    1,160 ambiguous images are left out unless `include_ambiguous` (then they
    join the train pool). The within-class image order differs from the
    official files, so the partition is equivalent, not identical, to Ditto's.
  * 'tfds': a prepared TFDS folder `<data_dir>/fashion_mnist/<version>/`
    (read with `download=False`; TFDS stores the examples in its own order).
"""

from __future__ import annotations

import collections
import glob
import gzip
import math
import os
import zlib
from typing import Optional

import numpy as np

from tff_ditto.data.errors import DataError
from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays

NUM_CLASSES = 10
NUM_DEVICES = 500
PARTITION_SEED = 233
TOTAL_TRAIN = 60000
CLASSES_PER_DEVICE = 5
PFLIB_NPZ = 'fashion_mnist_70k_from_pflib60.npz'
IDX_FILES = collections.OrderedDict(
    train_images='train-images-idx3-ubyte',
    train_labels='train-labels-idx1-ubyte',
    test_images='t10k-images-idx3-ubyte',
    test_labels='t10k-labels-idx1-ubyte',
)
SOURCES = ('idx', 'npz', 'tfds')


# ----------------------------------------------------------------------------
# idx parsing.


def read_idx(path: str, expected_ndim: Optional[int] = None) -> np.ndarray:
  """Parses an (optionally gzipped) idx file of unsigned bytes, strictly.

  Raises:
    DataError: naming `path`, for a bad magic number, unexpected number of
      dimensions, truncated / over-long data, or a corrupt gzip stream.
  """
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        data = f.read()
    else:
      with open(path, 'rb') as f:
        data = f.read()
  except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError.
    what = (
        'corrupt or truncated gzip data'
        if path.endswith('.gz')
        else ('cannot read idx file')
    )
    raise DataError(f'{path}: {what} ({type(e).__name__}: {e}).') from e
  if len(data) < 4:
    raise DataError(f'{path}: truncated idx header ({len(data)} bytes).')
  if data[0] != 0 or data[1] != 0:
    raise DataError(
        f'{path}: bad idx magic number {data[:4].hex()} (must '
        'start with two zero bytes).'
    )
  if data[2] != 0x08:
    raise DataError(
        f'{path}: idx data type 0x{data[2]:02x} not supported '
        '(expected 0x08, unsigned byte).'
    )
  ndim = data[3]
  if ndim == 0 or (expected_ndim is not None and ndim != expected_ndim):
    raise DataError(
        f'{path}: idx file has {ndim} dimensions, expected {expected_ndim}.'
    )
  header = 4 + 4 * ndim
  if len(data) < header:
    raise DataError(f'{path}: truncated idx header.')
  if ndim > 32:  # numpy's limit; no idx file has that many.
    raise DataError(
        f'{path}: idx file has {ndim} dimensions (at most 32 supported).'
    )
  dims = tuple(
      int.from_bytes(data[4 + 4 * i : 8 + 4 * i], 'big') for i in range(ndim)
  )
  size = math.prod(dims)  # Python ints: no int64 wrap-around.
  body = len(data) - header
  if body < size:
    raise DataError(
        f'{path}: truncated idx data: dims {dims} need {size} '
        f'bytes, file has {body}.'
    )
  if body > size:
    raise DataError(
        f'{path}: {body - size} unexpected trailing bytes after '
        f'idx data of dims {dims}.'
    )
  return np.frombuffer(data, np.uint8, size, header).reshape(dims)


def _find_idx(data_dir: str) -> dict[str, Optional[str]]:
  found = {}
  for key, base in IDX_FILES.items():
    found[key] = None
    for candidate in (base, base + '.gz'):
      path = os.path.join(data_dir, candidate)
      if os.path.isfile(path):
        found[key] = path
        break
  return found


def _check_pool(images, labels, split, where, labels_where=None):
  """Checks one pool; `labels_where` names the labels file (default `where`)."""
  labels_where = where if labels_where is None else labels_where
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise DataError(
        f'{where}: {split} images must be [N, 28, 28], got {images.shape}.'
    )
  if labels.shape != (images.shape[0],):
    raise DataError(
        f'{labels_where}: {split} has {images.shape[0]} images '
        f'but labels of shape {labels.shape}.'
    )
  if images.shape[0] == 0:
    raise DataError(f'{where}: {split} pool is empty.')
  if labels.min() < 0 or labels.max() >= NUM_CLASSES:
    bad = int(np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))[0])
    raise DataError(
        f'{labels_where}: {split} label {int(labels[bad])} at '
        f'index {bad} is outside [0, 9].'
    )
  missing = sorted(set(range(NUM_CLASSES)) - set(np.unique(labels).tolist()))
  if missing:
    raise DataError(
        f'{labels_where}: {split} pool has no images of class(es) {missing}.'
    )


def _load_idx(data_dir: str):
  paths = _find_idx(data_dir)
  missing = [IDX_FILES[k] + '[.gz]' for k, v in paths.items() if v is None]
  if missing:
    raise DataError(f'{data_dir}: idx files missing: {missing}.')
  pools = {}
  for split in ('train', 'test'):
    images = read_idx(paths[f'{split}_images'], 3)
    labels = read_idx(paths[f'{split}_labels'], 1)
    if labels.shape[0] != images.shape[0]:
      raise DataError(
          f'{paths[split + "_labels"]}: {labels.shape[0]} labels '
          f'but {paths[split + "_images"]} has {images.shape[0]} '
          'images.'
      )
    _check_pool(
        images,
        labels.astype(np.int64),
        split,
        paths[f'{split}_images'],
        paths[f'{split}_labels'],
    )
    pools[split] = (images, labels.astype(np.int64))
  note = (
      'Source: official idx files in '
      + os.path.abspath(data_dir)
      + ' (original image order).'
  )
  return pools['train'], pools['test'], note


def _find_npz(data_dir: str) -> Optional[str]:
  preferred = os.path.join(data_dir, PFLIB_NPZ)
  if os.path.isfile(preferred):
    return preferred
  candidates = sorted(glob.glob(os.path.join(glob.escape(data_dir), '*.npz')))
  return candidates[0] if len(candidates) == 1 else None


def _load_npz(path: str, include_ambiguous: bool):
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path}: cannot read npz ({e}).') from e
  if {'x', 'y', 'orig_split'} <= set(arrays):
    x = _npz_images(arrays, 'x', path)
    y = _npz_integers(arrays, 'y', path)
    split = _npz_integers(arrays, 'orig_split', path)
    if not (x.shape[0] == y.shape[0] == split.shape[0]):
      raise DataError(f'{path}: x, y and orig_split differ in length.')
    train_mask = split == 0
    if include_ambiguous:
      train_mask |= split == 2
    train = (x[train_mask], y[train_mask])
    test = (x[split == 1], y[split == 1])
    note = (
        f'Source: pooled npz {path}: orig_split 0 '
        + ('and 2 (ambiguous) ' if include_ambiguous else '')
        + f'as train pool ({train[0].shape[0]} images), 1 as test pool '
        f'({test[0].shape[0]}). DEVIATION: the official within-class '
        'image order is lost, so the partition is equivalent to, not '
        "identical with, Ditto's"
        + (
            ''
            if include_ambiguous
            else '; the 1,160 ambiguous-split images are unused'
        )
        + '.'
    )
  elif {'x_train', 'y_train', 'x_test', 'y_test'} <= set(arrays):
    train = (
        _npz_images(arrays, 'x_train', path),
        _npz_integers(arrays, 'y_train', path),
    )
    test = (
        _npz_images(arrays, 'x_test', path),
        _npz_integers(arrays, 'y_test', path),
    )
    note = f'Source: npz {path} (x_train / y_train / x_test / y_test).'
  else:
    raise DataError(
        f'{path}: npz needs keys (x, y, orig_split) or (x_train, '
        f'y_train, x_test, y_test); found {sorted(arrays)}.'
    )
  pools = []
  for name, (images, labels) in (('train', train), ('test', test)):
    if images.ndim == 4 and images.shape[-1] == 1:
      images = images[..., 0]
    _check_pool(images, labels, name, path)
    pools.append((images, labels))
  return pools[0], pools[1], note


def _npz_images(arrays, key, path):
  images = arrays[key]
  if images.dtype != np.uint8:
    raise DataError(
        f'{path}: {key!r} (images) must be uint8, got {images.dtype}.'
    )
  if images.ndim not in (3, 4):
    raise DataError(
        f'{path}: {key!r} (images) must be [N, 28, 28], got '
        f'shape {images.shape}.'
    )
  return images


def _npz_integers(arrays, key, path):
  values = arrays[key]
  if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
    raise DataError(
        f'{path}: {key!r} must be a 1-D integer array, got '
        f'dtype {values.dtype} and shape {values.shape}.'
    )
  if values.dtype == np.uint64 and values.size and values.max() > 2**62:
    raise DataError(f'{path}: {key!r} holds values too large to be labels.')
  return values.astype(np.int64)


def _load_tfds(data_dir: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  try:
    train, test = tfds.load(
        'fashion_mnist',
        split=['train', 'test'],
        data_dir=data_dir,
        download=False,
        batch_size=-1,
        as_supervised=True,
    )
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(
        f'{os.path.join(data_dir, "fashion_mnist")}: cannot read the TFDS '
        f'fashion_mnist dataset with download=False ({type(e).__name__}: '
        f'{e}).'
    ) from e
  pools = []
  for name, (images, labels) in (('train', train), ('test', test)):
    images = tfds.as_numpy(images)
    labels = tfds.as_numpy(labels).astype(np.int64)
    if images.ndim == 4 and images.shape[-1] == 1:
      images = images[..., 0]
    _check_pool(images, labels, name, os.path.join(data_dir, 'fashion_mnist'))
    pools.append((images.astype(np.uint8), labels))
  note = (
      f'Source: TFDS fashion_mnist in {os.path.abspath(data_dir)} '
      '(TFDS example order).'
  )
  return pools[0], pools[1], note


def detect_source(data_dir: str) -> Optional[str]:
  """The source `load_fashion_mnist` would use: 'idx', 'npz', 'tfds' or None."""
  if all(v is not None for v in _find_idx(data_dir).values()):
    return 'idx'
  if _find_npz(data_dir) is not None:
    return 'npz'
  if os.path.isdir(os.path.join(data_dir, 'fashion_mnist')):
    return 'tfds'
  return None


def load_pools(
    data_dir: str, source: Optional[str] = None, include_ambiguous: bool = False
):
  """Returns ((train_x, train_y), (test_x, test_y), note); x uint8 [N,28,28]."""
  if not os.path.isdir(data_dir):
    raise DataError(f'{data_dir}: Fashion-MNIST data directory not found.')
  if source is None:
    source = detect_source(data_dir)
    if source is None:
      raise DataError(
          f'{data_dir}: no Fashion-MNIST source found; expected the four idx '
          f'files ({", ".join(IDX_FILES.values())}, optionally .gz), '
          f'{PFLIB_NPZ}, or a TFDS folder fashion_mnist/ (see '
          'leaf_data/README.md).'
      )
  if source == 'idx':
    return _load_idx(data_dir)
  if source == 'npz':
    path = _find_npz(data_dir)
    if path is None:
      raise DataError(f'{data_dir}: no (single) .npz file found.')
    return _load_npz(path, include_ambiguous)
  if source == 'tfds':
    return _load_tfds(data_dir)
  raise ValueError(f'Unknown source {source!r}; expected one of {SOURCES}.')


# ----------------------------------------------------------------------------
# Partition.


def partition_indices(
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    num_devices: int = NUM_DEVICES,
    seed: int = PARTITION_SEED,
    *,
    classes_per_device: int = CLASSES_PER_DEVICE,
    total_train: int = TOTAL_TRAIN,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Ditto's partition as index lists into the train and test pools.

  Returns:
    (train_indices, test_indices): per device, int64 indices into the pools,
    grouped by the device's classes in order (not shuffled).
  """
  rs = np.random.RandomState(seed)
  sizes = rs.lognormal(3, 1, num_devices) + 10
  sizes = sizes / sizes.sum() * total_train
  by_class = {
      'train': [np.flatnonzero(train_labels == c) for c in range(NUM_CLASSES)],
      'test': [np.flatnonzero(test_labels == c) for c in range(NUM_CLASSES)],
  }
  pointers = {'train': [0] * NUM_CLASSES, 'test': [0] * NUM_CLASSES}

  def take(split, c, count):
    pool = by_class[split][c]
    start = pointers[split][c]
    if start + count > len(pool):
      start = 0
    if count <= len(pool):
      chosen = pool[start : start + count]
    else:  # Tiny pools only: cycle through the class.
      chosen = pool[np.arange(count) % len(pool)]
    pointers[split][c] = start + count
    return chosen

  train_indices, test_indices = [], []
  for u in range(num_devices):
    props = rs.lognormal(1, 1, classes_per_device)
    props = props / props.sum()
    train_parts, test_parts = [], []
    for j in range(classes_per_device):
      c = (u + j) % NUM_CLASSES
      train_parts.append(take('train', c, int(props[j] * sizes[u]) + 1))
      test_parts.append(take('test', c, int(props[j] * sizes[u] / 6) + 1))
    train_indices.append(np.concatenate(train_parts).astype(np.int64))
    test_indices.append(np.concatenate(test_parts).astype(np.int64))
  return train_indices, test_indices


def device_id(u: int) -> str:
  return f'f_{u:05d}'


def load_fashion_mnist(
    data_dir: str,
    num_devices: int = NUM_DEVICES,
    seed: int = PARTITION_SEED,
    *,
    source: Optional[str] = None,
    include_ambiguous: bool = False,
    standardize: bool = True,
    total_train: int = TOTAL_TRAIN,
    validation_fraction: float = 0.1,
    validation_seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Fashion-MNIST over `num_devices` devices, Ditto's recipe.

  Args:
    data_dir: Folder with one of the sources (see module docstring).
    num_devices: Number of devices (500 in the paper).
    seed: Partition seed (233 in the paper).
    source: 'idx', 'npz' or 'tfds'; None picks the first present in that
      order.
    include_ambiguous: For the pflib npz, add the 1,160 ambiguous images to
      the train pool.
    standardize: Apply `(X - mu) / (sigma + 0.001)` with the train pool's
      per-pixel statistics (as Ditto); if False, pixels / 255.
    total_train: The device sizes are rescaled to sum to this (60,000 in the
      paper; smaller values give a smaller dataset, e.g. for tests).
    validation_fraction: Fraction of each device's train data held out.
    validation_seed: Seed of the validation split and train shuffle.
    max_clients: Keep only the first N devices (the partition of all
      `num_devices` is still drawn, so these devices are the same).

  Returns:
    FederatedDataset 'fmnist', x float32 [n, 28, 28, 1], y int32.
  """
  (train_x, train_y), (test_x, test_y), note = load_pools(
      data_dir, source, include_ambiguous
  )
  train_idx, test_idx = partition_indices(
      train_y, test_y, num_devices, seed, total_train=total_train
  )
  count = num_devices if max_clients is None else min(max_clients, num_devices)
  if count < 1:
    raise ValueError(f'max_clients must be positive, got {max_clients}.')

  flat = train_x.reshape(train_x.shape[0], -1)
  if standardize:
    mu = flat.mean(axis=0, dtype=np.float64)
    sigma = flat.std(axis=0, dtype=np.float64)
    scale = (1.0 / (sigma + 0.001)).astype(np.float32)
    shift = mu.astype(np.float32)
  else:
    scale = np.full(784, 1.0 / 255.0, np.float32)
    shift = np.zeros(784, np.float32)

  def features(pool, idx):
    x = pool.reshape(pool.shape[0], -1)[idx].astype(np.float32)
    return ((x - shift) * scale).reshape(-1, 28, 28, 1)

  train = collections.OrderedDict()
  test = collections.OrderedDict()
  for u in range(count):
    order = np.random.default_rng([validation_seed, u, 3]).permutation(
        len(train_idx[u])
    )
    idx = train_idx[u][order]
    train[device_id(u)] = make_client_arrays(
        features(train_x, idx), train_y[idx].astype(np.int32)
    )
    test[device_id(u)] = make_client_arrays(
        features(test_x, test_idx[u]), test_y[test_idx[u]].astype(np.int32)
    )
  train, validation = carve_validation(
      train, validation_fraction, validation_seed
  )
  description = (
      f'Fashion-MNIST, Ditto partition: {num_devices} devices, seed {seed}, '
      f'{CLASSES_PER_DEVICE} classes per device, sizes scaled to '
      f'{total_train} train examples; '
      + (
          'standardized with train-pool per-pixel mean/std. '
          if standardize
          else 'pixels / 255. '
      )
      + note
      + f' Validation = {validation_fraction:g} of train (seed '
      f'{validation_seed}); train order shuffled with a seeded permutation.'
      + (f' First {count} devices only.' if max_clients is not None else '')
  )
  return FederatedDataset(
      name='fmnist',
      train=train,
      validation=validation,
      test=test,
      num_classes=NUM_CLASSES,
      description=description,
  )
