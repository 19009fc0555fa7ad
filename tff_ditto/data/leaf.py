"""LEAF JSON reader and the dataset-specific LEAF loaders.

LEAF (Caldas et al., 2018) stores a federated split as one or more JSON files
per folder, each of the form

    {"users": [u1, u2, ...],
     "num_samples": [n1, n2, ...],
     "user_data": {u1: {"x": [...], "y": [...]}, ...}}

with the train files under `<dir>/train/*.json` and the test files under
`<dir>/test/*.json`. A user's train and test examples are in files of the
respective folders; all files of a folder are loaded and their `user_data`
merged. Every user must appear exactly once per folder and in both folders.

Loaders here:
  * `load_femnist`: 784 floats per example -> float32 [28, 28, 1], 62 classes.
    LEAF convention kept: 1.0 = white background, ink is dark (values near
    0.0). This is the inverse of the usual MNIST convention; TFF's EMNIST
    uses the same convention as LEAF.
  * `load_celeba`: x = image file names, y = Smiling (0/1); images are read
    from an `img_align_celeba` folder, resized to 84x84 RGB, float32 / 255.
  * `load_vehicle`: 100 float features, labels +-1 (scalars or one-element
    lists), returned as float32 with label_kind='signed'. If `test/` is
    absent (the case for the real Ditto Vehicle files) a seeded per-device
    test split is carved from train.
  * `load_leaf_synthetic`: FedProx / LEAF synthetic, 60 features, 10 classes.

All problems with the input raise `DataError` naming the file (and the field
or user) at fault, with any underlying exception as its `__cause__`. The
reader is strict where `json` / numpy would silently accept bad data: a key
repeated in one JSON object (json keeps the last), features that are strings,
booleans or null (numpy converts '0.5', true and null to numbers / NaN),
non-finite values or values beyond float32, and a split whose files hold no
users at all are all errors.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np

from tff_ditto.data.errors import DataError
from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays

FEMNIST_NUM_CLASSES = 62
FEMNIST_IMAGE_SHAPE = (28, 28, 1)
CELEBA_IMAGE_SIZE = 84
VEHICLE_NUM_FEATURES = 100
SYNTHETIC_NUM_FEATURES = 60
SYNTHETIC_NUM_CLASSES = 10
DEFAULT_VEHICLE_TEST_FRACTION = 0.25

# Names of the two split folders of a LEAF dataset.
_SPLITS = ('train', 'test')
# Features are returned as float32: finite values beyond this are rejected.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class RawUser:
  """One user's raw JSON data and the file it came from."""

  x: list
  y: list
  path: str


# A converter turns one user's raw (x, y) into numpy arrays, raising DataError
# (it is given the file path and user for the message).
Converter = Callable[[list, list, str, str], tuple[np.ndarray, np.ndarray]]


def _fail(path: str, message: str) -> DataError:
  return DataError(f'{path}: {message}')


def _json_files(split_dir: str) -> list[str]:
  if not os.path.isdir(split_dir):
    raise DataError(f'{split_dir}: directory not found.')
  paths = sorted(glob.glob(os.path.join(glob.escape(split_dir), '*.json')))
  if not paths:
    raise DataError(f'{split_dir}: no *.json files in this directory.')
  return paths


class _DuplicateKeyError(ValueError):
  """A JSON object holds the same key twice (json would keep the last)."""


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
  out = {}
  for key, value in pairs:
    if key in out:
      raise _DuplicateKeyError(key)
    out[key] = value
  return out


def _describe(value: Any) -> str:
  """A short description of a JSON value for error messages."""
  text = repr(value)
  if len(text) > 40:
    text = text[:37] + '...'
  return f'{type(value).__name__} {text}'


