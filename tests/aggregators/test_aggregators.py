"""Tests of tff_ditto.aggregators: real TFF computations on tiny inputs.

Most tests use the 5 clients x 3 coordinates matrix `X` below, whose
expected aggregates are worked out by hand in the comments.
"""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import aggregators as agg
from tff_ditto import ditto

X = np.array(
    [
        [1.0, 0.0, 2.0],
        [2.0, 1.0, 0.0],
        [3.0, 5.0, 1.0],
        [6.0, 2.0, 3.0],
        [10.0, -4.0, 9.0],
    ],
    np.float32,
)
LOSSES = np.array([0.9, 0.1, 0.5, 0.3, 0.7], np.float32)
VECTOR = tff.TensorType(np.float32, [3])
# A two-tensor structure, to exercise flattening: a = X[:, :2], b = X[:, 2:].
STRUCT = tff.types.tensorflow_to_type(
    collections.OrderedDict(a=tf.TensorSpec([2]), b=tf.TensorSpec([1]))
)
FLOAT = tff.TensorType(np.float32)

# Squared distances between the rows of X:
#   d01=6  d02=30 d03=30 d04=146 d12=18 d13=26 d14=170 d23=22 d24=194 d34=88
# Krum, f=1: sum of the n-f-2 = 2 smallest distances to the others:
#   r0: 6+30=36, r1: 6+18=24, r2: 18+22=40, r3: 22+26=48, r4: 88+146=234.
# Row norms: sqrt5, sqrt5, sqrt35, 7, sqrt197 (median sqrt35).
NORMS = np.sqrt(np.array([5.0, 5.0, 35.0, 49.0, 197.0]))


def _norm_clip_expected():
  scale = np.where(NORMS > np.sqrt(35.0), np.sqrt(35.0) / (NORMS + 1e-10), 1.0)
  return (X.astype(np.float64) * scale[:, None]).mean(axis=0)


def _cclip_reference(rows, center, tau, iterations):
  """Centered clipping in numpy (float64)."""
  c = np.asarray(center, np.float64)
  rows = np.asarray(rows, np.float64)
  for _ in range(iterations):
    diff = rows - c
    norms = np.linalg.norm(diff, axis=1)
    scale = np.minimum(1.0, tau / np.maximum(norms, 1e-30))
    c = c + (diff * scale[:, None]).mean(axis=0)
  return c


def _weiszfeld_reference(rows, iterations=8, nu=0.1, z0=None):
  """Smoothed Weiszfeld in numpy (float64), as the bucketing repo's RFA."""
  rows = np.asarray(rows, np.float64)
  n = rows.shape[0]
  z = np.zeros(rows.shape[1]) if z0 is None else np.asarray(z0, np.float64)
  for _ in range(iterations):
    beta = (1.0 / n) / np.maximum(np.linalg.norm(rows - z, axis=1), nu)
    z = (beta[:, None] * rows).sum(axis=0) / beta.sum()
  return z


# name -> (build_aggregator kwargs, expected result on X, expected measurements)
CASES = {
    'mean': ({}, [4.4, 0.8, 3.0], {}),
    # Sorted columns: [1,2,3,6,10], [-4,0,1,2,5], [0,1,2,3,9].
    'median': ({}, [3.0, 1.0, 2.0], {}),
    # b=1 keeps the 3 middle values: (2+3+6)/3, (0+1+2)/3, (1+2+3)/3.
    'trimmed_mean': ({'b': 1}, [11 / 3, 1.0, 2.0], {'trimmed_b': 1}),
    # Lowest score 24: row 1.
    'krum': (
        {'f': 1},
        [2.0, 1.0, 0.0],
        {'krum_selected': 1, 'krum_neighbours': 2, 'krum_num_selected': 1},
    ),
    # m=3 best: rows 1, 0, 2 -> mean [2, 2, 1].
    'multi_krum': ({'f': 1, 'm': 3}, [2.0, 2.0, 1.0], {'krum_num_selected': 3}),
    'rfa': ({}, _weiszfeld_reference(X), {}),
    # tau=7, one iteration from center 0: only row 4 (norm sqrt197) is clipped.
    'cclip': (
        {'tau': 7.0, 'iterations': 1},
        _cclip_reference(X, np.zeros(3), 7.0, 1),
        {'cclip_clipped': 1},
    ),
    # Rows 3 and 4 (norms 7, sqrt197) are rescaled to sqrt35, then averaged.
    'norm_clip': (
        {},
        _norm_clip_expected(),
        {'norm_clipped': 2, 'median_norm': np.sqrt(35.0)},
    ),
    # Drop the largest norm (row 4): mean of rows 0-3 = [3, 2, 1.5].
    'k_norm': ({'num_excluded': 1}, [3.0, 2.0, 1.5], {'k_norm_kept': 4}),
    # Losses sorted: 0.1 (r1), 0.3 (r3), 0.5 (r2), ... -> index 2 = row 2.
    'k_loss': (
        {'num_benign': 3},
        [3.0, 5.0, 1.0],
        {'k_loss_selected': 2, 'k_loss_selected_loss': 0.5},
    ),
}


