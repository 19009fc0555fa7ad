"""Tests of the Synthetic(alpha, beta) generator and its LEAF JSON round-trip."""

import os

import numpy as np
import pytest

from tff_ditto.data import leaf
from tff_ditto.data import synthetic


def _pooled(split):
  x = np.concatenate([a['x'] for a in split.values()])
  y = np.concatenate([a['y'] for a in split.values()])
  return x, y


def test_default_shapes_and_sizes():
  ds = synthetic.make_synthetic()
  assert ds.num_clients == 30
  assert ds.client_ids == sorted(ds.client_ids)
  assert ds.num_classes == 10 and ds.label_kind == 'categorical'
  first = ds.train[ds.client_ids[0]]
  assert first['x'].dtype == np.float32 and first['x'].shape[1:] == (60,)
  assert first['y'].dtype == np.int32
  total = int(
      ds.num_train_examples().sum()
      + ds.num_validation_examples().sum()
      + ds.num_test_examples().sum()
  )
  assert 1000 <= total <= 9000
  assert ds.num_test_examples().min() >= 1
  # Test is 20% of each client's data.
  sizes = (
      ds.num_train_examples()
      + ds.num_validation_examples()
      + ds.num_test_examples()
  )
  np.testing.assert_array_equal(
      ds.num_test_examples(), np.maximum(1, np.round(0.2 * sizes))
  )
  _, y = _pooled(ds.train)
  assert y.min() >= 0 and y.max() <= 9


def test_seeded_and_deterministic():
  a = synthetic.make_synthetic(seed=7)
  b = synthetic.make_synthetic(seed=7)
  c = synthetic.make_synthetic(seed=8)
  for split in ('train', 'validation', 'test'):
    for cid in a.client_ids:
      np.testing.assert_array_equal(
          getattr(a, split)[cid]['x'], getattr(b, split)[cid]['x']
      )
      np.testing.assert_array_equal(
          getattr(a, split)[cid]['y'], getattr(b, split)[cid]['y']
      )
  assert not np.array_equal(a.train['f_00000']['x'], c.train['f_00000']['x'])


def test_alpha_beta_control_heterogeneity():
  """beta moves the feature means apart; alpha does not change the labels.

  As in FedProx, u_k shifts every entry of W_k and b_k by the same scalar,
  which shifts all logits of an example equally: with the same draws the
  labels are identical for any alpha (alpha only matters through the
  random draws).
  """

  def spread_of_means(ds):
    means = np.stack([a['x'].mean(axis=0) for a in ds.train.values()])
    return means.std(axis=0).mean()

  homogeneous = synthetic.make_synthetic(0.0, 0.0)
  heterogeneous = synthetic.make_synthetic(0.0, 3.0)
  assert spread_of_means(heterogeneous) > 1.5 * spread_of_means(homogeneous)
  other_alpha = synthetic.make_synthetic(2.0, 0.0)
  x0, y0 = _pooled(homogeneous.train)
  x1, y1 = _pooled(other_alpha.train)
  np.testing.assert_array_equal(x0, x1)
  np.testing.assert_array_equal(y0, y1)
  assert homogeneous.name == 'synthetic_0_0'


def _fit_softmax_regression(x, y, steps=300, lr=0.1):
  w = np.zeros((x.shape[1], 10))
  b = np.zeros(10)
  for _ in range(steps):
    z = x @ w + b
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    w -= lr * x.T @ p / len(y)
    b -= lr * p.mean(axis=0)
  return w, b


@pytest.mark.parametrize('alpha_beta', [(1.0, 1.0), (0.5, 0.5), (0.0, 0.0)])
def test_learnable_by_logistic_regression(alpha_beta):
  ds = synthetic.make_synthetic(*alpha_beta)
  w, b = _fit_softmax_regression(*_pooled(ds.train))
  x_test, y_test = _pooled(ds.test)
  accuracy = ((x_test @ w + b).argmax(axis=1) == y_test).mean()
  majority = np.bincount(y_test, minlength=10).max() / len(y_test)
  assert accuracy > 0.5
  assert accuracy > majority + 0.2


def test_uncapped_fedprox_sizes():
  ds = synthetic.make_synthetic(num_clients=10, max_examples_per_client=None)
  sizes = (
      ds.num_train_examples()
      + ds.num_validation_examples()
      + ds.num_test_examples()
  )
  assert sizes.min() >= 50


def test_leaf_json_round_trip_exact(tmp_path):
  ds = synthetic.make_synthetic(num_clients=5, validation_fraction=0.0)
  train_path, test_path = synthetic.write_leaf_json(ds, str(tmp_path))
  assert os.path.isfile(train_path) and os.path.isfile(test_path)
  back = leaf.load_leaf_synthetic(str(tmp_path), validation_fraction=0.0)
  assert back.client_ids == ds.client_ids
  for cid in ds.client_ids:
    for split in ('train', 'test'):
      np.testing.assert_array_equal(
          getattr(back, split)[cid]['x'], getattr(ds, split)[cid]['x']
      )
      np.testing.assert_array_equal(
          getattr(back, split)[cid]['y'], getattr(ds, split)[cid]['y']
      )


def test_leaf_json_round_trip_merges_validation(tmp_path):
  ds = synthetic.make_synthetic(num_clients=4)
  synthetic.write_leaf_json(ds, str(tmp_path))
  back = leaf.load_leaf_synthetic(str(tmp_path))
  np.testing.assert_array_equal(
      back.num_train_examples() + back.num_validation_examples(),
      ds.num_train_examples() + ds.num_validation_examples(),
  )
  np.testing.assert_array_equal(
      back.num_test_examples(), ds.num_test_examples()
  )
  for cid in ds.client_ids:
    original = np.concatenate([ds.train[cid]['y'], ds.validation[cid]['y']])
    loaded = np.concatenate([back.train[cid]['y'], back.validation[cid]['y']])
    assert sorted(original.tolist()) == sorted(loaded.tolist())