def _load_json(path: str) -> Any:
  """Parses one JSON file; every failure is a DataError naming `path`."""
  try:
    with open(path, 'rb') as f:
      return json.load(f, object_pairs_hook=_object_without_duplicate_keys)
  except _DuplicateKeyError as e:
    raise _fail(path, f'key {e.args[0]!r} appears twice in one JSON object '
                '(e.g. a user listed twice in user_data).') from e
  except json.JSONDecodeError as e:
    raise _fail(path, f'malformed JSON ({e}).') from e
  except UnicodeDecodeError as e:
    raise _fail(path, f'not UTF-8 text ({e}).') from e
  except ValueError as e:  # e.g. an integer literal over 4300 digits
    raise _fail(path, f'unreadable JSON value ({e}).') from e
  except RecursionError as e:
    raise _fail(path, 'JSON nested too deeply to parse.') from e
  except OSError as e:
    raise _fail(path, f'cannot read file ({e}).') from e


def _check_file_structure(path: str, blob: Any) -> None:
  """Checks the users / num_samples / user_data consistency of one file."""
  if not isinstance(blob, dict):
    raise _fail(path, f'top level must be a JSON object, got '
                f'{type(blob).__name__}.')
  for key in ('users', 'num_samples', 'user_data'):
    if key not in blob:
      raise _fail(path, f'missing key {key!r} (a LEAF file needs users, '
                  'num_samples and user_data).')
  users, num_samples, user_data = (
      blob['users'], blob['num_samples'], blob['user_data'])
  if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
    raise _fail(path, "'users' must be a list of strings.")
  if not isinstance(num_samples, list) or not all(
      isinstance(n, int) and not isinstance(n, bool) for n in num_samples):
    raise _fail(path, "'num_samples' must be a list of integers.")
  if not isinstance(user_data, dict):
    raise _fail(path, "'user_data' must be an object keyed by user.")
  if len(users) != len(num_samples):
    raise _fail(path, f"'users' has {len(users)} entries but 'num_samples' "
                f'has {len(num_samples)}.')
  seen = set()
  for u in users:
    if u in seen:
      raise _fail(path, f"user {u!r} is listed twice in 'users'.")
    seen.add(u)
  if seen != set(user_data):
    only_listed = sorted(seen - set(user_data))
    only_data = sorted(set(user_data) - seen)
    detail = []
    if only_listed:
      detail.append(f"in 'users' but not in 'user_data': {only_listed[:5]}")
    if only_data:
      detail.append(f"in 'user_data' but not in 'users': {only_data[:5]}")
    raise _fail(path, "'users' and 'user_data' disagree: " + '; '.join(detail)
                + '.')
  for u, n in zip(users, num_samples):
    record = user_data[u]
    if not isinstance(record, dict):
      raise _fail(path, f'user_data[{u!r}] must be an object with x and y.')
    for key in ('x', 'y'):
      if key not in record:
        raise _fail(path, f'user_data[{u!r}] is missing key {key!r}.')
      if not isinstance(record[key], list):
        raise _fail(path, f'user_data[{u!r}][{key!r}] must be a list.')
    nx, ny = len(record['x']), len(record['y'])
    if nx != ny:
      raise _fail(path, f'user {u!r}: x has {nx} examples but y has {ny}.')
    if nx != n:
      raise _fail(path, f"user {u!r}: 'num_samples' says {n} but user_data "
                  f'holds {nx} examples.')
    if nx == 0:
      raise _fail(path, f'user {u!r} has no examples (empty client).')


def read_leaf_split(split_dir: str) -> dict[str, RawUser]:
  """Reads and merges every LEAF JSON file of one split folder.

  Args:
    split_dir: A folder such as `<dataset>/train` holding `*.json` files.

  Returns:
    user id -> RawUser(x, y, path), unsorted.

  Raises:
    DataError: If the folder is missing or empty, a file is malformed or
      inconsistent, a user appears in more than one file, or no file holds
      any user.
  """
  users: dict[str, RawUser] = {}
  paths = _json_files(split_dir)
  for path in paths:
    blob = _load_json(path)
    _check_file_structure(path, blob)
    for u in blob['users']:
      if u in users:
        raise _fail(path, f'user {u!r} also appears in {users[u].path} '
                    '(duplicate user across files).')
      record = blob['user_data'][u]
      users[u] = RawUser(x=record['x'], y=record['y'], path=path)
  if not users:
    raise DataError(f'{split_dir}: no users in any of its JSON files '
                    f'({", ".join(paths)}): every file has an empty '
                    "'users' list.")
  return users


