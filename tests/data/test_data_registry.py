"""Tests of `load_dataset`: names, data_dir resolution, common options."""

import os
import sqlite3

import numpy as np
import pytest
import tensorflow as tf

import repo_paths
from tff_ditto.data import DATASET_NAMES
from tff_ditto.data import DataError
from tff_ditto.data import load_dataset
from tff_ditto.data import registry
from tff_ditto.data import synthetic
from tff_ditto.data.leaf_json import write_leaf_split

REPO = repo_paths.REPO
SAMPLES = os.path.join(REPO, 'leaf_data', 'samples')
SHARED = '/work/shared/data'


def test_names():
  assert set(DATASET_NAMES) == {
      'synthetic',
      'femnist',
      'celeba',
      'vehicle',
      'leaf_synthetic',
      'fmnist',
      'emnist',
      'tff_celeba',
  }


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as info:
    load_dataset('mnist')
  for name in DATASET_NAMES:
    assert name in str(info.value)
  with pytest.raises(ValueError):
    load_dataset('synthetic_a_b')


@pytest.mark.parametrize(
    'name, params',
    [
        ('synthetic', (1.0, 1.0)),
        ('synthetic_1_1', (1.0, 1.0)),
        ('synthetic_0.5_0.5', (0.5, 0.5)),
        ('synthetic_0_0', (0.0, 0.0)),
        ('synthetic_iid', None),
    ],
)
def test_parse_synthetic_name(name, params):
  assert registry.parse_synthetic_name(name) == params


def test_synthetic_ignores_data_dir_and_passes_options():
  ds = load_dataset(
      'synthetic_0.5_0.5',
      '/does/not/exist',
      seed=3,
      validation_fraction=0.2,
      max_clients=4,
  )
  reference = synthetic.make_synthetic(
      0.5, 0.5, seed=3, validation_fraction=0.2
  )
  assert ds.client_ids == reference.client_ids[:4]
  np.testing.assert_array_equal(
      ds.validation['f_00001']['x'], reference.validation['f_00001']['x']
  )
  assert load_dataset('synthetic').name == 'synthetic_1_1'


def test_leaf_dir_resolution(tmp_path):
  # Direct folder, parent folder, and LEAF's own <parent>/<name>/data layout.
  direct = os.path.join(SAMPLES, 'femnist')
  assert load_dataset('femnist', direct).num_clients == 3
  assert load_dataset('femnist', SAMPLES, max_clients=2).num_clients == 2
  assert load_dataset('vehicle', SAMPLES).label_kind == 'signed'
  assert load_dataset('leaf_synthetic', SAMPLES).num_clients == 3
  leaf_layout = tmp_path / 'leaf' / 'data'
  rng = np.random.default_rng(0)
  for split in ('train', 'test'):
    write_leaf_split(
        str(leaf_layout / 'vehicle' / 'data' / split / 'x.json'),
        {
            c: {
                'x': rng.standard_normal((4, 100)),
                'y': rng.choice([-1, 1], (4, 1)),
            }
            for c in ('s1', 's0')
        },
    )
  ds = load_dataset('vehicle', str(leaf_layout))
  assert ds.client_ids == ['s0', 's1'] and 'DEVIATION' not in ds.description


def test_missing_leaf_data(tmp_path):
  with pytest.raises(DataError) as info:
    load_dataset('femnist', str(tmp_path))
  assert os.path.join(str(tmp_path), 'femnist', 'train') in str(info.value)
  with pytest.raises(DataError, match='needs data_dir'):
    load_dataset('vehicle')
  with pytest.raises(DataError, match='not found'):
    load_dataset('celeba', str(tmp_path / 'absent'))


def test_fmnist_parent_dir(tmp_path):
  root = tmp_path / 'fmnist'
  root.mkdir()
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 5).astype(np.uint8)
  np.savez(
      str(root / 'pool.npz'),
      x_train=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
      y_train=labels,
      x_test=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
      y_test=labels,
  )
  ds = load_dataset('fmnist', str(tmp_path), max_clients=3, seed=2)
  assert ds.client_ids == ['f_00000', 'f_00001', 'f_00002']
  assert 'seed 233' in ds.description
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(DataError, match='no Fashion-MNIST source'):
    load_dataset('fmnist', str(empty))


def test_emnist_via_registry(tmp_path):
  cache = tmp_path / 'emnist'
  cache.mkdir()
  with sqlite3.connect(str(cache / 'emnist_all.sqlite')) as con:
    con.execute(
        'CREATE TABLE examples (split_name TEXT, client_id TEXT, '
        'serialized_example_proto BLOB);'
    )
    con.execute(
        'CREATE TABLE client_metadata (client_id TEXT, split_name '
        'TEXT, num_examples INTEGER);'
    )
    for split in ('all_train', 'all_test'):
      for cid in ('a', 'b'):
        proto = tf.train.Example(
            features=tf.train.Features(
                feature={
                    'pixels': tf.train.Feature(
                        float_list=tf.train.FloatList(value=[0.5] * 784)
                    ),
                    'label': tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[7])
                    ),
                }
            )
        ).SerializeToString()
        con.executemany(
            'INSERT INTO examples VALUES (?, ?, ?);', [(split, cid, proto)] * 2
        )
        con.execute(
            'INSERT INTO client_metadata VALUES (?, ?, 2);', (cid, split)
        )
  for data_dir in (str(cache), str(tmp_path)):
    ds = load_dataset('emnist', data_dir)
    assert ds.client_ids == ['a', 'b'] and ds.num_classes == 62
  with pytest.raises(DataError, match='celeba.sqlite'):
    load_dataset('tff_celeba', str(tmp_path))


@pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED, 'femnist')),
    reason='shared data not present',
)
def test_shared_data_parent():
  ds = load_dataset('femnist', SHARED, max_clients=3)
  assert ds.num_clients == 3 and ds.client_ids == sorted(ds.client_ids)
  vehicle = load_dataset('vehicle', SHARED)
  assert vehicle.num_clients == 23
