"""Tests of the LEAF JSON reader and the FEMNIST / Vehicle / CelebA / synthetic loaders."""

import json
import os

import numpy as np
from PIL import Image
import pytest

import repo_paths
from tff_ditto.data import DataError
from tff_ditto.data import leaf

REPO = repo_paths.REPO
REAL_FEMNIST = '/work/shared/data/femnist'
REAL_VEHICLE = '/work/shared/data/vehicle'


def _write(path, blob, raw=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    if raw is not None:
      f.write(raw)
    else:
      json.dump(blob, f)


def _blob(user_data):
  users = list(user_data)
  return {
      'users': users,
      'num_samples': [len(user_data[u]['y']) for u in users],
      'user_data': user_data,
  }


def _femnist_user(n, seed, num_features=784, num_classes=62):
  rng = np.random.default_rng(seed)
  x = np.round(rng.random((n, num_features)), 3).tolist()
  y = rng.integers(0, num_classes, n).tolist()
  return {'x': x, 'y': y}


def _make_femnist(root, train_sizes=None, test_sizes=None):
  """3 writers in two train files and one test file."""
  train_sizes = train_sizes or {'w_b': 9, 'w_a': 11, 'w_c': 5}
  test_sizes = test_sizes or {'w_b': 2, 'w_a': 3, 'w_c': 1}
  users = list(train_sizes)
  data = {
      u: _femnist_user(n, i) for i, (u, n) in enumerate(train_sizes.items())
  }
  _write(
      os.path.join(root, 'train', 'part_0.json'),
      _blob({u: data[u] for u in users[:2]}),
  )
  _write(
      os.path.join(root, 'train', 'part_1.json'),
      _blob({u: data[u] for u in users[2:]}),
  )
  test = {
      u: _femnist_user(n, 100 + i)
      for i, (u, n) in enumerate(test_sizes.items())
  }
  _write(os.path.join(root, 'test', 'part_0.json'), _blob(test))
  return data, test


def test_femnist_shapes_order_and_values(tmp_path):
  data, test = _make_femnist(str(tmp_path))
  ds = leaf.load_femnist(str(tmp_path), validation_fraction=0.2, seed=1)
  assert ds.client_ids == ['w_a', 'w_b', 'w_c']
  assert ds.num_classes == 62 and ds.label_kind == 'categorical'
  for c in ds.client_ids:
    tr, va, te = ds.train[c], ds.validation[c], ds.test[c]
    assert tr['x'].dtype == np.float32 and tr['x'].shape[1:] == (28, 28, 1)
    assert tr['y'].dtype == np.int32 and te['y'].dtype == np.int32
    assert tr['y'].shape[0] + va['y'].shape[0] == len(data[c]['y'])
    np.testing.assert_array_equal(te['y'], test[c]['y'])
    np.testing.assert_allclose(
        te['x'].reshape(len(test[c]['y']), -1), test[c]['x'], rtol=1e-6
    )
    # train + validation is a permutation of the original examples.
    merged = np.concatenate([tr['y'], va['y']])
    assert sorted(merged.tolist()) == sorted(data[c]['y'])
  assert ds.num_validation_examples().tolist() == [2, 2, 1]


def test_femnist_split_is_seeded(tmp_path):
  _make_femnist(str(tmp_path))
  a = leaf.load_femnist(str(tmp_path), seed=3, validation_fraction=0.3)
  b = leaf.load_femnist(str(tmp_path), seed=3, validation_fraction=0.3)
  c = leaf.load_femnist(str(tmp_path), seed=4, validation_fraction=0.3)
  for cid in a.client_ids:
    np.testing.assert_array_equal(a.train[cid]['x'], b.train[cid]['x'])
    np.testing.assert_array_equal(
        a.validation[cid]['y'], b.validation[cid]['y']
    )
  assert any(
      not np.array_equal(a.validation[cid]['x'], c.validation[cid]['x'])
      for cid in a.client_ids
  )


def test_femnist_max_clients(tmp_path):
  _make_femnist(str(tmp_path))
  ds = leaf.load_femnist(str(tmp_path), max_clients=2)
  assert ds.client_ids == ['w_a', 'w_b']


# ----------------------------------------------------------------------------
# Bad input: every case raises DataError naming the file at fault.


def _good_user(n=3):
  return _femnist_user(n, 0)


def _corrupt(root, split, fname, blob=None, raw=None):
  _write(os.path.join(root, split, fname), blob, raw)
  return fname


def _bad_cases():
  """(case id, function(root) -> substring expected in the message)."""
  cases = {}

  def malformed(root):
    return _corrupt(root, 'train', 'part_1.json', raw='{"users": [')

  cases['malformed_json'] = malformed

  def top_level_list(root):
    return _corrupt(root, 'train', 'part_1.json', blob=[1, 2])

  cases['top_level_not_object'] = top_level_list

  for key in ('users', 'num_samples', 'user_data'):

    def missing_key(root, key=key):
      blob = _blob({'w_c': _good_user()})
      del blob[key]
      _corrupt(root, 'train', 'part_1.json', blob=blob)
      return 'part_1.json'

    cases[f'missing_{key}'] = missing_key

  def users_vs_num_samples(root):
    blob = _blob({'w_c': _good_user()})
    blob['num_samples'].append(4)
    return _corrupt(root, 'train', 'part_1.json', blob=blob)

  cases['users_num_samples_length'] = users_vs_num_samples

  def users_vs_user_data(root):
    blob = _blob({'w_c': _good_user()})
    blob['users'] = ['w_other']
    return _corrupt(root, 'train', 'part_1.json', blob=blob)

  cases['users_vs_user_data'] = users_vs_user_data

  def num_samples_wrong(root):
    blob = _blob({'w_c': _good_user()})
    blob['num_samples'] = [7]
    return _corrupt(root, 'train', 'part_1.json', blob=blob)

  cases['num_samples_wrong'] = num_samples_wrong

  def user_listed_twice(root):
    blob = _blob({'w_c': _good_user()})
    blob['users'] = ['w_c', 'w_c']
    blob['num_samples'] = [3, 3]
    return _corrupt(root, 'train', 'part_1.json', blob=blob)

  cases['user_listed_twice'] = user_listed_twice

  def missing_y(root):
    blob = _blob({'w_c': _good_user()})
    del blob['user_data']['w_c']['y']
    return _corrupt(root, 'train', 'part_1.json', blob=blob)

  cases['missing_y'] = missing_y

  def xy_mismatch(root):
    user = _good_user()
    user['y'] = user['y'][:2]
    blob = _blob({'w_c': user})
    blob['num_samples'] = [3]
    return _corrupt(root, 'train', 'part_1.json', blob=blob)

  cases['x_y_length_mismatch'] = xy_mismatch

  def wrong_pixel_count(root):
    return _corrupt(
        root,
        'train',
        'part_1.json',
        blob=_blob({'w_c': _femnist_user(3, 0, num_features=783)}),
    )

  cases['wrong_pixel_count'] = wrong_pixel_count

  def ragged_x(root):
    user = _good_user()
    user['x'][1] = user['x'][1][:10]
    return _corrupt(root, 'train', 'part_1.json', blob=_blob({'w_c': user}))

  cases['ragged_x'] = ragged_x

  def string_pixels(root):
    user = _good_user()
    user['x'][0][5] = 'white'
    return _corrupt(root, 'train', 'part_1.json', blob=_blob({'w_c': user}))

  cases['non_numeric_x'] = string_pixels

  def label_out_of_range(root):
    user = _good_user()
    user['y'][0] = 62
    return _corrupt(root, 'train', 'part_1.json', blob=_blob({'w_c': user}))

  cases['label_out_of_range'] = label_out_of_range

  def negative_label(root):
    user = _good_user()
    user['y'][2] = -1
    return _corrupt(
        root,
        'test',
        'part_0.json',
        blob=_blob({'w_a': _good_user(), 'w_b': _good_user(), 'w_c': user}),
    )

  cases['negative_label_in_test'] = negative_label

  def non_integer_label(root):
    user = _good_user()
    user['y'][1] = 1.5
    return _corrupt(root, 'train', 'part_1.json', blob=_blob({'w_c': user}))

  cases['non_integer_label'] = non_integer_label

  def string_label(root):
    user = _good_user()
    user['y'][1] = '3'
    return _corrupt(root, 'train', 'part_1.json', blob=_blob({'w_c': user}))

  cases['string_label'] = string_label

  def nan_feature(root):
    user = _good_user()
    user['x'][2][100] = float('nan')
    return _corrupt(root, 'train', 'part_1.json', blob=_blob({'w_c': user}))

  cases['nan_feature'] = nan_feature

  def inf_feature(root):
    user = _good_user()
    user['x'][0][0] = float('inf')
    return _corrupt(root, 'train', 'part_1.json', blob=_blob({'w_c': user}))

  cases['inf_feature'] = inf_feature

  def duplicate_across_files(root):
    return _corrupt(
        root,
        'train',
        'part_1.json',
        blob=_blob({'w_c': _good_user(), 'w_a': _good_user()}),
    )

  cases['duplicate_user_across_files'] = duplicate_across_files

  def test_only_user(root):
    return _corrupt(
        root, 'test', 'part_1.json', blob=_blob({'w_z': _good_user()})
    )

  cases['user_in_test_not_train'] = test_only_user

  def train_only_user(root):
    return _corrupt(
        root, 'train', 'part_2.json', blob=_blob({'w_z': _good_user()})
    )

  cases['user_in_train_not_test'] = train_only_user

  def empty_client(root):
    return _corrupt(
        root, 'train', 'part_1.json', blob=_blob({'w_c': {'x': [], 'y': []}})
    )

  cases['empty_client'] = empty_client

  def empty_test_dir(root):
    for f in os.listdir(os.path.join(root, 'test')):
      os.remove(os.path.join(root, 'test', f))
    return os.path.join(root, 'test')

  cases['empty_test_dir'] = empty_test_dir

  def missing_test_dir(root):
    empty_test_dir(root)
    os.rmdir(os.path.join(root, 'test'))
    return os.path.join(root, 'test')

  cases['missing_test_dir'] = missing_test_dir

  def missing_train_dir(root):
    for f in os.listdir(os.path.join(root, 'train')):
      os.remove(os.path.join(root, 'train', f))
    os.rmdir(os.path.join(root, 'train'))
    return os.path.join(root, 'train')

  cases['missing_train_dir'] = missing_train_dir
  return cases


_CASES = _bad_cases()


@pytest.mark.parametrize('case', sorted(_CASES))
def test_bad_input_raises_data_error_naming_file(tmp_path, case):
  root = str(tmp_path / 'femnist')
  _make_femnist(root)
  expected = _CASES[case](root)
  with pytest.raises(DataError) as info:
    leaf.load_femnist(root)
  assert expected in str(info.value), str(info.value)


def test_missing_data_dir(tmp_path):
  with pytest.raises(DataError, match='not found'):
    leaf.load_femnist(str(tmp_path / 'nope'))


def test_bad_user_outside_max_clients_is_still_checked_structurally(tmp_path):
  root = str(tmp_path)
  _make_femnist(root)
  blob = _blob({'w_c': _good_user()})
  blob['num_samples'] = [9]
  _write(os.path.join(root, 'train', 'part_1.json'), blob)
  with pytest.raises(DataError, match='part_1.json'):
    leaf.load_femnist(root, max_clients=1)


# ----------------------------------------------------------------------------
# Vehicle.


def _vehicle_user(n, seed, nested=True):
  rng = np.random.default_rng(seed)
  x = np.round(rng.standard_normal((n, 100)), 4).tolist()
  y = rng.choice([-1, 1], n).tolist()
  return {'x': x, 'y': [[v] for v in y] if nested else y}


def test_vehicle_with_test_split(tmp_path):
  root = str(tmp_path)
  train = {
      'f_00001': _vehicle_user(8, 0),
      'f_00000': _vehicle_user(6, 1, False),
  }
  test = {'f_00001': _vehicle_user(3, 2, False), 'f_00000': _vehicle_user(2, 3)}
  _write(os.path.join(root, 'train', 'mytrain.json'), _blob(train))
  _write(os.path.join(root, 'test', 'mytest.json'), _blob(test))
  ds = leaf.load_vehicle(root)
  assert ds.client_ids == ['f_00000', 'f_00001']
  assert ds.label_kind == 'signed' and ds.num_classes == 2
  assert 'DEVIATION' not in ds.description
  te = ds.test['f_00001']
  assert te['x'].dtype == np.float32 and te['x'].shape == (3, 100)
  assert te['y'].dtype == np.float32
  np.testing.assert_array_equal(te['y'], test['f_00001']['y'])
  np.testing.assert_array_equal(
      ds.test['f_00000']['y'], [v[0] for v in test['f_00000']['y']]
  )


def test_vehicle_without_test_dir_carves_seeded_test(tmp_path):
  root = str(tmp_path)
  sizes = {'f_00000': 2, 'f_00001': 7, 'f_00002': 40}
  train = {u: _vehicle_user(n, i) for i, (u, n) in enumerate(sizes.items())}
  _write(os.path.join(root, 'train', 'mytrain.json'), _blob(train))
  ds = leaf.load_vehicle(root, seed=5)
  assert 'DEVIATION' in ds.description and '25%' in ds.description
  assert ds.num_test_examples().tolist() == [1, 2, 10]
  totals = (
      ds.num_train_examples()
      + ds.num_validation_examples()
      + ds.num_test_examples()
  )
  assert totals.tolist() == list(sizes.values())
  again = leaf.load_vehicle(root, seed=5)
  other = leaf.load_vehicle(root, seed=6)
  np.testing.assert_array_equal(
      ds.test['f_00002']['x'], again.test['f_00002']['x']
  )
  assert not np.array_equal(ds.test['f_00002']['x'], other.test['f_00002']['x'])
  # Train, validation and test are disjoint and cover the client's data.
  rows = np.concatenate([
      ds.train['f_00002']['x'],
      ds.validation['f_00002']['x'],
      ds.test['f_00002']['x'],
  ])
  assert len({r.tobytes() for r in rows}) == 40


@pytest.mark.parametrize('label', [0, 2, [1, 1], 0.5])
def test_vehicle_bad_labels(tmp_path, label):
  root = str(tmp_path)
  user = _vehicle_user(4, 0)
  user['y'][1] = label
  _write(os.path.join(root, 'train', 'mytrain.json'), _blob({'f_0': user}))
  with pytest.raises(DataError, match='mytrain.json'):
    leaf.load_vehicle(root)


def test_vehicle_wrong_feature_count(tmp_path):
  root = str(tmp_path)
  user = _vehicle_user(4, 0)
  user['x'] = [row[:99] for row in user['x']]
  _write(os.path.join(root, 'train', 'mytrain.json'), _blob({'f_0': user}))
  with pytest.raises(DataError, match=r'mytrain.json.*100 features'):
    leaf.load_vehicle(root)


def test_vehicle_single_example_client_cannot_be_carved(tmp_path):
  root = str(tmp_path)
  _write(
      os.path.join(root, 'train', 'mytrain.json'),
      _blob({'f_0': _vehicle_user(1, 0)}),
  )
  with pytest.raises(DataError, match='f_0'):
    leaf.load_vehicle(root)


# ----------------------------------------------------------------------------
# LEAF synthetic and CelebA.


def test_leaf_synthetic(tmp_path):
  root = str(tmp_path)
  rng = np.random.default_rng(0)
  user = {
      'x': rng.standard_normal((6, 60)).tolist(),
      'y': [float(v) for v in rng.integers(0, 10, 6)],
  }  # 3.0-style labels
  _write(os.path.join(root, 'train', 'a.json'), _blob({'u0': user}))
  _write(os.path.join(root, 'test', 'a.json'), _blob({'u0': user}))
  ds = leaf.load_leaf_synthetic(root)
  assert ds.train['u0']['x'].shape[1:] == (60,)
  assert ds.num_classes == 10
  np.testing.assert_array_equal(ds.test['u0']['y'], user['y'])
  user['y'][0] = 10
  _write(os.path.join(root, 'test', 'a.json'), _blob({'u0': user}))
  with pytest.raises(DataError, match=r'test.a\.json'):
    leaf.load_leaf_synthetic(root)


def _make_celeba(root, images_dir):
  os.makedirs(images_dir, exist_ok=True)
  names = []
  for i in range(7):
    name = f'{i + 1:06d}.jpg'
    # Solid colours survive JPEG and resizing: image i is (30 i, 100, 200).
    pixels = np.zeros((218, 178, 3), np.uint8) + np.array(
        [30 * i, 100, 200], np.uint8
    )
    Image.fromarray(pixels).save(os.path.join(images_dir, name), quality=95)
    names.append(name)
  train = {
      'celeb_1': {'x': names[:3], 'y': [1, 0, 1]},
      'celeb_0': {'x': names[3:5], 'y': [0, 0]},
  }
  test = {
      'celeb_1': {'x': names[5:6], 'y': [1]},
      'celeb_0': {'x': names[6:], 'y': [0]},
  }
  _write(os.path.join(root, 'train', 't.json'), _blob(train))
  _write(os.path.join(root, 'test', 't.json'), _blob(test))


def test_celeba_reads_images(tmp_path):
  root = str(tmp_path / 'celeba' / 'data')
  _make_celeba(root, os.path.join(root, 'raw', 'img_align_celeba'))
  ds = leaf.load_celeba(root, validation_fraction=0.0)
  assert ds.client_ids == ['celeb_0', 'celeb_1']
  x = ds.train['celeb_1']['x']
  assert x.shape == (3, 84, 84, 3) and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0
  # celeb_1's train images are 000001..000003 (i = 0, 1, 2).
  for i in range(3):
    np.testing.assert_allclose(
        x[i].mean(axis=(0, 1)), np.array([30 * i, 100, 200]) / 255, atol=0.02
    )
  np.testing.assert_array_equal(ds.train['celeb_1']['y'], [1, 0, 1])
  assert ds.test['celeb_0']['y'].dtype == np.int32


def test_celeba_explicit_images_dir(tmp_path):
  root = str(tmp_path / 'json')
  images = str(tmp_path / 'elsewhere' / 'img_align_celeba')
  _make_celeba(root, images)
  ds = leaf.load_celeba(root, images_dir=images)
  assert ds.num_clients == 2


def test_celeba_missing_images_dir_lists_candidates(tmp_path):
  root = str(tmp_path / 'data')
  _make_celeba(root, str(tmp_path / 'hidden'))
  with pytest.raises(DataError) as info:
    leaf.load_celeba(root)
  message = str(info.value)
  for candidate in leaf.celeba_image_dir_candidates(root):
    assert candidate in message


def test_celeba_missing_image_file(tmp_path):
  root = str(tmp_path / 'data')
  images = os.path.join(root, 'img_align_celeba')
  _make_celeba(root, images)
  os.remove(os.path.join(images, '000002.jpg'))
  with pytest.raises(DataError, match=r't\.json.*000002\.jpg'):
    leaf.load_celeba(root)


# ----------------------------------------------------------------------------
# Committed samples and the real data.


def test_committed_samples_load():
  samples = os.path.join(REPO, 'leaf_data', 'samples')
  femnist = leaf.load_femnist(os.path.join(samples, 'femnist'))
  assert femnist.num_clients == 3
  vehicle = leaf.load_vehicle(os.path.join(samples, 'vehicle'))
  assert vehicle.num_clients == 3 and 'DEVIATION' not in vehicle.description
  synthetic = leaf.load_leaf_synthetic(os.path.join(samples, 'synthetic'))
  assert synthetic.num_clients == 3
  total = 0
  for dirpath, _, files in os.walk(samples):
    total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
  assert total < 200_000


@pytest.mark.skipif(
    not os.path.isdir(REAL_FEMNIST), reason='real FEMNIST not present'
)
def test_real_femnist():
  ds = leaf.load_femnist(REAL_FEMNIST)
  assert ds.num_clients == 240
  assert (
      int(ds.num_train_examples().sum() + ds.num_validation_examples().sum())
      == 33980
  )
  assert int(ds.num_test_examples().sum()) == 3898
  x = ds.train[ds.client_ids[0]]['x']
  assert x.shape[1:] == (28, 28, 1) and 0.0 <= x.min() and x.max() <= 1.0
  # LEAF convention: background is 1.0, so most pixels are near 1.
  assert np.median(x) > 0.9


@pytest.mark.skipif(
    not os.path.isdir(REAL_VEHICLE), reason='real Vehicle not present'
)
def test_real_vehicle():
  ds = leaf.load_vehicle(REAL_VEHICLE)
  print(f'\nreal Vehicle: {ds.summary()}')
  assert ds.num_clients == 23
  total = (
      ds.num_train_examples()
      + ds.num_validation_examples()
      + ds.num_test_examples()
  )
  assert int(total.sum()) == 1860
  assert 'DEVIATION' in ds.description
  assert ds.num_test_examples().min() >= 1
  y = np.concatenate([a['y'] for a in ds.train.values()])
  assert set(np.unique(y).tolist()) == {-1.0, 1.0}
