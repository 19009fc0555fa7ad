"""Property-based fuzz tests of the dataset loaders (hypothesis).

Formats: LEAF JSON (`leaf.load_femnist` / `load_vehicle` /
`load_leaf_synthetic` / `load_celeba`), Fashion-MNIST idx files, plain and
gzipped (`fashion_mnist.read_idx` / `load_pools` / `load_fashion_mnist`), and
TFF's SQLite files (`tff_datasets.load_tff_emnist` / `load_tff_celeba`).

Properties:
  * Round trip: random valid inputs (small user counts, odd user ids, special
    but valid numbers) load, and the arrays equal what was written.
  * Exact oracle: a random value put at (or removed from, or appended to) a
    random place of a valid LEAF file, or a random idx file, loads if and only
    if an independent validity oracle says it is valid; valid ones load the
    values written.
  * Corruption: truncation, non-UTF-8 bytes, hostile JSON text, duplicate
    users, users in one split only, empty files / users, x/y mismatches,
    ragged rows, wrong pixel counts, wrong idx magic / dims / payload size,
    corrupt gzip, files that are not SQLite, missing tables / columns,
    unparseable or ill-typed protos, NaN / Inf values, huge labels
    (1e30, -1, 2**63, ...): every case raises exactly `DataError` (no
    subclass, nothing else), whose message names the file at fault, with any
    underlying exception kept as `__cause__`.
  * Weak robustness: random byte flips in gzip streams and SQLite files either
    load the original data unchanged or raise DataError.
  * Nothing hangs: each loader call runs under a SIGALRM guard.

Examples are derandomized (the same examples on every run, so CI is not
flaky) and kept small so the whole file runs in well under 90 s. For a deeper
local run with fresh random examples:

    FUZZ_RANDOM=1 FUZZ_SCALE=10 .venv/bin/python -m pytest \
        tests/data/test_fuzz_loaders.py -q
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import json
import math
import os
import signal
import sqlite3
import tempfile
import zlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import event
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tff_ditto.data import DataError
from tff_ditto.data import fashion_mnist as fm
from tff_ditto.data import leaf
from tff_ditto.data import tff_datasets

F32_MAX = float(np.finfo(np.float32).max)
HANG_LIMIT_S = 60
# Temp directory names with glob / URI metacharacters: loaders must not
# interpret their own paths.
TMP_PREFIX = 'fuzz [a]?#%20 '


FUZZ_SCALE = float(os.environ.get('FUZZ_SCALE', '1'))
FUZZ_RANDOM = os.environ.get('FUZZ_RANDOM') == '1'


def fuzz_settings(max_examples: int):
  return settings(
      max_examples=max(1, int(max_examples * FUZZ_SCALE)),
      deadline=datetime.timedelta(seconds=20),
      derandomize=not FUZZ_RANDOM,
      database=None,
      print_blob=True,
      suppress_health_check=[
          HealthCheck.too_slow,
          HealthCheck.data_too_large,
          HealthCheck.filter_too_much,
      ],
  )


# ----------------------------------------------------------------------------
# Shared helpers.


@contextlib.contextmanager
def _tempdir():
  with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as d:
    yield d


@contextlib.contextmanager
def _hang_guard(seconds: int = HANG_LIMIT_S):
  """Fails the example if the body runs longer than `seconds`."""
  fired = []

  def handler(signum, frame):
    del signum, frame
    fired.append(True)
    raise TimeoutError(f'loader still running after {seconds} s (hang?)')

  previous = signal.signal(signal.SIGALRM, handler)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    # A broad `except` in a loader could have swallowed the TimeoutError.
    assert not fired, f'loader ran longer than {seconds} s'


def _run(fn, *args, **kwargs):
  with _hang_guard():
    return fn(*args, **kwargs)


def _expect_data_error(fn, *args, paths=(), **kwargs) -> DataError:
  """Runs fn; it must raise exactly DataError naming one of `paths`."""
  try:
    with _hang_guard():
      fn(*args, **kwargs)
  except DataError as e:
    error = e
  except Exception as e:  # pylint: disable=broad-except
    raise AssertionError(
        f'{type(e).__name__} escaped instead of DataError: {e!r:.500}'
    ) from e
  else:
    raise AssertionError('no DataError raised')
  assert type(error) is DataError, type(error)  # pylint: disable=unidiomatic-typecheck
  message = str(error)
  if paths:
    assert any(
        p in message for p in paths
    ), f'message does not name any of {list(paths)}: {message!r:.800}'
  # The message also says what is wrong, beyond the path.
  longest = max((len(p) for p in paths), default=0)
  assert len(message) > longest + 10, message
  # An exception caught and turned into DataError is kept as __cause__.
  if error.__context__ is not None and not isinstance(
      error.__context__, DataError
  ):
    assert error.__cause__ is error.__context__, (
        f'DataError raised while handling {error.__context__!r:.200} without '
        '`from`'
    )
  return error


def _write_bytes(path, data: bytes):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


_SPECIAL_NUMBERS = [
    0,
    -1,
    1,
    2,
    -0.0,
    0.5,
    1.0,
    -1.0,
    9,
    10,
    61,
    62,
    2**31,
    2**32 + 3,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    2**64,
    2**129,
    10**30,
    1e30,
    -1e30,
    3.5e38,
    1e39,
    F32_MAX,
    -F32_MAX,
    10**400,
    -(10**400),
    1e308,
    5e-324,
    float('nan'),
    float('inf'),
    float('-inf'),
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 64),
    st.integers(),
    st.sampled_from(_SPECIAL_NUMBERS),
    st.floats(),
    st.text(max_size=4),
    st.sampled_from(['0', '1', '0.5', '-1', 'NaN', 'Infinity', '', 'x']),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=3), children, max_size=2)
    ),
    max_leaves=6,
)

# Non-UTF-8 byte sequences (none is a BOM).
_BAD_UTF8 = [
    b'\xff',
    b'\xfe',
    b'\x80',
    b'\xc3',
    b'\xc0\xaf',
    b'\xed\xa0\x80',
    b'\xf8\x88\x80\x80\x80',
    b'\xe2\x82',
    b'\xff\xfe',
    b'\xfe\xff',
    b'\xf4\x90\x80\x80',
]


# ----------------------------------------------------------------------------
# LEAF JSON: generators and an independent validity oracle.

LEAF_KINDS = {
    # name: (loader, features, label kind, classes)
    'femnist': (leaf.load_femnist, 784, 'int', 62),
    'vehicle': (leaf.load_vehicle, 100, 'signed', 2),
    'leaf_synthetic': (leaf.load_leaf_synthetic, 60, 'int', 10),
}

user_ids = st.text(max_size=6)
valid_features = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53),
    st.sampled_from(
        [0, -0.0, 1, F32_MAX, -F32_MAX, 2**63, 1e-45, 5e-324, 2**100]
    ),
)


def valid_labels(kind):
  label_kind, num_classes = LEAF_KINDS[kind][2:]
  if label_kind == 'signed':
    return st.sampled_from([1, -1, 1.0, -1.0, [1], [-1], [1.0], [-1.0]])
  return st.integers(0, num_classes - 1).flatmap(
      lambda v: st.sampled_from([v, float(v), [v], [float(v)]])
  )


def _feature_ok(v) -> bool:
  if type(v) not in (int, float):  # pylint: disable=unidiomatic-typecheck
    return False
  try:
    f = float(v)
  except OverflowError:
    return False
  return math.isfinite(f) and abs(f) <= F32_MAX


def _row_ok(row, num_features) -> bool:
  return (
      type(row) is list
      and len(row) == num_features  # pylint: disable=unidiomatic-typecheck
      and all(_feature_ok(v) for v in row)
  )


def _label_value(v, kind):
  """The label as a Python number if valid for `kind`, else None."""
  label_kind, num_classes = LEAF_KINDS[kind][2:]
  item = v[0] if type(v) is list and len(v) == 1 else v  # pylint: disable=unidiomatic-typecheck
  if type(item) not in (int, float):  # pylint: disable=unidiomatic-typecheck
    return None
  try:
    f = float(item)
  except OverflowError:
    return None
  if not math.isfinite(f):
    return None
  if label_kind == 'signed':
    return f if f in (1.0, -1.0) else None
  if not f.is_integer() or not 0 <= item < num_classes:
    return None
  return int(f)


def _record_ok(record, n, kind) -> bool:
  num_features = LEAF_KINDS[kind][1]
  if not isinstance(record, dict):
    return False
  x, y = record.get('x'), record.get('y')
  if type(x) is not list or type(y) is not list:  # pylint: disable=unidiomatic-typecheck
    return False
  if not len(x) == len(y) == n or n == 0:
    return False
  return all(_row_ok(r, num_features) for r in x) and all(
      _label_value(v, kind) is not None for v in y
  )


def _file_users(blob, kind):
  """The users of one LEAF file if the file is valid on its own, else None."""
  if not isinstance(blob, dict):
    return None
  if not {'users', 'num_samples', 'user_data'} <= set(blob):
    return None
  users, counts, data = blob['users'], blob['num_samples'], blob['user_data']
  if type(users) is not list or not all(type(u) is str for u in users):  # pylint: disable=unidiomatic-typecheck
    return None
  if type(counts) is not list or not all(type(n) is int for n in counts):  # pylint: disable=unidiomatic-typecheck
    return None
  if not isinstance(data, dict) or len(users) != len(counts):
    return None
  if len(set(users)) != len(users) or set(users) != set(data):
    return None
  if not all(_record_ok(data[u], n, kind) for u, n in zip(users, counts)):
    return None
  return users


def _dataset_ok(blobs, kind) -> bool:
  """blobs: {split: {file name: blob}} of a whole LEAF dataset."""
  users_by_split = {}
  for split, files in blobs.items():
    seen = []
    for name in sorted(files):
      users = _file_users(files[name], kind)
      if users is None:
        return False
      seen.extend(users)
    if len(set(seen)) != len(seen) or not seen:
      return False
    users_by_split[split] = set(seen)
  return users_by_split['train'] == users_by_split['test']


def _expected_arrays(blobs, kind):
  """{split: {user: (x float32 [n, F], y)}} as the loader must return them."""
  label_kind = LEAF_KINDS[kind][2]
  out = {}
  for split, files in blobs.items():
    out[split] = {}
    for blob in files.values():
      for u in blob['users']:
        record = blob['user_data'][u]
        x = np.asarray(record['x'], np.float64).astype(np.float32)
        labels = [_label_value(v, kind) for v in record['y']]
        y = np.asarray(
            labels, np.float32 if label_kind == 'signed' else np.int32
        )
        out[split][u] = (x, y)
  return out


def _blob(user_data, users=None):
  users = list(user_data) if users is None else users
  return {
      'users': users,
      'num_samples': [len(user_data[u]['y']) for u in users],
      'user_data': user_data,
  }


@st.composite
def leaf_datasets(draw, kinds=tuple(LEAF_KINDS), max_users=3, max_n=3):
  """A valid LEAF dataset: {'kind', 'blobs': {split: {file: blob}}}."""
  kind = draw(st.sampled_from(kinds))
  num_features = LEAF_KINDS[kind][1]
  users = draw(st.lists(user_ids, min_size=1, max_size=max_users, unique=True))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  blobs = {}
  for split in ('train', 'test'):
    num_files = draw(st.integers(1, 2))
    per_file = [dict() for _ in range(num_files)]
    for u in users:
      n = draw(st.integers(1, max_n))
      x = (
          rng.random((n, num_features))
          .astype(np.float32)
          .astype(np.float64)
          .tolist()
      )
      for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(0, num_features - 1))
        x[i][j] = draw(valid_features)
      y = [draw(valid_labels(kind)) for _ in range(n)]
      per_file[draw(st.integers(0, num_files - 1))][u] = {'x': x, 'y': y}
    blobs[split] = {f'part_{i}.json': _blob(d) for i, d in enumerate(per_file)}
  return {'kind': kind, 'blobs': blobs}


def _write_leaf(root, blobs):
  paths = {}
  for split, files in blobs.items():
    for name, blob in files.items():
      path = os.path.join(root, split, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, 'w') as f:
        json.dump(blob, f)
      paths[(split, name)] = path
  return paths


def _check_loaded(ds, blobs, kind):
  expected = _expected_arrays(blobs, kind)
  assert ds.client_ids == sorted(expected['train'])
  for split in ('train', 'test'):
    for u, (x, y) in expected[split].items():
      got = getattr(ds, split)[u]
      assert got['x'].dtype == np.float32 and got['y'].dtype == y.dtype
      np.testing.assert_array_equal(got['x'].reshape(len(x), -1), x)
      np.testing.assert_array_equal(got['y'], y)
  assert ds.num_validation_examples().sum() == 0


# ----------------------------------------------------------------------------
# LEAF JSON properties.


@fuzz_settings(max_examples=25)
@given(spec=leaf_datasets())
def test_leaf_valid_round_trip(spec):
  kind, blobs = spec['kind'], spec['blobs']
  assert _dataset_ok(blobs, kind)
  with _tempdir() as root:
    _write_leaf(root, blobs)
    ds = _run(LEAF_KINDS[kind][0], root, validation_fraction=0.0)
  _check_loaded(ds, blobs, kind)


def _locations(blob):
  """Every mutable place of a valid LEAF blob as (path, role)."""
  out = [
      ((), 'top'),
      (('users',), 'container'),
      (('num_samples',), 'container'),
      (('user_data',), 'container'),
  ]
  for i in range(len(blob['users'])):
    out.append((('users', i), 'user'))
    out.append((('num_samples', i), 'count'))
  for u, record in blob['user_data'].items():
    out.append((('user_data', u), 'container'))
    out.append((('user_data', u, 'x'), 'container'))
    out.append((('user_data', u, 'y'), 'container'))
    for i in range(len(record['x'])):
      out.append((('user_data', u, 'x', i), 'row'))
      out.append((('user_data', u, 'x', i, None), 'feature'))
      out.append((('user_data', u, 'y', i), 'label'))
  return out


_ROLES = ('top', 'container', 'user', 'count', 'row', 'feature', 'label')


@pytest.mark.parametrize('role', _ROLES)
@fuzz_settings(max_examples=20)
@given(spec=leaf_datasets(max_users=2, max_n=2), data=st.data())
def test_leaf_random_edit_loads_iff_valid(role, spec, data):
  """Replace / delete / append one value of a role; compare with the oracle.

  Roles: the whole file, containers (users / num_samples / user_data / a
  user's record / x / y), a users entry, a num_samples entry, an x row, one
  feature, one label.
  """
  kind, blobs = spec['kind'], spec['blobs']
  num_features = LEAF_KINDS[kind][1]
  split = data.draw(st.sampled_from(['train', 'test']), label='split')
  name = data.draw(
      st.sampled_from(
          [n for n in sorted(blobs[split]) if blobs[split][n]['users']]
      ),
      label='file',
  )
  blob = blobs[split][name]
  by_role = {}
  for where, its_role in _locations(blob):
    by_role.setdefault(its_role, []).append(where)
  path = data.draw(st.sampled_from(by_role[role]), label='where')
  if role == 'feature':
    path = path[:-1] + (data.draw(st.integers(0, num_features - 1)),)
  rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
  all_users = sorted(
      set().union(*(b['users'] for f in blobs.values() for b in f.values()))
  )

  def row_of(k):
    return rng.random(k).astype(np.float32).astype(float).tolist()

  original = None
  if path:
    original = blob
    for key in path:
      original = original[key]
  # Half the time a value of the right kind (often valid), else any value.
  right_kind = data.draw(st.booleans(), label='right kind')
  if right_kind:
    values = {
        'feature': valid_features,
        'label': valid_labels(kind),
        'row': st.just(num_features).map(row_of),
        'user': st.sampled_from([original] + all_users),
        'count': st.one_of(st.just(original), st.integers(0, 4)),
    }.get(role, json_values)
  elif role == 'row':
    values = st.one_of(
        json_values,
        st.integers(num_features - 1, num_features + 1).map(row_of),
        st.tuples(st.integers(0, num_features - 1), json_values).map(
            lambda iv: row_of(iv[0])
            + [iv[1]]
            + row_of(num_features - 1 - iv[0])
        ),
    )
  else:
    values = json_values
  operation = data.draw(
      st.sampled_from(['replace', 'replace', 'delete', 'append']),
      label='operation',
  )
  if not path or (
      operation == 'append' and role not in ('top', 'container', 'row')
  ):
    operation = 'replace'
  new_value = data.draw(values, label='value')

  parent = blob
  for key in path[:-1]:
    parent = parent[key]
  if operation == 'replace':
    if path:
      parent[path[-1]] = new_value
    else:
      blobs[split][name] = blob = new_value
  elif operation == 'delete':
    del parent[path[-1]]
  else:
    target = parent[path[-1]] if path else blob
    if isinstance(target, list):
      target.append(new_value)
    else:
      target[data.draw(st.text(max_size=3))] = new_value

  valid = _dataset_ok(blobs, kind)
  event(f'{role} {operation}: {"valid" if valid else "invalid"}')
  with _tempdir() as root:
    paths = _write_leaf(root, blobs)
    loader = LEAF_KINDS[kind][0]
    if valid:
      ds = _run(loader, root, validation_fraction=0.0)
      _check_loaded(ds, blobs, kind)
    else:
      _expect_data_error(loader, root, paths=[paths[(split, name)]])


_HOSTILE_JSON = [
    b'',
    b'   \n',
    b'{}',
    b'[]',
    b'null',
    b'"users"',
    b'NaN',
    b'{"users": ' + b'[' * 100_000 + b']' * 100_000 + b'}',
    b'{"user_data": ' + b'{"a": ' * 50_000 + b'1' + b'}' * 50_000 + b'}',
    b'{"users": ["u"], "num_samples": ['
    + b'9' * 5000
    + b'], "user_data": {"u": {"x": [[1]], "y": [1]}}}',
    (
        b'{"users": ["u"], "num_samples": [1], "user_data": {"u": {"x":'
        b' [[0.5]], "y": [1]}, "u": {"x": [[0.5]], "y": [1]}}}'
    ),
    b'{"users": ["u"], "users": ["u"], "num_samples": [1], "user_data": {}}',
    b'\xef\xbb\xbf\xef\xbb\xbf{}',
    b'\x00\x00\x00\x00',
    b'{"users": ["\\ud800"], "num_samples": [1e999], "user_data": {}}',
]


@pytest.mark.parametrize('mode', ['truncate', 'non_utf8', 'hostile'])
@fuzz_settings(max_examples=16)
@given(
    spec=leaf_datasets(
        kinds=('vehicle', 'leaf_synthetic'), max_users=2, max_n=2
    ),
    data=st.data(),
)
def test_leaf_corrupt_bytes(mode, spec, data):
  """Truncated files, non-UTF-8 bytes and hostile JSON texts."""
  kind, blobs = spec['kind'], spec['blobs']
  split = data.draw(st.sampled_from(['train', 'test']))
  name = data.draw(st.sampled_from(sorted(blobs[split])))
  with _tempdir() as root:
    paths = _write_leaf(root, blobs)
    path = paths[(split, name)]
    with open(path, 'rb') as f:
      good = f.read()
    if mode == 'truncate':
      bad = good[: data.draw(st.integers(0, len(good) - 1))]
    elif mode == 'non_utf8':
      at = data.draw(st.integers(0, len(good)))
      bad = good[:at] + data.draw(st.sampled_from(_BAD_UTF8)) + good[at:]
    else:
      bad = data.draw(st.sampled_from(_HOSTILE_JSON))
    _write_bytes(path, bad)
    split_dir = os.path.join(root, split)
    _expect_data_error(LEAF_KINDS[kind][0], root, paths=[path, split_dir])


_INCONSISTENCIES = (
    'dup_in_file',
    'dup_across_files',
    'one_split_user',
    'empty_split',
    'xy_mismatch',
    'count_mismatch',
    'ragged_row',
    'wrong_feature_count',
    'empty_client',
    'nan_or_inf',
    'huge_label',
)


@pytest.mark.parametrize('mode', _INCONSISTENCIES)
@fuzz_settings(max_examples=6)
@given(spec=leaf_datasets(kinds=('vehicle', 'leaf_synthetic')), data=st.data())
def test_leaf_inconsistent_users_and_examples(mode, spec, data):
  """Duplicate users, one-split users, empty splits, x/y mismatches, ..."""
  kind, blobs = spec['kind'], spec['blobs']
  num_features = LEAF_KINDS[kind][1]
  split = data.draw(st.sampled_from(['train', 'test']))
  files = blobs[split]
  name = data.draw(
      st.sampled_from([n for n in sorted(files) if files[n]['users']])
  )
  blob = files[name]
  u = data.draw(st.sampled_from(blob['users']))
  record = blob['user_data'][u]
  blame = [(split, name)]  # what the message must name
  if mode == 'dup_in_file':
    blob['users'].append(u)
    blob['num_samples'].append(len(record['y']))
  elif mode == 'dup_across_files':
    files['zz_dup.json'] = _blob({u: json.loads(json.dumps(record))})
    blame = [(split, 'zz_dup.json')]
  elif mode == 'one_split_user':
    new = 'zz-new-user-id'  # generated ids have at most 6 characters
    files['zz_new.json'] = _blob({new: json.loads(json.dumps(record))})
    blame = [(split, 'zz_new.json')]
  elif mode == 'empty_split':
    for n in list(files):
      files[n] = _blob({})
    blame = [(split,)]
  elif mode == 'xy_mismatch':
    record[data.draw(st.sampled_from(['x', 'y']))].append(
        record['x'][0] if data.draw(st.booleans()) else record['y'][0]
    )
  elif mode == 'count_mismatch':
    i = blob['users'].index(u)
    blob['num_samples'][i] += data.draw(st.sampled_from([-1, 1, 2**63]))
  elif mode == 'ragged_row':
    i = data.draw(st.integers(0, len(record['x']) - 1))
    record['x'][i] = record['x'][i][
        : data.draw(st.integers(0, num_features - 1))
    ]
  elif mode == 'wrong_feature_count':
    k = data.draw(st.sampled_from([0, 1, num_features - 1, num_features + 1]))
    record['x'] = [(r * 2)[:k] for r in record['x']]
  elif mode == 'empty_client':
    record['x'], record['y'] = [], []
    blob['num_samples'][blob['users'].index(u)] = 0
  elif mode == 'nan_or_inf':
    i = data.draw(st.integers(0, len(record['x']) - 1))
    j = data.draw(st.integers(0, num_features - 1))
    value = data.draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    if data.draw(st.booleans()):
      record['x'][i][j] = value
    else:
      record['y'][i] = value
  else:
    # -1 is a valid Vehicle label (+-1); -3 is not.
    record['y'][0] = data.draw(
        st.sampled_from([
            1e30,
            -1 if kind != 'vehicle' else -3,
            2**63,
            -(2**63),
            10**400,
            2**31,
            62,
            0.5,
        ])
    )
  assert not _dataset_ok(blobs, kind)
  with _tempdir() as root:
    _write_leaf(root, blobs)
    error = _expect_data_error(
        LEAF_KINDS[kind][0],
        root,
        paths=[os.path.join(root, *where) for where in blame],
    )
    if mode == 'dup_across_files':  # both files are named
      assert (
          sum(os.path.join(root, split, n) in str(error) for n in files) >= 2
      ), str(error)


@fuzz_settings(max_examples=20)
@given(data=st.data())
def test_leaf_celeba_image_names(data):
  """CelebA x must name existing images; y must be 0/1."""

  names = ['000001.jpg', '000002.png']
  train = {'c0': {'x': [names[0], names[1]], 'y': [1, 0]}}
  test = {'c0': {'x': [names[1]], 'y': [0]}}
  split = data.draw(st.sampled_from(['train', 'test']))
  record = (train if split == 'train' else test)['c0']
  field = data.draw(st.sampled_from(['x', 'y']))
  i = data.draw(st.integers(0, len(record[field]) - 1))
  if field == 'x':
    record['x'][i] = data.draw(
        st.one_of(
            st.sampled_from(
                names + ['', '.', '..', 'nope.jpg', '/', 'a\x00b', 'x' * 300]
            ),
            json_values,
        )
    )
    valid = record['x'][i] in names
  else:
    record['y'][i] = data.draw(json_values)
    item = record['y'][i]
    item = item[0] if type(item) is list and len(item) == 1 else item  # pylint: disable=unidiomatic-typecheck
    valid = type(item) in (int, float) and item in (0, 1)  # pylint: disable=unidiomatic-typecheck
  with _tempdir() as root:
    images = os.path.join(root, 'img_align_celeba')
    os.makedirs(images)
    for k, n in enumerate(names):
      Image.fromarray(np.full((20, 16, 3), 40 * k, np.uint8)).save(
          os.path.join(images, n)
      )
    paths = _write_leaf(
        root,
        {'train': {'t.json': _blob(train)}, 'test': {'t.json': _blob(test)}},
    )
    if valid:
      ds = _run(leaf.load_celeba, root, validation_fraction=0.0)
      assert ds.train['c0']['x'].shape == (2, 84, 84, 3)
    else:
      _expect_data_error(
          leaf.load_celeba, root, paths=[paths[(split, 't.json')]]
      )


# ----------------------------------------------------------------------------
# idx (Fashion-MNIST raw files).


def _idx_bytes(array, header=None):
  if header is None:
    header = bytes([0, 0, 0x08, array.ndim])
    for d in array.shape:
      header += int(d).to_bytes(4, 'big')
  return header + np.ascontiguousarray(array, np.uint8).tobytes()


def _gz(data: bytes) -> bytes:
  return gzip.compress(data, mtime=0)


@st.composite
def idx_pools(draw):
  """Small valid pools: every class present in train and test."""
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  pools = {}
  for split, top in (('train', 3), ('test', 2)):
    counts = draw(st.lists(st.integers(1, top), min_size=10, max_size=10))
    labels = np.repeat(np.arange(10), counts).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 256, (labels.size, 28, 28), dtype=np.uint8)
    images[0, 0, :3] = [0, 255, 128]
    pools[split] = (images, labels)
  gz = draw(st.lists(st.booleans(), min_size=4, max_size=4))
  return pools, dict(zip(fm.IDX_FILES, gz))


def _idx_payloads(pools):
  return {
      'train_images': _idx_bytes(pools['train'][0]),
      'train_labels': _idx_bytes(pools['train'][1]),
      'test_images': _idx_bytes(pools['test'][0]),
      'test_labels': _idx_bytes(pools['test'][1]),
  }


def _write_idx_files(root, payloads, gz, raw=None):
  """Writes the four files; `raw` maps a key to exact file bytes to use."""
  raw = raw or {}
  paths = {}
  for key, base in fm.IDX_FILES.items():
    path = os.path.join(root, base + ('.gz' if gz[key] else ''))
    if key in raw:
      data = raw[key]
    else:
      data = _gz(payloads[key]) if gz[key] else payloads[key]
    _write_bytes(path, data)
    paths[key] = path
  return paths


@fuzz_settings(max_examples=25)
@given(spec=idx_pools())
def test_idx_valid_round_trip(spec):
  pools, gz = spec
  with _tempdir() as root:
    _write_idx_files(root, _idx_payloads(pools), gz)
    (trx, tr_y), (tex, te_y), _ = _run(fm.load_pools, root, 'idx')
    ds = _run(
        fm.load_fashion_mnist,
        root,
        num_devices=3,
        total_train=40,
        validation_fraction=0.0,
    )
  np.testing.assert_array_equal(trx, pools['train'][0])
  np.testing.assert_array_equal(tr_y, pools['train'][1])
  np.testing.assert_array_equal(tex, pools['test'][0])
  np.testing.assert_array_equal(te_y, pools['test'][1])
  assert ds.num_clients == 3
  for arrays in ds.train.values():
    assert arrays['x'].shape[1:] == (28, 28, 1)
    assert np.all(np.isfinite(arrays['x']))


_SPECIAL_DIMS = [0, 1, 2, 27, 28, 29, 784, 2**16, 2**31, 2**32 - 1]


def _idx_oracle(data: bytes, expected_ndim: int):
  """(dims, payload) of a valid unsigned-byte idx file, else None."""
  if len(data) < 4 or data[:3] != b'\x00\x00\x08' or data[3] != expected_ndim:
    return None
  header = 4 + 4 * expected_ndim
  if len(data) < header:
    return None
  dims = tuple(
      int.from_bytes(data[4 + 4 * i : 8 + 4 * i], 'big')
      for i in range(expected_ndim)
  )
  if len(data) - header != math.prod(dims):
    return None
  return dims, data[header:]


_random_dims = st.lists(
    st.one_of(
        st.integers(0, 4),
        st.sampled_from(_SPECIAL_DIMS),
        st.integers(0, 2**32 - 1),
    ),
    max_size=6,
)


@fuzz_settings(max_examples=80)
@given(
    expected_ndim=st.integers(1, 4),
    ndim=st.one_of(st.integers(1, 4), st.integers(0, 255)),
    magic=st.one_of(
        st.just(b'\x00\x00\x08'), st.binary(min_size=3, max_size=3)
    ),
    dims=_random_dims,
    extra=st.integers(-3, 3),
    cut_header=st.booleans(),
    gz=st.booleans(),
    seed=st.integers(0, 255),
)
@example(
    expected_ndim=3,
    ndim=3,
    magic=b'\x00\x00\x08',
    dims=[2**31, 2**31, 4],
    extra=0,
    cut_header=False,
    gz=False,
    seed=0,
)
@example(
    expected_ndim=2,
    ndim=2,
    magic=b'\x00\x00\x08',
    dims=[2**32 - 1, 2**32 - 1],
    extra=0,
    cut_header=False,
    gz=True,
    seed=0,
)
def test_read_idx_random_headers_match_oracle(
    expected_ndim, ndim, magic, dims, extra, cut_header, gz, seed
):
  """Random headers / payload sizes: parse iff the oracle says valid."""
  header = magic + bytes([ndim]) + b''.join(d.to_bytes(4, 'big') for d in dims)
  if cut_header:
    header = header[: seed % (len(header) + 1)]
  size = math.prod(dims[:ndim])
  body_len = size + extra if 0 <= size + extra <= 4096 else seed % 7
  _check_read_idx(header, body_len, expected_ndim, gz, seed)


@fuzz_settings(max_examples=30)
@given(
    dims=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    gz=st.booleans(),
    seed=st.integers(0, 255),
)
def test_read_idx_valid_round_trip(dims, gz, seed):
  header = bytes([0, 0, 8, len(dims)]) + b''.join(
      d.to_bytes(4, 'big') for d in dims
  )
  want = _check_read_idx(header, math.prod(dims), len(dims), gz, seed)
  assert want is not None


def _check_read_idx(header, body_len, expected_ndim, gz, seed):
  body = (
      np.random.default_rng(seed)
      .integers(0, 256, body_len, dtype=np.uint8)
      .tobytes()
  )
  data = header + body
  want = _idx_oracle(data, expected_ndim)
  event('valid' if want is not None else 'invalid')
  with _tempdir() as root:
    path = os.path.join(root, 'x-idx-ubyte' + ('.gz' if gz else ''))
    _write_bytes(path, _gz(data) if gz else data)
    if want is not None:
      array = _run(fm.read_idx, path, expected_ndim)
      assert array.shape == want[0] and array.dtype == np.uint8
      assert array.tobytes() == want[1]
    else:
      _expect_data_error(fm.read_idx, path, expected_ndim, paths=[path])
  return want


_IDX_MODES = [
    'truncate',
    'trailing',
    'header',
    'labels_range',
    'count_mismatch',
    'missing_class',
    'random_bytes',
    'gz_truncate',
    'plain_named_gz',
    'bad_deflate',
    'empty',
]


@pytest.mark.parametrize('mode', _IDX_MODES)
@fuzz_settings(max_examples=10)
@given(spec=idx_pools(), data=st.data())
def test_idx_corrupt_files(mode, spec, data):
  pools, gz = spec
  payloads = _idx_payloads(pools)
  key = data.draw(st.sampled_from(list(fm.IDX_FILES)), label='file')
  is_labels = key.endswith('labels')
  good = payloads[key]
  header_len = 8 if is_labels else 16
  raw = {}
  blame = [key]
  if mode == 'truncate':
    payloads[key] = good[: data.draw(st.integers(0, len(good) - 1))]
  elif mode == 'trailing':
    payloads[key] = good + data.draw(st.binary(min_size=1, max_size=16))
  elif mode == 'header':
    header = data.draw(
        st.binary(min_size=header_len, max_size=header_len)
        | st.lists(
            st.sampled_from([0, 1, 3, 8, 28, 255]),
            min_size=header_len,
            max_size=header_len,
        ).map(bytes)
    )
    assume(header != good[:header_len])
    payloads[key] = header + good[header_len:]
  elif mode == 'labels_range':
    key = key.replace('images', 'labels')
    split = key.split('_')[0]
    labels = pools[split][1].copy()
    labels[data.draw(st.integers(0, labels.size - 1))] = data.draw(
        st.integers(10, 255)
    )
    payloads[key] = _idx_bytes(labels)
    blame = [key]
  elif mode == 'count_mismatch':
    split = key.split('_')[0]
    array = pools[split][1 if is_labels else 0]
    k = data.draw(st.integers(1, array.shape[0]))
    cut = (
        array[:-k]
        if data.draw(st.booleans())
        else np.concatenate([array, array[:k]])
    )
    payloads[key] = _idx_bytes(cut)
    blame = [
        key,
        key.replace('labels', 'images')
        if is_labels
        else key.replace('images', 'labels'),
    ]
  elif mode == 'missing_class':
    split = key.split('_')[0]
    images, labels = pools[split]
    keep = labels != data.draw(st.integers(0, 9))
    payloads[f'{split}_images'] = _idx_bytes(images[keep])
    payloads[f'{split}_labels'] = _idx_bytes(labels[keep])
    blame = [f'{split}_images', f'{split}_labels']
  elif mode == 'random_bytes':
    payloads[key] = data.draw(st.binary(max_size=64))
  elif mode == 'gz_truncate':
    gz[key] = True
    compressed = _gz(good)
    raw[key] = compressed[: data.draw(st.integers(0, len(compressed) - 1))]
  elif mode == 'plain_named_gz':
    gz[key] = True
    raw[key] = good
  elif mode == 'bad_deflate':
    gz[key] = True
    raw[key] = _gz(good)[:10] + data.draw(st.binary(max_size=40))
  else:
    raw[key] = b''
  with _tempdir() as root:
    paths = _write_idx_files(root, payloads, gz, raw)
    _expect_data_error(
        fm.load_pools, root, 'idx', paths=[paths[k] for k in blame]
    )


@fuzz_settings(max_examples=30)
@given(spec=idx_pools(), data=st.data())
def test_idx_gzip_byte_flips_load_same_data_or_fail(spec, data):
  pools, gz = spec
  payloads = _idx_payloads(pools)
  key = data.draw(st.sampled_from(list(fm.IDX_FILES)))
  gz[key] = True
  compressed = bytearray(_gz(payloads[key]))
  for _ in range(data.draw(st.integers(1, 3))):
    compressed[data.draw(st.integers(0, len(compressed) - 1))] ^= data.draw(
        st.integers(1, 255)
    )
  if data.draw(st.booleans()):
    compressed += data.draw(st.binary(min_size=1, max_size=8))
  with _tempdir() as root:
    paths = _write_idx_files(root, payloads, gz, {key: bytes(compressed)})
    try:
      with _hang_guard():
        (trx, tr_y), (tex, te_y), _ = fm.load_pools(root, 'idx')
    except DataError as e:
      assert paths[key] in str(e), str(e)
      event('DataError')
      return
  event('loaded')
  for got, want in (
      (trx, pools['train'][0]),
      (tr_y, pools['train'][1]),
      (tex, pools['test'][0]),
      (te_y, pools['test'][1]),
  ):
    np.testing.assert_array_equal(got, want)


_npz_arrays = hnp.arrays(
    dtype=st.sampled_from([
        np.uint8,
        np.int8,
        np.int64,
        np.uint64,
        np.float32,
        np.bool_,
        np.dtype('<U2'),
    ]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3),
)


@fuzz_settings(max_examples=30)
@given(spec=idx_pools(), data=st.data())
def test_npz_random_array_loads_or_raises_data_error(spec, data):
  """The npz source: one array of a valid file replaced by a random one."""
  pools, _ = spec
  style = data.draw(st.sampled_from(['keras', 'pflib']))
  if style == 'keras':
    arrays = {
        'x_train': pools['train'][0],
        'y_train': pools['train'][1],
        'x_test': pools['test'][0],
        'y_test': pools['test'][1],
    }
  else:
    arrays = {
        'x': np.concatenate([pools['train'][0], pools['test'][0]]),
        'y': np.concatenate([pools['train'][1], pools['test'][1]]),
        'orig_split': np.repeat(
            np.array([0, 1], np.int8),
            [len(pools['train'][1]), len(pools['test'][1])],
        ),
    }
  key = data.draw(st.sampled_from(sorted(arrays)))
  arrays[key] = data.draw(_npz_arrays)
  with _tempdir() as root:
    path = os.path.join(root, 'pool.npz')
    np.savez(path, **arrays)
    try:
      with _hang_guard():
        (trx, tr_y), (tex, te_y), _ = fm.load_pools(root, 'npz')
    except DataError as e:
      assert path in str(e), str(e)
      event('DataError')
      return
  event('loaded')
  for images, labels in ((trx, tr_y), (tex, te_y)):
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
    assert labels.shape == (images.shape[0],)
    assert set(np.unique(labels).tolist()) == set(range(10))


# ----------------------------------------------------------------------------
# TFF SQLite (EMNIST, CelebA).

_SCHEMA = (
    (
        'CREATE TABLE examples (split_name TEXT, client_id TEXT, '
        'serialized_example_proto BLOB);'
    ),
    (
        'CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, '
        'num_examples INTEGER);'
    ),
)

sql_client_ids = st.text(
    alphabet=st.characters(blacklist_categories=('Cs',)), max_size=6
)


def _example(**features) -> bytes:
  feature = {}
  for name, (kind, values) in features.items():
    values = list(np.asarray(values).reshape(-1).tolist())
    if kind == 'float':
      feature[name] = tf.train.Feature(
          float_list=tf.train.FloatList(value=values)
      )
    elif kind == 'int':
      feature[name] = tf.train.Feature(
          int64_list=tf.train.Int64List(value=values)
      )
    else:
      feature[name] = tf.train.Feature(
          bytes_list=tf.train.BytesList(value=values)
      )
  return tf.train.Example(
      features=tf.train.Features(feature=feature)
  ).SerializeToString()


def _emnist_example(pixels, label):
  return _example(pixels=('float', pixels), label=('int', [label]))


def _write_sqlite(path, rows):
  """rows: {split: {client: [proto, ...]}}."""
  with contextlib.closing(sqlite3.connect(path)) as con:
    with con:
      for statement in _SCHEMA:
        con.execute(statement)
      for split, clients in rows.items():
        for cid, protos in clients.items():
          con.executemany(
              'INSERT INTO examples VALUES (?, ?, ?);',
              [(split, cid, p) for p in protos],
          )
          con.execute(
              'INSERT INTO client_metadata VALUES (?, ?, ?);',
              (cid, split, len(protos)),
          )


@st.composite
def emnist_files(draw, max_clients=3):
  only_digits = draw(st.booleans())
  prefix = 'digits_only' if only_digits else 'all'
  num_classes = 10 if only_digits else 62
  clients = draw(
      st.lists(sql_client_ids, min_size=1, max_size=max_clients, unique=True)
  )
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  truth, rows = {}, {}
  for split in ('train', 'test'):
    truth[split], rows[f'{prefix}_{split}'] = {}, {}
    for cid in clients:
      n = draw(st.integers(1, 3))
      pixels = rng.random((n, 28, 28)).astype(np.float32)
      pixels[0, 0, :4] = [0.0, 1.0, 1e-40, -0.0]
      labels = [draw(st.integers(0, num_classes - 1)) for _ in range(n)]
      truth[split][cid] = (pixels, np.asarray(labels, np.int32))
      rows[f'{prefix}_{split}'][cid] = [
          _emnist_example(p, l) for p, l in zip(pixels, labels)
      ]
  # Decoy rows of the other variant must never be read.
  other = 'all' if only_digits else 'digits_only'
  for split in ('train', 'test'):
    rows[f'{other}_{split}'] = {clients[0]: [b'not a proto']}
  return {
      'only_digits': only_digits,
      'prefix': prefix,
      'truth': truth,
      'rows': rows,
      'num_classes': num_classes,
  }


def _rows_key(x, y):
  return sorted((xi.tobytes(), int(yi)) for xi, yi in zip(x, y))


def _check_emnist(ds, spec):
  truth = spec['truth']
  assert ds.client_ids == sorted(truth['train'])
  assert ds.num_classes == spec['num_classes']
  for split in ('train', 'test'):
    for cid, (pixels, labels) in truth[split].items():
      got = getattr(ds, split)[cid]
      assert got['x'].dtype == np.float32 and got['y'].dtype == np.int32
      assert _rows_key(got['x'][..., 0], got['y']) == _rows_key(pixels, labels)


@fuzz_settings(max_examples=15)
@given(spec=emnist_files())
def test_sqlite_emnist_round_trip(spec):
  with _tempdir() as root:
    _write_sqlite(
        os.path.join(root, tff_datasets.EMNIST_FILENAME), spec['rows']
    )
    ds = _run(
        tff_datasets.load_tff_emnist,
        root,
        only_digits=spec['only_digits'],
        validation_fraction=0.0,
    )
  _check_emnist(ds, spec)


def _bad_emnist_proto(draw, num_classes):
  pixels = np.full((28, 28), 0.5, np.float32)
  return draw(
      st.one_of(
          st.binary(max_size=40),
          st.sampled_from([
              b'',
              _example(label=('int', [1])),
              _example(pixels=('float', pixels)),
              _example(pixels=('float', pixels[:27]), label=('int', [1])),
              _example(pixels=('float', np.zeros(785)), label=('int', [1])),
              _example(
                  pixels=('int', np.ones((28, 28), np.int64)),
                  label=('int', [1]),
              ),
              _example(pixels=('float', pixels), label=('float', [1.0])),
              _example(pixels=('float', pixels), label=('int', [1, 2])),
              _example(pixels=('float', pixels), label=('bytes', [b'1'])),
          ]),
          st.sampled_from([math.nan, math.inf, -math.inf]).map(
              lambda v: _emnist_example(np.where(np.eye(28) > 0, v, 0.5), 1)
          ),
          st.sampled_from(
              [-1, num_classes, 2**31, 2**32 + 3, 2**63 - 1, -(2**63), -(2**32)]
          ).map(lambda v: _emnist_example(pixels, v)),
      )
  )


_SQL_MODES = [
    'not_sqlite',
    'sqlite_header_garbage',
    'truncate',
    'drop_table',
    'missing_column',
    'bad_proto',
    'proto_type',
    'client_id_type',
    'no_examples',
    'client_mismatch',
    'empty_split',
]


@pytest.mark.parametrize('mode', _SQL_MODES)
@fuzz_settings(max_examples=7)
@given(spec=emnist_files(max_clients=2), data=st.data())
def test_sqlite_emnist_corrupt(mode, spec, data):
  prefix = spec['prefix']
  split = data.draw(st.sampled_from([f'{prefix}_train', f'{prefix}_test']))
  cid = data.draw(st.sampled_from(sorted(spec['rows'][split])))
  with _tempdir() as root:
    path = os.path.join(root, tff_datasets.EMNIST_FILENAME)
    if mode == 'bad_proto':
      protos = spec['rows'][split][cid]
      protos[data.draw(st.integers(0, len(protos) - 1))] = _bad_emnist_proto(
          data.draw, spec['num_classes']
      )
    _write_sqlite(path, spec['rows'])
    with open(path, 'rb') as f:
      good = f.read()
    edits = []  # SQL statements (text or (text, parameters))
    if mode == 'drop_table':
      edits.append(
          data.draw(
              st.sampled_from(
                  ['DROP TABLE examples', 'DROP TABLE client_metadata']
              )
          )
      )
    elif mode == 'missing_column':
      edits.append(
          data.draw(
              st.sampled_from([
                  'ALTER TABLE examples DROP COLUMN serialized_example_proto',
                  'ALTER TABLE examples DROP COLUMN client_id',
                  'ALTER TABLE examples DROP COLUMN split_name',
                  'ALTER TABLE client_metadata DROP COLUMN client_id',
                  'ALTER TABLE client_metadata DROP COLUMN split_name',
                  'ALTER TABLE examples RENAME COLUMN client_id TO cid',
              ])
          )
      )
    elif mode == 'proto_type':
      edits.append((
          (
              'UPDATE examples SET serialized_example_proto = ? WHERE rowid = '
              '(SELECT min(rowid) FROM examples WHERE client_id = ? AND '
              'split_name = ?)'
          ),
          (
              data.draw(st.sampled_from(['text proto', 7, 1.5, None])),
              cid,
              split,
          ),
      ))
    elif mode == 'client_id_type':
      edits.append((
          'UPDATE client_metadata SET client_id = '
          + data.draw(
              st.sampled_from(
                  ['NULL', '42', "x'00ff'", '2.5', "CAST(x'ff61' AS TEXT)"]
              )
          )
          + ' WHERE client_id = ? AND split_name = ?',
          (cid, split),
      ))
    elif mode == 'no_examples':
      edits.append((
          'DELETE FROM examples WHERE client_id = ? AND split_name = ?',
          (cid, split),
      ))
    elif mode == 'client_mismatch':
      edits.append((
          'INSERT INTO client_metadata VALUES (?, ?, 1)',
          ('zz-new-client-id', split),
      ))  # ids are <= 6 chars
    elif mode == 'empty_split':
      edits.append(
          ('DELETE FROM client_metadata WHERE split_name = ?', (split,))
      )
    if edits:
      with contextlib.closing(sqlite3.connect(path)) as con:
        with con:
          for edit in edits:
            if isinstance(edit, tuple):
              con.execute(*edit)
            else:
              con.execute(edit)
    elif mode == 'not_sqlite':
      _write_bytes(path, data.draw(st.binary(max_size=200)))
    elif mode == 'sqlite_header_garbage':
      _write_bytes(
          path, b'SQLite format 3\x00' + data.draw(st.binary(max_size=300))
      )
    elif mode == 'truncate':
      _write_bytes(path, good[: data.draw(st.integers(0, len(good) - 1))])
    _expect_data_error(
        tff_datasets.load_tff_emnist,
        root,
        only_digits=spec['only_digits'],
        paths=[path],
    )


@fuzz_settings(max_examples=20)
@given(spec=emnist_files(max_clients=2), data=st.data())
def test_sqlite_byte_flips_load_same_data_or_fail(spec, data):
  with _tempdir() as root:
    path = os.path.join(root, tff_datasets.EMNIST_FILENAME)
    _write_sqlite(path, spec['rows'])
    with open(path, 'rb') as f:
      blob = bytearray(f.read())
    for _ in range(data.draw(st.integers(1, 4))):
      at = data.draw(st.integers(0, len(blob) - 1) | st.integers(0, 200))
      blob[at] ^= data.draw(st.integers(1, 255))
    _write_bytes(path, bytes(blob))
    try:
      with _hang_guard():
        ds = tff_datasets.load_tff_emnist(
            root, only_digits=spec['only_digits'], validation_fraction=0.0
        )
    except DataError as e:
      assert path in str(e), str(e)
      event('DataError')
      return
  event('loaded')
  # A flip that does not hit the data the loader reads (free space, unused
  # header fields, the decoy rows) leaves it unchanged; a flip inside a
  # pixel value can change that value, which no format check can see.
  assert ds.client_ids == sorted(spec['truth']['train'])


def _celeba_example(image, smiling, drop=()):
  features = {
      'image': ('int', image),
      'smiling': ('int', [smiling]),
      'male': ('int', [0]),
  }
  return _example(**{k: v for k, v in features.items() if k not in drop})


@pytest.mark.parametrize(
    'bad', [None, 'image_range', 'smiling', 'image_shape', 'missing_smiling']
)
@fuzz_settings(max_examples=5)
@given(by_clients=st.booleans(), data=st.data())
def test_sqlite_celeba(bad, by_clients, data):
  """Valid CelebA files round-trip; bad images / labels raise DataError."""
  prefix = 'split_by_clients' if by_clients else 'split_by_examples'
  rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
  clients = data.draw(
      st.lists(sql_client_ids, min_size=1, max_size=2, unique=True)
  )
  truth, rows = {}, {f'{prefix}_train': {}, f'{prefix}_test': {}}
  for cid in clients:
    images = rng.integers(0, 256, (2, 84, 84, 3))
    images[0, 0, 0, :] = [0, 255, 7]
    smiling = [data.draw(st.integers(0, 1)) for _ in range(2)]
    truth[cid] = (images, smiling)
    rows[f'{prefix}_train'][cid] = [
        _celeba_example(i, s) for i, s in zip(images, smiling)
    ]
    rows[f'{prefix}_test'][cid] = list(rows[f'{prefix}_train'][cid])
  if bad is not None:
    split = data.draw(st.sampled_from(sorted(rows)))
    if by_clients:
      split = f'{prefix}_train'  # the test-split clients are not read
    image = truth[clients[0]][0][0].copy()
    if bad == 'image_range':
      image[1, 2, 0] = data.draw(
          st.sampled_from([256, -1, 2**63 - 1, -(2**63)])
      )
      proto = _celeba_example(image, 1)
    elif bad == 'smiling':
      proto = _celeba_example(
          image, data.draw(st.sampled_from([2, -1, 2**32, 2**63 - 1]))
      )
    elif bad == 'image_shape':
      proto = _celeba_example(image.reshape(-1)[:-3], 1)
    else:
      proto = _celeba_example(image, 1, drop=('smiling',))
    rows[split][clients[0]][1] = proto
  with _tempdir() as root:
    path = os.path.join(root, tff_datasets.CELEBA_FILENAME)
    _write_sqlite(path, rows)
    kwargs = dict(
        split_by_clients=by_clients, validation_fraction=0.0, test_fraction=0.5
    )
    if bad is not None:
      _expect_data_error(
          tff_datasets.load_tff_celeba, root, paths=[path], **kwargs
      )
      return
    ds = _run(tff_datasets.load_tff_celeba, root, **kwargs)
  assert ds.client_ids == sorted(clients)
  for cid, (images, smiling) in truth.items():
    want = _rows_key(images.astype(np.float32) / np.float32(255.0), smiling)
    train, test = ds.train[cid], ds.test[cid]
    if by_clients:  # the test example is carved from the client's train data
      assert (
          _rows_key(
              np.concatenate([train['x'], test['x']]),
              np.concatenate([train['y'], test['y']]),
          )
          == want
      )
    else:
      assert _rows_key(train['x'], train['y']) == want
      assert _rows_key(test['x'], test['y']) == want
    assert train['x'].dtype == np.float32 and train['y'].dtype == np.int32


# ----------------------------------------------------------------------------
# Fixed regressions (each was an escape before the loaders were hardened).


def test_regression_invalid_deflate_block(tmp_path):
  """A gzip header followed by an invalid deflate block (zlib.error)."""
  path = str(tmp_path / 'train-labels-idx1-ubyte.gz')
  payload = b'\xff' * 8  # BTYPE=11: reserved block type
  with pytest.raises(zlib.error):
    zlib.decompress(payload, -15)
  _write_bytes(path, _gz(b'')[:10] + payload)
  _expect_data_error(fm.read_idx, path, 1, paths=[path])


@pytest.mark.parametrize(
    'text',
    [
        b'{"users": ' + b'[' * 100_000 + b']' * 100_000 + b'}',
        b'{"users": [' + b'9' * 5000 + b']}',
    ],
    ids=['deep_nesting_RecursionError', 'int_over_4300_digits_ValueError'],
)
def test_regression_hostile_json(tmp_path, text):
  root = str(tmp_path)
  _write_bytes(os.path.join(root, 'train', 'a.json'), text)
  _write_bytes(os.path.join(root, 'test', 'a.json'), b'{}')
  _expect_data_error(
      leaf.load_leaf_synthetic,
      root,
      paths=[os.path.join(root, 'train', 'a.json')],
  )


@pytest.mark.parametrize(
    'bad',
    ['0.5', True, None, 10**400, 1e39],
    ids=[
        'numeric_string',
        'bool',
        'null',
        'int_beyond_float64',
        'beyond_float32',
    ],
)
def test_regression_leaf_feature_types(tmp_path, bad):
  """Numeric strings / bools / None were silently converted; 10**400 escaped."""
  root = str(tmp_path)
  x = [[0.0] * 60]
  x[0][7] = bad
  for split in ('train', 'test'):
    _write_bytes(
        os.path.join(root, split, 'a.json'),
        json.dumps(_blob({'u': {'x': x, 'y': [1]}})).encode(),
    )
  _expect_data_error(
      leaf.load_leaf_synthetic,
      root,
      paths=[os.path.join(root, 'train', 'a.json')],
  )


def test_regression_sqlite_client_id_with_quote(tmp_path):
  """TFF's SqlClientData pasted client ids into SQL; a quote could select
  another client's rows. Parameterized queries read exactly this client."""
  pixels = np.full((28, 28), 0.25, np.float32)
  rows = {}
  for split in ('all_train', 'all_test'):
    rows[split] = {
        "a' OR '1'='1": [_emnist_example(pixels, 3)],
        'b': [_emnist_example(pixels, 5)] * 2,
    }
  _write_sqlite(str(tmp_path / tff_datasets.EMNIST_FILENAME), rows)
  ds = tff_datasets.load_tff_emnist(str(tmp_path), validation_fraction=0.0)
  assert ds.num_train_examples().tolist() == [1, 2]
  assert ds.train["a' OR '1'='1"]['y'].tolist() == [3]


def test_regression_sqlite_label_wraparound(tmp_path):
  """Labels were cast to int32 before the range check: 2**32 + 3 became 3."""
  pixels = np.full((28, 28), 0.25, np.float32)
  rows = {
      split: {'w': [_emnist_example(pixels, 2**32 + 3)]}
      for split in ('all_train', 'all_test')
  }
  path = str(tmp_path / tff_datasets.EMNIST_FILENAME)
  _write_sqlite(path, rows)
  _expect_data_error(tff_datasets.load_tff_emnist, str(tmp_path), paths=[path])


@pytest.mark.parametrize('cut', [100, 4096], ids=['inside_page', 'whole_page'])
def test_regression_sqlite_truncated_last_page(tmp_path, cut):
  """SQLite zero-fills a short read of the last page: a file cut inside it
  used to load with altered or missing rows and no error."""
  rng = np.random.default_rng(0)
  rows = {
      split: {
          c: [_emnist_example(rng.random((28, 28)), 1) for _ in range(3)]
          for c in ('a', 'b')
      }
      for split in ('all_train', 'all_test')
  }
  path = str(tmp_path / tff_datasets.EMNIST_FILENAME)
  _write_sqlite(path, rows)
  with open(path, 'rb') as f:
    data = f.read()
  _write_bytes(path, data[:-cut])
  _expect_data_error(tff_datasets.load_tff_emnist, str(tmp_path), paths=[path])