def _rows_as(value_type, rows):
  if value_type == STRUCT:
    return [collections.OrderedDict(a=r[:2], b=r[2:]) for r in rows]
  return [np.asarray(r, np.float32) for r in rows]


def _as_vector(result):
  if isinstance(result, collections.OrderedDict):
    return np.concatenate([result['a'], result['b']])
  return np.asarray(result)


def run_rounds(factory, rounds, value_type=VECTOR, losses=None):
  """Runs one process over `rounds` (lists of rows); returns the outputs."""
  if isinstance(factory, tff.aggregators.WeightedAggregationFactory):
    process = factory.create(value_type, FLOAT)
  else:
    process = factory.create(value_type)
  state = process.initialize()
  outputs = []
  for i, rows in enumerate(rounds):
    args = [state, _rows_as(value_type, rows)]
    if losses is not None:
      args.append([np.float32(x) for x in losses[i]])
    out = process.next(*args)
    state = out.state
    outputs.append(out)
  return outputs


def _build(name, **extra):
  kwargs, _, _ = CASES[name]
  return agg.build_aggregator(name, **kwargs, **extra)


def _check_measurements(measurements, expected):
  for key, value in expected.items():
    np.testing.assert_allclose(measurements[key], value, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('gather', ['file', 'concat'])
@pytest.mark.parametrize('name', agg.AGGREGATOR_NAMES)
def test_exact_values(name, gather):
  _, expected, measurements = CASES[name]
  losses = [LOSSES] if name == 'k_loss' else None
  (out,) = run_rounds(_build(name, gather=gather), [X], STRUCT, losses)
  np.testing.assert_allclose(
      _as_vector(out.result), expected, rtol=1e-6, atol=1e-5
  )
  assert out.measurements['num_clients'] == 5
  assert out.measurements['non_finite_clients'] == 0
  assert out.measurements['non_finite_result'] == 0
  _check_measurements(out.measurements, measurements)


def test_registry_names_and_errors():
  assert set(agg.AGGREGATOR_NAMES) == set(CASES)
  with pytest.raises(ValueError, match='Unknown aggregator'):
    agg.build_aggregator('nope')
  with pytest.raises(TypeError, match='Unexpected'):
    agg.build_aggregator('median', b=2)
  with pytest.raises(ValueError, match='cannot be bucketed'):
    agg.build_aggregator('k_loss', num_benign=2, bucketing_size=2)
  with pytest.raises(ValueError, match='gather'):
    agg.MedianFactory(gather='nope')
  with pytest.raises(TypeError, match='gather-based'):
    agg.BucketingFactory(tff.aggregators.UnweightedMeanFactory(), 2)
  assert isinstance(
      agg.build_aggregator('rfa', bucketing_size=2), agg.BucketingFactory
  )
  assert isinstance(
      agg.build_aggregator('k_loss', num_benign=1),
      tff.aggregators.WeightedAggregationFactory,
  )
  assert agg.expected_byzantine_per_round(10, 30, 100) == 3


def test_median_even_n_and_trimmed_mean_reduces_b():
  # n=4: columns [1,2,3,6], [0,1,2,5], [0,1,2,3] -> middle pairs averaged.
  (median,) = run_rounds(agg.MedianFactory(), [X[:4]])
  np.testing.assert_allclose(median.result, [2.5, 1.5, 1.5])
  # b=3 with n=5 leaves nothing; b is reduced to (n-1)//2 = 2: the median.
  (trimmed,) = run_rounds(agg.TrimmedMeanFactory(3), [X])
  np.testing.assert_allclose(trimmed.result, [3.0, 1.0, 2.0])
  assert trimmed.measurements['trimmed_b'] == 2


def test_median_and_trimmed_mean_match_numpy_with_ties():
  rng = np.random.default_rng(1)
  rows = rng.integers(-3, 4, size=(8, 3)).astype(np.float32)  # many ties
  rows[2] = [1e6, -1e6, 1e6]
  median, trimmed = (
      out
      for (out,) in (
          run_rounds(agg.MedianFactory(), [rows]),
          run_rounds(agg.TrimmedMeanFactory(2), [rows]),
      )
  )
  np.testing.assert_allclose(median.result, np.median(rows, axis=0))
  ordered = np.sort(rows, axis=0)
  np.testing.assert_allclose(
      trimmed.result, ordered[2:6].mean(axis=0), rtol=1e-6
  )


def test_krum_selection_multi_krum_and_fallback():
  # Multi-Krum with m = n - f = 4 (the Ditto reference's mkrum): rows 1,0,2,3.
  (mkrum,) = run_rounds(agg.KrumFactory(1, m=None), [X])
  np.testing.assert_allclose(mkrum.result, [3.0, 2.0, 1.5])
  assert mkrum.measurements['krum_num_selected'] == 4
  # f=3 leaves n-f-2 = 0 neighbours: documented fallback k=1, i.e. the
  # distance to the nearest other row: r0:6, r1:6, r2:18, r3:22, r4:88;
  # the tie between rows 0 and 1 goes to the lower index.
  (fallback,) = run_rounds(agg.KrumFactory(3), [X])
  np.testing.assert_allclose(fallback.result, X[0])
  assert fallback.measurements['krum_neighbours'] == 1
  # A single client is returned as is.
  (single,) = run_rounds(agg.KrumFactory(1), [X[3:4]])
  np.testing.assert_allclose(single.result, X[3])


def test_rfa_matches_numpy_weiszfeld():
  rng = np.random.default_rng(0)
  rows = rng.normal(size=(6, 3)).astype(np.float32)
  rows[5] = [40.0, -30.0, 25.0]
  (zero_init,) = run_rounds(agg.GeometricMedianFactory(), [rows])
  np.testing.assert_allclose(
      zero_init.result, _weiszfeld_reference(rows), rtol=1e-5, atol=1e-6
  )
  (mean_init,) = run_rounds(
      agg.GeometricMedianFactory(num_iterations=3, nu=0.5, init='mean'), [rows]
  )
  np.testing.assert_allclose(
      mean_init.result,
      _weiszfeld_reference(rows, 3, 0.5, z0=rows.mean(axis=0)),
      rtol=1e-5,
      atol=1e-6,
  )


def test_cclip_state_carries_over_rounds():
  tau, iterations = 1.0, 3
  second_rows = X[::-1] * 0.5
  first, second = run_rounds(
      agg.CenteredClippingFactory(tau, iterations), [X, second_rows]
  )
  c1 = _cclip_reference(X, np.zeros(3), tau, iterations)
  np.testing.assert_allclose(first.result, c1, rtol=1e-5)
  np.testing.assert_allclose(first.state, c1, rtol=1e-5)
  # Round 2 is centred on round 1's aggregate, not on zero.
  c2 = _cclip_reference(second_rows, c1, tau, iterations)
  np.testing.assert_allclose(second.result, c2, rtol=1e-5)
  fresh = _cclip_reference(second_rows, np.zeros(3), tau, iterations)
  assert np.abs(c2 - fresh).max() > 0.1
  # Without clipping (huge tau) the result is the mean.
  (no_clip,) = run_rounds(agg.CenteredClippingFactory(1e9), [X])
  np.testing.assert_allclose(no_clip.result, X.mean(axis=0), rtol=1e-6)


def test_median_norm_clipping_with_inner_rule():
  # Clip rows 3, 4 to norm sqrt35, then the coordinate-wise median.
  scale = np.where(NORMS > np.sqrt(35.0), np.sqrt(35.0) / (NORMS + 1e-10), 1.0)
  clipped = X * scale[:, None]
  (out,) = run_rounds(agg.MedianNormClippingFactory(agg.MedianFactory()), [X])
  np.testing.assert_allclose(out.result, np.median(clipped, axis=0), rtol=1e-6)


def _bucket_means(rows, perm, s):
  permuted = rows[perm]
  return np.stack(
      [permuted[i : i + s].mean(axis=0) for i in range(0, len(rows), s)]
  )


def test_bucketing():
  seed, s = 3, 2
  perm0 = agg.bucketing_permutation(5, seed, 0)
  perm1 = agg.bucketing_permutation(5, seed, 1)
  assert sorted(perm0) == list(range(5))
  assert list(perm0) != list(perm1)  # a fresh permutation every round
  expected = [
      np.median(_bucket_means(X, perm, s), axis=0) for perm in (perm0, perm1)
  ]
  assert np.abs(expected[0] - expected[1]).max() > 0.1
  first, second = run_rounds(
      agg.BucketingFactory(agg.MedianFactory(), s, seed=seed), [X, X]
  )
  np.testing.assert_allclose(first.result, expected[0], rtol=1e-6)
  np.testing.assert_allclose(second.result, expected[1], rtol=1e-6)
  assert first.measurements['bucketing_num_buckets'] == 3
  assert second.state['round'] == 2
  # s = 0 and s = 1 are the inner rule itself.
  for size in (0, 1):
    (out,) = run_rounds(agg.BucketingFactory(agg.MedianFactory(), size), [X])
    np.testing.assert_allclose(out.result, [3.0, 1.0, 2.0])
  # Bucketing a stateful rule keeps the inner state: RFA on bucket means, and
  # CClip whose second round is centred on the first's result.
  (rfa,) = run_rounds(agg.build_aggregator('rfa', bucketing_size=2), [X])
  np.testing.assert_allclose(
      rfa.result,
      _weiszfeld_reference(
          _bucket_means(X, agg.bucketing_permutation(5, 0, 0), 2)
      ),
      rtol=1e-5,
  )
  c_first, c_second = run_rounds(
      agg.BucketingFactory(agg.CenteredClippingFactory(1.0), 2, seed=1), [X, X]
  )
  means = [
      _bucket_means(X, agg.bucketing_permutation(5, 1, r), 2) for r in (0, 1)
  ]
  c1 = _cclip_reference(means[0], np.zeros(3), 1.0, 3)
  np.testing.assert_allclose(c_first.result, c1, rtol=1e-5)
  np.testing.assert_allclose(
      c_second.result, _cclip_reference(means[1], c1, 1.0, 3), rtol=1e-5
  )


def _distance_to_box(z, lo, hi):
  return float(np.linalg.norm(np.maximum(0, lo - z) + np.maximum(0, z - hi)))


def test_byzantine_tolerance():
  """f=2 of n=7 updates are outliers of norm 1e6.

  Median, trimmed mean (b=f) and Krum must land in the honest clients'
  coordinate-wise hull (the box [min, max] of the honest rows). RFA and CClip
  may leave it by a bounded amount:
  * CClip (tau, T iterations, from centre 0, which lies inside the box since
    every honest coordinate straddles 0): each iteration is a convex
    combination of the centre and honest points (the honest clip factors are
    in [0, 1] and sum to less than n), which stays in the box, plus the
    outliers' clipped contribution of norm <= f*tau/n. So the distance to the
    box is <= T*f*tau/n.
  * RFA: the geometric median of n points of which more than half are honest
    lies within 2(n-f)/(n-2f) * max_h ||h - y|| of any point y, taking y =
    the honest mean; smoothed Weiszfeld converges towards it, and with
    outliers at 1e6 their weights ~1/1e6 are negligible after one step.
  The plain mean is checked to break, to show the attack is effective.
  """
  honest = np.array(
      [
          [0.5, -0.2, 0.1],
          [-0.3, 0.4, -0.1],
          [0.2, 0.1, 0.3],
          [-0.1, -0.3, 0.2],
          [0.4, 0.2, -0.2],
      ],
      np.float32,
  )
  outliers = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.5]], np.float32)
  outliers = 1e6 * outliers / np.linalg.norm(outliers, axis=1, keepdims=True)
  rows = np.concatenate(
      [honest[:2], outliers[:1], honest[2:4], outliers[1:], honest[4:]]
  )
  n, f, tau, iterations = 7, 2, 1.0, 3
  lo, hi = honest.min(axis=0), honest.max(axis=0)
  results = {}
  for name, factory in {
      'median': agg.MedianFactory(),
      'trimmed_mean': agg.TrimmedMeanFactory(f),
      'krum': agg.KrumFactory(f),
      'rfa': agg.GeometricMedianFactory(),
      'cclip': agg.CenteredClippingFactory(tau, iterations),
      'mean': agg.MeanFactory(),
  }.items():
    (out,) = run_rounds(factory, [rows])
    results[name] = np.asarray(out.result, np.float64)
  for name in ('median', 'trimmed_mean', 'krum'):
    assert _distance_to_box(results[name], lo, hi) == 0.0, name
  assert any(np.array_equal(results['krum'], h) for h in honest)
  assert (
      _distance_to_box(results['cclip'], lo, hi)
      <= iterations * f * tau / n + 1e-6
  )
  spread = np.linalg.norm(honest - honest.mean(axis=0), axis=1).max()
  radius = 2 * (n - f) / (n - 2 * f) * spread
  assert np.linalg.norm(results['rfa'] - honest.mean(axis=0)) <= radius
  assert _distance_to_box(results['rfa'], lo, hi) <= radius
  assert np.linalg.norm(results['mean']) > 1e5