# ----------------------------------------------------------------------------
# Array conversion with validation.


def _is_number(value: Any) -> bool:
  """A JSON number: int or float, not bool (str / None / containers fail)."""
  return type(value) is int or type(value) is float  # pylint: disable=unidiomatic-typecheck


def float_features(
    x: list, num_features: int, path: str, user: str
) -> np.ndarray:
  """Converts a list of feature vectors to float32 [n, num_features].

  Every row must be a list of exactly `num_features` JSON numbers (no
  strings, booleans or nulls, which numpy would silently convert), finite
  and within the float32 range.
  """
  for i, row in enumerate(x):
    if type(row) is not list:  # pylint: disable=unidiomatic-typecheck
      raise _fail(path, f'user {user!r}: x[{i}] is {_describe(row)}, '
                  f'expected a list of {num_features} numbers.')
    if len(row) != num_features:
      raise _fail(path, f'user {user!r}: each x must have {num_features} '
                  f'features, but x[{i}] has {len(row)}.')
  kinds = set(map(type, itertools.chain.from_iterable(x)))
  if not kinds <= {int, float}:
    for i, row in enumerate(x):
      for j, value in enumerate(row):
        if not _is_number(value):
          raise _fail(path, f'user {user!r}: x[{i}][{j}] is '
                      f'{_describe(value)}, expected a number.')
  try:
    array = np.asarray(x, dtype=np.float64).reshape(len(x), num_features)
  except OverflowError as e:  # an integer beyond the float64 range
    raise _fail(path, f'user {user!r}: x holds an integer too large for a '
                f'float ({e}).') from e
  finite = np.isfinite(array)
  if not np.all(finite):
    i, j = (int(v) for v in np.argwhere(~finite)[0])
    raise _fail(path, f'user {user!r}: x[{i}][{j}] is {array[i, j]} (NaN or '
                'Inf).')
  too_large = np.abs(array) > _FLOAT32_MAX
  if np.any(too_large):
    i, j = (int(v) for v in np.argwhere(too_large)[0])
    raise _fail(path, f'user {user!r}: x[{i}][{j}] = {array[i, j]:g} is '
                'outside the float32 range.')
  return array.astype(np.float32)


def _numeric_labels(y: list, path: str, user: str) -> np.ndarray:
  """Labels as float64 [n]; each is a number or a one-element list of one."""
  items = []
  for i, v in enumerate(y):
    item = v[0] if type(v) is list and len(v) == 1 else v  # pylint: disable=unidiomatic-typecheck
    if not _is_number(item):
      raise _fail(path, f'user {user!r}: y[{i}] is {_describe(v)}, expected '
                  'a number (or a one-element list of one).')
    if type(item) is int and not -2**53 <= item <= 2**53:  # pylint: disable=unidiomatic-typecheck
      raise _fail(path, f'user {user!r}: y[{i}] is {_describe(item)}, too '
                  'large to be a label.')
    items.append(item)
  array = np.asarray(items, dtype=np.float64).reshape(len(items))
  finite = np.isfinite(array)
  if not np.all(finite):
    bad = int(np.flatnonzero(~finite)[0])
    raise _fail(path, f'user {user!r}: y[{bad}] is {array[bad]} (NaN or Inf).')
  return array


def int_labels(y: list, num_classes: int, path: str, user: str) -> np.ndarray:
  """Converts labels to int32 in [0, num_classes); integral floats allowed."""
  array = _numeric_labels(y, path, user)
  if not np.all(array == np.round(array)):
    bad = int(np.flatnonzero(array != np.round(array))[0])
    raise _fail(path, f'user {user!r}: y[{bad}] = {array[bad]} is not an '
                'integer label.')
  out_of_range = (array < 0) | (array >= num_classes)
  if np.any(out_of_range):
    bad = int(np.flatnonzero(out_of_range)[0])
    raise _fail(path, f'user {user!r}: y[{bad}] = {array[bad]:g} is outside '
                f'[0, {num_classes - 1}].')
  return array.astype(np.int32)


