"""LEAF JSON files: reading and validating a split, converting and writing.

LEAF (Caldas et al., 2018) stores a federated split as one or more JSON files
per folder, each of the form

    {"users": [u1, u2, ...],
     "num_samples": [n1, n2, ...],
     "user_data": {u1: {"x": [...], "y": [...]}, ...}}

with the train files under `<dir>/train/*.json` and the test files under
`<dir>/test/*.json`. A user's train and test examples are in files of the
respective folders; all files of a folder are loaded and their `user_data`
merged. Every user must appear exactly once per folder and in both folders.

`read_leaf_split` reads one folder; `float_features`, `int_labels` and
`signed_labels` convert a user's raw x and y to numpy arrays;
`write_leaf_split` writes client arrays as one such file. The dataset
loaders are in `tff_ditto.data.leaf`.

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
from tff_ditto.data.errors import file_error

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
    raise file_error(
        path,
        f'key {e.args[0]!r} appears twice in one JSON object '
        '(e.g. a user listed twice in user_data).',
    ) from e
  except json.JSONDecodeError as e:
    raise file_error(path, f'malformed JSON ({e}).') from e
  except UnicodeDecodeError as e:
    raise file_error(path, f'not UTF-8 text ({e}).') from e
  except ValueError as e:  # e.g. an integer literal over 4300 digits
    raise file_error(path, f'unreadable JSON value ({e}).') from e
  except RecursionError as e:
    raise file_error(path, 'JSON nested too deeply to parse.') from e
  except OSError as e:
    raise file_error(path, f'cannot read file ({e}).') from e


def _check_file_structure(path: str, blob: Any) -> None:
  """Checks the users / num_samples / user_data consistency of one file."""
  if not isinstance(blob, dict):
    raise file_error(
        path, f'top level must be a JSON object, got {type(blob).__name__}.'
    )
  for key in ('users', 'num_samples', 'user_data'):
    if key not in blob:
      raise file_error(
          path,
          f'missing key {key!r} (a LEAF file needs users, '
          'num_samples and user_data).',
      )
  users, num_samples, user_data = (
      blob['users'],
      blob['num_samples'],
      blob['user_data'],
  )
  if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
    raise file_error(path, "'users' must be a list of strings.")
  if not isinstance(num_samples, list) or not all(
      isinstance(n, int) and not isinstance(n, bool) for n in num_samples
  ):
    raise file_error(path, "'num_samples' must be a list of integers.")
  if not isinstance(user_data, dict):
    raise file_error(path, "'user_data' must be an object keyed by user.")
  if len(users) != len(num_samples):
    raise file_error(
        path,
        f"'users' has {len(users)} entries but 'num_samples' "
        f'has {len(num_samples)}.',
    )
  seen = set()
  for u in users:
    if u in seen:
      raise file_error(path, f"user {u!r} is listed twice in 'users'.")
    seen.add(u)
  if seen != set(user_data):
    only_listed = sorted(seen - set(user_data))
    only_data = sorted(set(user_data) - seen)
    detail = []
    if only_listed:
      detail.append(f"in 'users' but not in 'user_data': {only_listed[:5]}")
    if only_data:
      detail.append(f"in 'user_data' but not in 'users': {only_data[:5]}")
    raise file_error(
        path, "'users' and 'user_data' disagree: " + '; '.join(detail) + '.'
    )
  for u, n in zip(users, num_samples):
    record = user_data[u]
    if not isinstance(record, dict):
      raise file_error(
          path, f'user_data[{u!r}] must be an object with x and y.'
      )
    for key in ('x', 'y'):
      if key not in record:
        raise file_error(path, f'user_data[{u!r}] is missing key {key!r}.')
      if not isinstance(record[key], list):
        raise file_error(path, f'user_data[{u!r}][{key!r}] must be a list.')
    nx, ny = len(record['x']), len(record['y'])
    if nx != ny:
      raise file_error(path, f'user {u!r}: x has {nx} examples but y has {ny}.')
    if nx != n:
      raise file_error(
          path,
          f"user {u!r}: 'num_samples' says {n} but user_data "
          f'holds {nx} examples.',
      )
    if nx == 0:
      raise file_error(path, f'user {u!r} has no examples (empty client).')


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
        raise file_error(
            path,
            f'user {u!r} also appears in {users[u].path} '
            '(duplicate user across files).',
        )
      record = blob['user_data'][u]
      users[u] = RawUser(x=record['x'], y=record['y'], path=path)
  if not users:
    raise DataError(
        f'{split_dir}: no users in any of its JSON files '
        f'({", ".join(paths)}): every file has an empty '
        "'users' list."
    )
  return users


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
      raise file_error(
          path,
          f'user {user!r}: x[{i}] is {_describe(row)}, '
          f'expected a list of {num_features} numbers.',
      )
    if len(row) != num_features:
      raise file_error(
          path,
          f'user {user!r}: each x must have {num_features} '
          f'features, but x[{i}] has {len(row)}.',
      )
  kinds = set(map(type, itertools.chain.from_iterable(x)))
  if not kinds <= {int, float}:
    for i, row in enumerate(x):
      for j, value in enumerate(row):
        if not _is_number(value):
          raise file_error(
              path,
              f'user {user!r}: x[{i}][{j}] is '
              f'{_describe(value)}, expected a number.',
          )
  try:
    array = np.asarray(x, dtype=np.float64).reshape(len(x), num_features)
  except OverflowError as e:  # an integer beyond the float64 range
    raise file_error(
        path, f'user {user!r}: x holds an integer too large for a float ({e}).'
    ) from e
  finite = np.isfinite(array)
  if not np.all(finite):
    i, j = (int(v) for v in np.argwhere(~finite)[0])
    raise file_error(
        path, f'user {user!r}: x[{i}][{j}] is {array[i, j]} (NaN or Inf).'
    )
  too_large = np.abs(array) > _FLOAT32_MAX
  if np.any(too_large):
    i, j = (int(v) for v in np.argwhere(too_large)[0])
    raise file_error(
        path,
        f'user {user!r}: x[{i}][{j}] = {array[i, j]:g} is '
        'outside the float32 range.',
    )
  return array.astype(np.float32)


def _numeric_labels(y: list, path: str, user: str) -> np.ndarray:
  """Labels as float64 [n]; each is a number or a one-element list of one."""
  items = []
  for i, v in enumerate(y):
    item = v[0] if type(v) is list and len(v) == 1 else v  # pylint: disable=unidiomatic-typecheck
    if not _is_number(item):
      raise file_error(
          path,
          f'user {user!r}: y[{i}] is {_describe(v)}, expected '
          'a number (or a one-element list of one).',
      )
    if type(item) is int and not -(2**53) <= item <= 2**53:  # pylint: disable=unidiomatic-typecheck
      raise file_error(
          path,
          f'user {user!r}: y[{i}] is {_describe(item)}, too '
          'large to be a label.',
      )
    items.append(item)
  array = np.asarray(items, dtype=np.float64).reshape(len(items))
  finite = np.isfinite(array)
  if not np.all(finite):
    bad = int(np.flatnonzero(~finite)[0])
    raise file_error(
        path, f'user {user!r}: y[{bad}] is {array[bad]} (NaN or Inf).'
    )
  return array


def int_labels(y: list, num_classes: int, path: str, user: str) -> np.ndarray:
  """Converts labels to int32 in [0, num_classes); integral floats allowed."""
  array = _numeric_labels(y, path, user)
  if not np.all(array == np.round(array)):
    bad = int(np.flatnonzero(array != np.round(array))[0])
    raise file_error(
        path, f'user {user!r}: y[{bad}] = {array[bad]} is not an integer label.'
    )
  out_of_range = (array < 0) | (array >= num_classes)
  if np.any(out_of_range):
    bad = int(np.flatnonzero(out_of_range)[0])
    raise file_error(
        path,
        f'user {user!r}: y[{bad}] = {array[bad]:g} is outside '
        f'[0, {num_classes - 1}].',
    )
  return array.astype(np.int32)


def signed_labels(y: list, path: str, user: str) -> np.ndarray:
  """Converts +-1 labels (scalars or [v] lists) to float32."""
  array = _numeric_labels(y, path, user)
  bad_mask = (array != 1.0) & (array != -1.0)
  if np.any(bad_mask):
    bad = int(np.flatnonzero(bad_mask)[0])
    raise file_error(
        path, f'user {user!r}: y[{bad}] = {array[bad]:g}, expected -1 or +1.'
    )
  return array.astype(np.float32)


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