def test_non_finite_updates_are_dropped_and_counted():
  """For every rule (and a bucketed one): NaN/Inf rows never reach the result.

  Round 1 has only non-finite updates: zeros, state kept. Round 2 interleaves
  3 non-finite rows with X: the result is the clean expected value.
  """
  bad = np.array(
      [[np.nan, 0.0, 0.0], [np.inf, 1.0, 1.0], [0.0, -np.inf, 0.0]], np.float32
  )
  mixed = np.stack([X[0], bad[0], X[1], X[2], bad[1], X[3], bad[2], X[4]])
  names = list(agg.AGGREGATOR_NAMES) + ['bucketed_median']
  for name in names:
    if name == 'bucketed_median':
      factory = agg.BucketingFactory(agg.MedianFactory(), 2, seed=3)
      expected = np.median(
          _bucket_means(X, agg.bucketing_permutation(5, 3, 0), 2), axis=0
      )
    else:
      factory = _build(name)
      expected = CASES[name][1]
    losses = None
    round2 = mixed
    if name == 'k_loss':
      # Non-finite rows report the lowest losses (they would be picked), and
      # one extra finite row reports a NaN loss: all four are dropped.
      round2 = np.concatenate([mixed, [[7.0, 7.0, 7.0]]])
      losses = [
          np.zeros(3, np.float32),
          np.array(
              [0.9, 0.0, 0.1, 0.5, 0.0, 0.3, 0.0, 0.7, np.nan], np.float32
          ),
      ]
    empty, out = run_rounds(factory, [bad, round2], losses=losses)
    np.testing.assert_array_equal(empty.result, np.zeros(3), err_msg=name)
    assert empty.measurements['non_finite_clients'] == 3, name
    np.testing.assert_allclose(
        out.result, expected, rtol=1e-6, atol=1e-5, err_msg=name
    )
    assert out.measurements['num_clients'] == len(round2), name
    assert out.measurements['non_finite_clients'] == len(round2) - 5, name