def signed_labels(y: list, path: str, user: str) -> np.ndarray:
  """Converts +-1 labels (scalars or [v] lists) to float32."""
  array = _numeric_labels(y, path, user)
  bad_mask = (array != 1.0) & (array != -1.0)
  if np.any(bad_mask):
    bad = int(np.flatnonzero(bad_mask)[0])
    raise _fail(path, f'user {user!r}: y[{bad}] = {array[bad]:g}, expected '
                '-1 or +1.')
  return array.astype(np.float32)


def _femnist_converter(x, y, path, user):
  features = float_features(x, 784, path, user)
  return (features.reshape((-1,) + FEMNIST_IMAGE_SHAPE),
          int_labels(y, FEMNIST_NUM_CLASSES, path, user))


def _vehicle_converter(x, y, path, user):
  return (float_features(x, VEHICLE_NUM_FEATURES, path, user),
          signed_labels(y, path, user))


def _synthetic_converter(x, y, path, user):
  return (float_features(x, SYNTHETIC_NUM_FEATURES, path, user),
          int_labels(y, SYNTHETIC_NUM_CLASSES, path, user))


# ----------------------------------------------------------------------------
# Generic loader.


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
      raise DataError(f'client {client_id!r} has {n} example(s); at least 2 '
                      'are needed to carve a test split.')
    t = min(max(1, int(round(test_fraction * n))), n - 1)
    order = np.random.default_rng([seed, index, 7]).permutation(n)
    keep, held = np.sort(order[: n - t]), np.sort(order[n - t:])
    new_train[client_id] = collections.OrderedDict(
        (k, v[keep]) for k, v in arrays.items())
    test[client_id] = collections.OrderedDict(
        (k, v[held]) for k, v in arrays.items())
  return new_train, test


def load_leaf_json(
    data_dir: str,
    converter: Converter,
    *,
    name: str,
    num_classes: int,
    label_kind: str = 'categorical',
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
    carve_test_fraction_if_missing: Optional[float] = None,
    description: str = '',
) -> FederatedDataset:
  """Loads a LEAF dataset folder (`train/` and `test/`) into a FederatedDataset.

  Args:
    data_dir: Folder holding `train/*.json` and `test/*.json`.
    converter: (x, y, path, user) -> (x array, y array), validating.
    name: Dataset name for the result and messages.
    num_classes: Number of classes.
    label_kind: 'categorical' or 'signed'.
    validation_fraction: Fraction of each client's train data held out as
      validation (see `carve_validation`).
    seed: Seed of the validation (and carved test) splits.
    max_clients: If set, keep only the first `max_clients` sorted client ids
      (the other users are structurally checked but not converted).
    carve_test_fraction_if_missing: If set and `test/` does not exist, carve
      this fraction of each client's train data as its test split instead of
      failing.
    description: Provenance text; deviations are appended.

  Returns:
    A FederatedDataset with clients in sorted id order.

  Raises:
    DataError: For any missing, malformed or inconsistent input.
  """
  if not os.path.isdir(data_dir):
    raise DataError(f'{data_dir}: {name} data directory not found.')
  train_dir = os.path.join(data_dir, 'train')
  test_dir = os.path.join(data_dir, 'test')
  if not os.path.isdir(train_dir):
    raise DataError(f'{train_dir}: directory not found ({name} needs '
                    f'{data_dir}/train/*.json and {data_dir}/test/*.json).')
  raw_train = read_leaf_split(train_dir)
  carve = (carve_test_fraction_if_missing is not None
           and not os.path.isdir(test_dir))
  if carve:
    raw_test = None
  else:
    raw_test = read_leaf_split(test_dir)
    for u in sorted(raw_test):
      if u not in raw_train:
        raise _fail(raw_test[u].path, f'user {u!r} is in the test split but '
                    f'not in any train file under {train_dir}.')
    for u in sorted(raw_train):
      if u not in raw_test:
        raise _fail(raw_train[u].path, f'user {u!r} is in the train split but '
                    f'not in any test file under {test_dir}.')

  client_ids = sorted(raw_train)
  if max_clients is not None:
    if max_clients < 1:
      raise ValueError(f'max_clients must be positive, got {max_clients}.')
    client_ids = client_ids[:max_clients]

  def convert(raw: dict[str, RawUser]) -> collections.OrderedDict:
    out = collections.OrderedDict()
    for u in client_ids:
      r = raw[u]
      x, y = converter(r.x, r.y, r.path, u)
      out[u] = make_client_arrays(x, y)
    return out

  train = convert(raw_train)
  notes = [description] if description else []
  if carve:
    for u, arrays in train.items():
      if arrays['y'].shape[0] < 2:
        raise _fail(raw_train[u].path, f'user {u!r} has '
                    f'{arrays["y"].shape[0]} example; at least 2 are needed to '
                    f'carve its test split ({test_dir} is absent).')
    train, test = carve_test(train, carve_test_fraction_if_missing, seed)
    notes.append(
        f'DEVIATION: {test_dir} is absent, so each client\'s test split was '
        f'carved from its train data ({carve_test_fraction_if_missing:.0%} '
        f'per client, at least 1 example, seed {seed}).')
  else:
    test = convert(raw_test)
  train, validation = carve_validation(train, validation_fraction, seed)
  notes.append(f'Read from {os.path.abspath(data_dir)}; validation = '
               f'{validation_fraction:g} of each client\'s train data '
               f'(seed {seed}).')
  if max_clients is not None:
    notes.append(f'Restricted to the first {len(client_ids)} sorted client '
                 'ids (max_clients).')
  return FederatedDataset(
      name=name,
      train=train,
      validation=validation,
      test=test,
      num_classes=num_classes,
      label_kind=label_kind,
      description=' '.join(notes),
  )