def test_file_gather_in_a_directory(tmp_path):
  directory = str(tmp_path / 'gather')
  factory = agg.MedianFactory(gather_dir=directory)
  first, second = run_rounds(factory, [X, X[:3]])
  np.testing.assert_allclose(first.result, [3.0, 1.0, 2.0])
  np.testing.assert_allclose(second.result, [2.0, 1.0, 1.0])
  (subdir,) = os.listdir(directory)
  files = sorted(os.listdir(os.path.join(directory, subdir)))
  # One slot per client of the largest round, reused, emptied after reading.
  assert files == [f'{i:08d}' for i in range(5)]
  assert all(
      os.path.getsize(os.path.join(directory, subdir, f)) == 0 for f in files
  )
  # TF 2.14's ram:// appends on rewrite, which would corrupt reused slots.
  with pytest.raises(ValueError, match='ram://'):
    agg.MedianFactory(gather_dir='ram://x').create(VECTOR)


def test_composition_with_tff_clipping_and_zeroing():
  # Unweighted: TFF's zeroing (L2 norm > 8 -> zeros: row 4) in front of the
  # median: columns [1,2,3,6,0], [0,1,5,2,0], [2,0,1,3,0] -> [2, 1, 1].
  zeroing = tff.aggregators.zeroing_factory(
      8.0, agg.MedianFactory(), norm_order=2.0
  )
  (out,) = run_rounds(zeroing, [X])
  np.testing.assert_allclose(out.result, [2.0, 1.0, 1.0])
  # Weighted: TFF's L2 clipping at norm 1 in front of k-loss, whose weights
  # (the losses) pass through: the selected row (row 2) comes out clipped.
  clipping = tff.aggregators.clipping_factory(1.0, agg.KLossFactory(3))
  (out,) = run_rounds(clipping, [X], losses=[LOSSES])
  np.testing.assert_allclose(out.result, X[2] / np.linalg.norm(X[2]), rtol=1e-6)
  # Weighted wrapper of an unweighted rule, clipped: median of clipped rows.
  clipping = tff.aggregators.clipping_factory(
      1.0, tff.aggregators.as_weighted_aggregator(agg.MedianFactory())
  )
  (out,) = run_rounds(clipping, [X], losses=[np.ones(5)])
  clipped = X / np.maximum(1.0, np.linalg.norm(X, axis=1, keepdims=True))
  np.testing.assert_allclose(out.result, np.median(clipped, axis=0), rtol=1e-6)


# ------------------------------------------------ learning-process plumbing

_FEATURES = 3


def _model_fn():
  keras_model = tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(_FEATURES,)),
      tf.keras.layers.Dense(2),
  ])
  return tff.learning.models.from_keras_model(
      keras_model,
      loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=collections.OrderedDict(
          x=tf.TensorSpec([None, _FEATURES], tf.float32),
          y=tf.TensorSpec([None], tf.int32),
      ),
  )


def _client_datasets(num_clients=3):
  rng = np.random.default_rng(0)
  datasets = []
  for _ in range(num_clients):
    x = rng.normal(size=(8, _FEATURES)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    datasets.append(
        tf.data.Dataset.from_tensor_slices(
            collections.OrderedDict(x=x, y=y)
        ).batch(4)
    )
  return datasets


def _find(metrics, key):
  """The first value under `key` anywhere in a nested metrics dict."""
  if isinstance(metrics, dict):
    if key in metrics:
      return metrics[key]
    for value in metrics.values():
      found = _find(value, key)
      if found is not None:
        return found
  return None


def test_plugs_into_build_weighted_fed_avg():
  process = tff.learning.algorithms.build_weighted_fed_avg(
      _model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.5),
      model_aggregator=tff.aggregators.as_weighted_aggregator(
          agg.build_aggregator('median')
      ),
  )
  state = process.initialize()
  before = process.get_model_weights(state).trainable
  out = process.next(state, _client_datasets())
  after = process.get_model_weights(out.state).trainable
  assert _find(out.metrics, 'num_clients') == 3
  assert _find(out.metrics, 'non_finite_clients') == 0
  assert all(np.all(np.isfinite(w)) for w in after)
  assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(after, before))