# ----------------------------------------------------------------------------
# Dataset-specific loaders.


def load_femnist(
    data_dir: str,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Loads LEAF FEMNIST: x float32 [n, 28, 28, 1], y int32 in [0, 62).

  Pixels keep the LEAF convention: values in [0, 1] with 1.0 = white
  background and dark ink. Labels: 0-9 digits, 10-35 'A'-'Z', 36-61 'a'-'z'.
  """
  return load_leaf_json(
      data_dir,
      _femnist_converter,
      name='femnist',
      num_classes=FEMNIST_NUM_CLASSES,
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
      description=('LEAF FEMNIST (per-writer split; pixels in [0, 1], 1.0 = '
                   'background).'),
  )


def load_vehicle(
    data_dir: str,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
    test_fraction: float = DEFAULT_VEHICLE_TEST_FRACTION,
) -> FederatedDataset:
  """Loads the Ditto / q-FFL Vehicle data: x float32 [n, 100], y float32 +-1.

  Labels may be stored as scalars or one-element lists ([-1] / [1]). If
  `<data_dir>/test` is absent (the test split of the real data is lost, see
  leaf_data/README.md), each sensor's test split is carved from its train
  data: `test_fraction` of it, at least one example, seeded by `seed`; the
  deviation is recorded in `description`.
  """
  return load_leaf_json(
      data_dir,
      _vehicle_converter,
      name='vehicle',
      num_classes=2,
      label_kind='signed',
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
      carve_test_fraction_if_missing=test_fraction,
      description='Vehicle sensor network (23 sensors, labels +-1).',
  )


def load_leaf_synthetic(
    data_dir: str,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Loads LEAF / FedProx synthetic JSON: x float32 [n, 60], y int32 [0, 10)."""
  return load_leaf_json(
      data_dir,
      _synthetic_converter,
      name='leaf_synthetic',
      num_classes=SYNTHETIC_NUM_CLASSES,
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
      description='LEAF/FedProx synthetic data read from JSON.',
  )


def celeba_image_dir_candidates(
    data_dir: str, images_dir: Optional[str] = None
) -> list[str]:
  """Where `load_celeba` looks for `img_align_celeba`, in order."""
  if images_dir is not None:
    return [images_dir]
  return [
      os.path.join(data_dir, 'raw', 'img_align_celeba'),
      os.path.join(data_dir, 'img_align_celeba'),
      os.path.join(os.path.dirname(os.path.abspath(data_dir)), 'raw',
                   'img_align_celeba'),
  ]


def _read_image(path: str) -> np.ndarray:
  """Reads an image file as float32 [84, 84, 3] in [0, 1]."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover - PIL is installed in the venv.
    Image = None
  if Image is not None:
    with Image.open(path) as img:
      img = img.convert('RGB').resize(
          (CELEBA_IMAGE_SIZE, CELEBA_IMAGE_SIZE), Image.Resampling.BILINEAR)
      array = np.asarray(img, dtype=np.float32)
  else:  # pragma: no cover
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    image = tf.io.decode_image(tf.io.read_file(path), channels=3,
                               expand_animations=False)
    array = tf.image.resize(image, (CELEBA_IMAGE_SIZE, CELEBA_IMAGE_SIZE),
                            antialias=True).numpy().astype(np.float32)
    array = np.clip(np.round(array), 0, 255)
  return array / np.float32(255.0)


def load_celeba(
    data_dir: str,
    images_dir: Optional[str] = None,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Loads LEAF CelebA (Smiling): x float32 [n, 84, 84, 3] in [0, 1], y 0/1.

  LEAF CelebA JSON has x = image file names and y = the Smiling attribute.
  Images are read from `images_dir`, or else from the first existing of
  `<data_dir>/raw/img_align_celeba` (LEAF's layout), `<data_dir>/
  img_align_celeba`, `<data_dir>/../raw/img_align_celeba`, converted to RGB,
  resized to 84x84 (bilinear, PIL) and divided by 255. All images are held in
  memory (about 85 KB per image as float32).
  """
  candidates = celeba_image_dir_candidates(data_dir, images_dir)
  found = next((c for c in candidates if os.path.isdir(c)), None)
  if found is None:
    raise DataError(
        'CelebA image directory (img_align_celeba) not found; looked in: '
        + ', '.join(candidates) + '. Download img_align_celeba from the '
        'CelebA site (see leaf_data/README.md) or pass images_dir.')

  def converter(x, y, path, user):
    if not all(isinstance(name, str) for name in x):
      raise _fail(path, f'user {user!r}: CelebA x must be image file names.')
    images = np.empty((len(x), CELEBA_IMAGE_SIZE, CELEBA_IMAGE_SIZE, 3),
                      np.float32)
    for i, image_name in enumerate(x):
      image_path = os.path.join(found, image_name)
      if not os.path.isfile(image_path):
        raise _fail(path, f'user {user!r}: image {image_path} not found.')
      try:
        images[i] = _read_image(image_path)
      except Exception as e:  # pylint: disable=broad-except
        raise _fail(path, f'user {user!r}: cannot decode image {image_path} '
                    f'({e}).') from e
    return images, int_labels(y, 2, path, user)

  return load_leaf_json(
      data_dir,
      converter,
      name='celeba',
      num_classes=2,
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
      description=(f'LEAF CelebA, Smiling task; images from {found} resized '
                   'to 84x84x3, float32 in [0, 1].'),
  )


def write_leaf_split(
    path: str,
    arrays_by_user: Mapping[str, Mapping[str, np.ndarray]],
    users: Optional[Sequence[str]] = None,
) -> None:
  """Writes client arrays as one LEAF JSON file (x flattened per example)."""
  users = list(arrays_by_user) if users is None else list(users)
  user_data = collections.OrderedDict()
  for u in users:
    x = np.asarray(arrays_by_user[u]['x'])
    y = np.asarray(arrays_by_user[u]['y'])
    user_data[u] = {
        'x': x.reshape((x.shape[0], -1)).tolist(),
        'y': y.tolist(),
    }
  blob = {
      'users': users,
      'num_samples': [len(user_data[u]['y']) for u in users],
      'user_data': user_data,
  }
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(blob, f)