def test_plugs_into_build_ditto_process():
  process = ditto.build_ditto_process(
      _model_fn,
      client_optimizer=tff.learning.optimizers.build_sgdm(learning_rate=0.5),
      personal_lambda=0.1,
      local_steps=2,
      model_aggregator=agg.build_aggregator('cclip', tau=1.0, bucketing_size=2),
      personalize=False,
  )
  state = process.initialize()
  out = process.next(state, _client_datasets())
  out = process.next(out.state, _client_datasets())
  assert _find(out.metrics, 'num_clients') == 3
  assert _find(out.metrics, 'bucketing_num_buckets') == 2
  assert all(
      np.all(np.isfinite(w))
      for w in process.get_model_weights(out.state).trainable
  )


def test_factories_check_their_rule_and_gather():
  median = agg.MedianRule()
  k_loss = agg.KLossRule(num_benign=2)
  factory = agg.RobustAggregatorFactory(median, gather='file', gather_dir='/x')
  assert (factory.rule, factory.gather, factory.gather_dir) == (
      median,
      'file',
      '/x',
  )
  weighted = agg.WeightedRobustAggregatorFactory(k_loss)
  assert (weighted.rule, weighted.gather) == (k_loss, agg.DEFAULT_GATHER)
  with pytest.raises(ValueError, match='gather must be one of'):
    agg.RobustAggregatorFactory(median, gather='carrier_pigeon')
  with pytest.raises(ValueError, match='gather must be one of'):
    agg.WeightedRobustAggregatorFactory(k_loss, gather='carrier_pigeon')
  with pytest.raises(ValueError, match='needs per-client weights'):
    agg.RobustAggregatorFactory(k_loss)
  with pytest.raises(ValueError, match='does not use weights'):
    agg.WeightedRobustAggregatorFactory(median)
