"""Example-weighted aggregation (`--weighted_aggregation`), real TFF runs.

The rules' weighted forms are checked against numpy references: for the
mean, the median, RFA and centered clipping, client i with integer weight
w_i must count exactly as w_i copies of its update, so their reference is
the unweighted numpy rule on the rows repeated w_i times; the rules that
count clients (trimmed mean, Multi-Krum, k-norm, norm clipping, bucketing)
have explicit numpy references. The end-to-end test runs one round of two
`ExperimentRunner`s that differ only in `weighted_aggregation`.
"""

from __future__ import annotations


import numpy as np
import pytest
import tensorflow_federated as tff

from tff_ditto import aggregator_specs
from tff_ditto import aggregators as agg
from tff_ditto import sampling
from tff_ditto import training
from tff_ditto import training_config
from tff_ditto.aggregators import omniscient
from test_aggregators import X  # 5 clients x 3 coordinates

# Integer weights (example counts); the second has an even total (8) whose
# half is hit exactly by the cumulative weight of some coordinates' values.
WEIGHTS = np.array([1.0, 4.0, 2.0, 3.0, 5.0], np.float32)
EVEN_WEIGHTS = np.array([2.0, 2.0, 1.0, 1.0, 2.0], np.float32)
VECTOR = tff.TensorType(np.float32, [3])
FLOAT = tff.TensorType(np.float32)

WEIGHTABLE = tuple(
    name for name in agg.AGGREGATOR_NAMES if name not in agg.NO_WEIGHTED_FORM
)
# name -> build_aggregator parameters, as in tests/aggregators/test_aggregators.py.
PARAMETERS = {
    'mean': {},
    'median': {},
    'trimmed_mean': {'b': 1},
    'multi_krum': {'f': 1, 'm': 3},
    'rfa': {},
    'cclip': {'tau': 7.0, 'iterations': 2},
    'norm_clip': {},
    'k_norm': {'num_excluded': 1},
}


# ------------------------------------------------------ numpy references


def _repeated(rows, weights):
  """Row i repeated weights[i] (an integer) times."""
  return np.repeat(
      np.asarray(rows, np.float64), np.asarray(weights).astype(int), axis=0
  )


def _weighted_mean(rows, weights):
  weights = np.asarray(weights, np.float64)
  return weights @ np.asarray(rows, np.float64) / weights.sum()


def _weiszfeld(rows, iterations=8, nu=0.1):
  """Unweighted smoothed Weiszfeld from z0 = 0 (the bucketing repo's RFA)."""
  rows = np.asarray(rows, np.float64)
  z = np.zeros(rows.shape[1])
  for _ in range(iterations):
    beta = (1.0 / len(rows)) / np.maximum(np.linalg.norm(rows - z, axis=1), nu)
    z = beta @ rows / beta.sum()
  return z


def _cclip(rows, tau, iterations):
  """Unweighted centered clipping from center 0."""
  rows = np.asarray(rows, np.float64)
  center = np.zeros(rows.shape[1])
  for _ in range(iterations):
    diff = rows - center
    scale = np.minimum(1.0, tau / np.linalg.norm(diff, axis=1))
    center = center + (diff * scale[:, None]).mean(axis=0)
  return center


def _weighted_trimmed_mean(rows, weights, b):
  """Per column: stable sort, drop b at each end, weighted mean of the rest."""
  rows = np.asarray(rows, np.float64)
  result = []
  for column in rows.T:
    kept = np.argsort(column, kind='stable')[b : len(column) - b]
    result.append(_weighted_mean(column[kept, None], weights[kept])[0])
  return np.array(result)


def _median_norm_clipped(rows):
  rows = np.asarray(rows, np.float64)
  norms = np.linalg.norm(rows, axis=1)
  median = np.median(norms)
  scale = np.where(norms > median, median / (norms + 1e-10), 1.0)
  return rows * scale[:, None]


def _reference(name, rows, weights):
  """The weighted form of rule `name` (PARAMETERS) in numpy."""
  if name == 'mean':
    return _repeated(rows, weights).mean(axis=0)
  if name == 'median':
    return np.median(_repeated(rows, weights), axis=0)
  if name == 'rfa':
    return _weiszfeld(_repeated(rows, weights))
  if name == 'cclip':
    return _cclip(_repeated(rows, weights), tau=7.0, iterations=2)
  if name == 'trimmed_mean':
    return _weighted_trimmed_mean(rows, weights, b=1)
  if name == 'multi_krum':
    # f=1, m=3 on X selects rows 1, 0, 2 (tests/aggregators/test_aggregators.py).
    return _weighted_mean(rows[[1, 0, 2]], weights[[1, 0, 2]])
  if name == 'norm_clip':
    return _weighted_mean(_median_norm_clipped(rows), weights)
  if name == 'k_norm':
    # Row 4 has the largest norm.
    return _weighted_mean(rows[:4], weights[:4])
  raise ValueError(name)


def _unweighted_reference(name, rows):
  return _reference(name, rows, np.ones(len(rows)))


# ------------------------------------------------------------- helpers


def _aggregate(factory, rows, weights, rounds=1):
  """Runs a weighted factory's process; returns the last round's output."""
  process = factory.create(VECTOR, FLOAT)
  state = process.initialize()
  for _ in range(rounds):
    output = process.next(
        state,
        [np.asarray(r, np.float32) for r in rows],
        [np.float32(w) for w in weights],
    )
    state = output.state
  return output


def _unweighted(factory, rows):
  process = factory.create(VECTOR)
  return process.next(
      process.initialize(), [np.asarray(r, np.float32) for r in rows]
  )


# ------------------------------------------------------------ the rules


def test_every_rule_but_krum_and_k_loss_has_a_weighted_form():
  assert set(agg.NO_WEIGHTED_FORM) == {'krum', 'k_loss'}
  assert set(WEIGHTABLE) == set(PARAMETERS)


@pytest.mark.parametrize(
    'weights', [WEIGHTS, EVEN_WEIGHTS], ids=['odd', 'even']
)
@pytest.mark.parametrize('name', WEIGHTABLE)
def test_weighted_rule_matches_numpy(name, weights):
  factory = agg.build_aggregator(name, weighted=True, **PARAMETERS[name])
  assert isinstance(factory, tff.aggregators.WeightedAggregationFactory)
  output = _aggregate(factory, X, weights)
  expected = _reference(name, X, weights)
  np.testing.assert_allclose(output.result, expected, rtol=1e-5, atol=1e-5)
  assert output.measurements['zero_weight_clients'] == 0
  # The weights matter: the unweighted rule gives something else.
  assert np.abs(expected - _unweighted_reference(name, X)).max() > 1e-2


@pytest.mark.parametrize('name', ['mean', 'median'])
def test_concat_gather_carries_the_weights(name):
  factory = agg.build_aggregator(name, weighted=True, gather='concat')
  assert factory.gather == 'concat'
  np.testing.assert_allclose(
      _aggregate(factory, X, WEIGHTS).result,
      _reference(name, X, WEIGHTS),
      rtol=1e-5,
  )


@pytest.mark.parametrize('name', WEIGHTABLE)
def test_equal_weights_give_the_unweighted_rule(name):
  weighted = agg.build_aggregator(name, weighted=True, **PARAMETERS[name])
  unweighted = agg.build_aggregator(name, **PARAMETERS[name])
  result = _aggregate(weighted, X, np.full([5], 3.0)).result
  np.testing.assert_allclose(
      result, _unweighted(unweighted, X).result, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
      result, _unweighted_reference(name, X), rtol=1e-5, atol=1e-5
  )


def test_weighted_median_ties_and_single_heavy_client():
  # Client 4 holds more than half of all examples: it is the median.
  heavy = np.array([1.0, 1.0, 1.0, 1.0, 5.0], np.float32)
  factory = agg.build_aggregator('median', weighted=True)
  np.testing.assert_allclose(_aggregate(factory, X, heavy).result, X[4])
  # Exactly half the weight on each side: the mean of the two middle values.
  rows = np.array([[0.0, 4.0, 1.0], [2.0, 0.0, 1.0]], np.float32)
  np.testing.assert_allclose(
      _aggregate(factory, rows, [3.0, 3.0]).result, [1.0, 2.0, 1.0]
  )


def test_stateful_weighted_cclip_keeps_its_center():
  factory = agg.build_aggregator('cclip', weighted=True, tau=1.0, iterations=1)
  second = _aggregate(factory, X, WEIGHTS, rounds=2)
  rows = _repeated(X, WEIGHTS)
  center = np.zeros(3)
  for _ in range(2):  # one iteration per round, centred on the last result
    diff = rows - center
    scale = np.minimum(1.0, 1.0 / np.linalg.norm(diff, axis=1))
    center = center + (diff * scale[:, None]).mean(axis=0)
  np.testing.assert_allclose(second.result, center, rtol=1e-5)


@pytest.mark.parametrize('inner', ['mean', 'median'])
def test_weighted_bucketing_weights_buckets_by_their_members(inner):
  seed, size = 3, 2
  factory = agg.build_aggregator(
      inner, weighted=True, bucketing_size=size, bucketing_seed=seed
  )
  output = _aggregate(factory, X, WEIGHTS)
  perm = agg.bucketing_permutation(5, seed, 0)
  groups = [perm[i : i + size] for i in range(0, 5, size)]
  bucket_weights = np.array([WEIGHTS[g].sum() for g in groups])
  bucket_means = np.stack([_weighted_mean(X[g], WEIGHTS[g]) for g in groups])
  if inner == 'mean':
    expected = _weighted_mean(bucket_means, bucket_weights)
    # Bucketing does not change a weighted mean.
    np.testing.assert_allclose(expected, _weighted_mean(X, WEIGHTS), atol=1e-12)
  else:
    expected = np.array([
        _weighted_median_1d(bucket_means[:, j], bucket_weights)
        for j in range(3)
    ])
  np.testing.assert_allclose(output.result, expected, rtol=1e-5, atol=1e-6)
  assert output.measurements['bucketing_num_buckets'] == 3


def _weighted_median_1d(values, weights):
  """np.median of the values, each repeated (integer) weight times."""
  return np.median(np.repeat(values, np.asarray(weights).astype(int)))


def test_zero_weight_clients_are_dropped_and_counted():
  weights = np.array([0.0, 4.0, 2.0, 0.0, 5.0], np.float32)
  kept = [1, 2, 4]
  for name in ('median', 'trimmed_mean', 'k_norm'):
    factory = agg.build_aggregator(name, weighted=True, **PARAMETERS[name])
    output = _aggregate(factory, X, weights)
    weighted_kept = _aggregate(factory, X[kept], weights[kept])
    np.testing.assert_allclose(output.result, weighted_kept.result)
    assert output.measurements['zero_weight_clients'] == 2
    assert output.measurements['non_finite_clients'] == 0
  # Nobody left: zeros, and CClip keeps its state.
  factory = agg.build_aggregator('cclip', weighted=True, tau=1.0)
  output = _aggregate(factory, X, np.zeros([5]))
  np.testing.assert_array_equal(output.result, np.zeros(3))
  np.testing.assert_array_equal(output.state, np.zeros(3))
  assert output.measurements['zero_weight_clients'] == 5


def test_non_finite_weighted_clients_are_dropped():
  rows = X.copy()
  rows[2, 1] = np.nan
  factory = agg.build_aggregator('mean', weighted=True)
  output = _aggregate(factory, rows, WEIGHTS)
  kept = [0, 1, 3, 4]
  np.testing.assert_allclose(
      output.result, _weighted_mean(X[kept], WEIGHTS[kept]), rtol=1e-6
  )
  assert output.measurements['non_finite_clients'] == 1
  assert output.measurements['zero_weight_clients'] == 0


@pytest.mark.parametrize('name', sorted(agg.NO_WEIGHTED_FORM))
def test_rules_without_a_weighted_form_are_refused(name):
  parameters = {'krum': {'f': 1}, 'k_loss': {'num_benign': 3}}[name]
  with pytest.raises(ValueError, match=f"'{name}' has no example-weighted"):
    agg.build_aggregator(name, weighted=True, **parameters)


def test_krum_cannot_be_weighted_even_inside_wrappers():
  for factory in (
      agg.KrumFactory(f=1),
      agg.BucketingFactory(agg.KrumFactory(f=1), 2),
      agg.MedianNormClippingFactory(agg.KrumFactory(f=1)),
  ):
    with pytest.raises(ValueError, match='no example-weighted form'):
      agg.ExampleWeightedFactory(factory)
  with pytest.raises(ValueError, match='uses the weight input'):
    agg.ExampleWeightedFactory(agg.KLossRule(3))


# ----------------------------------------------------- omniscient attacks


def test_omniscient_attack_in_front_of_a_weighted_rule():
  honest = X[:3]
  rows = np.concatenate([honest, np.full([1, 3], 1e6, np.float32)])
  # The attacker (negative mark) holds 4 examples; client 1 rejected its
  # update (weight 0) and is dropped.
  weights = np.array([1.0, 0.0, 2.0, -4.0], np.float32)
  factory = omniscient.OmniscientAttackFactory(
      agg.build_aggregator('mean', weighted=True), 'ipm'
  )
  output = _aggregate(factory, rows, weights)
  kept_honest = honest[[0, 2]]
  message = -omniscient.IPM_EPSILON * kept_honest.mean(axis=0)
  expected = _weighted_mean(
      np.concatenate([kept_honest, message[None]]), [1.0, 2.0, 4.0]
  )
  np.testing.assert_allclose(output.result, expected, rtol=1e-5)
  assert output.measurements['omniscient_attackers'] == 1
  assert output.measurements['zero_weight_clients'] == 1


def test_omniscient_attack_cannot_wrap_krum_weighted():
  with pytest.raises(ValueError, match='no example-weighted form'):
    omniscient.OmniscientAttackRule(agg.KrumRule(1), 'ipm', weighted=True)


# ------------------------------------------------------- configuration


@pytest.mark.parametrize('name', sorted(agg.NO_WEIGHTED_FORM))
def test_config_refuses_weighted_aggregation_without_a_weighted_form(name):
  config = training_config.ExperimentConfig(
      aggregator=name, weighted_aggregation=True
  )
  with pytest.raises(ValueError, match=f'aggregator {name} has no example-'):
    config.validate()
  training_config.ExperimentConfig(aggregator=name).validate()


def test_spec_builds_the_weighted_factory():
  config = training_config.ExperimentConfig(
      aggregator='median', weighted_aggregation=True, bucketing_size=2
  )
  config.validate()
  spec = aggregator_specs.model_aggregator_spec(config, 20, 0)
  assert spec.weighted
  assert spec != aggregator_specs.model_aggregator_spec(
      training_config.ExperimentConfig(aggregator='median', bucketing_size=2),
      20,
      0,
  )
  factory = spec.build()
  assert isinstance(factory, agg.ExampleWeightedFactory)
  assert isinstance(factory.weighted_rule, agg.BucketingRule)
  attacked = aggregator_specs.model_aggregator_spec(
      training_config.ExperimentConfig(
          aggregator='median',
          weighted_aggregation=True,
          attack='alie',
          attack_ratio=0.2,
      ),
      20,
      4,
  ).build()
  assert isinstance(attacked, omniscient.OmniscientAttackFactory)
  assert attacked.rule.weighted


# ------------------------------------------------------------ end to end


@pytest.fixture(scope='module')
def dataset(synthetic_six_clients):
  return synthetic_six_clients


@pytest.fixture(scope='module')
def model_fn(synthetic_model_fn):
  return synthetic_model_fn


def _weights_list(process, state):
  weights = process.get_model_weights(state)
  return [np.asarray(w, np.float64) for w in weights.trainable]


def test_weighted_aggregation_weights_the_global_update_by_train_size(
    tmp_path, dataset, model_fn
):
  """One Ditto round of 3 clients, unweighted and weighted, against numpy."""
  runners = {}
  for weighted in (False, True):
    config = training_config.ExperimentConfig(
        method='ditto',
        rounds=1,
        clients_per_round=3,
        local_steps=2,
        batch_size=10,
        lam=0.5,
        sampling='uniform',
        seed=0,
        weighted_aggregation=weighted,
    )
    runners[weighted] = training.ExperimentRunner(
        config,
        dataset,
        model_fn,
        str(tmp_path / f'weighted_{weighted}'),
        log_fn=None,
    )
  unweighted, weighted = runners[False], runners[True]
  assert unweighted.method.client_data_fields.num_train_examples is False
  assert weighted.method.client_data_fields.num_train_examples is True
  process = unweighted.process
  start_state = unweighted.state
  start = _weights_list(process, start_state)
  clients = sampling.sample_clients(
      0, dataset.num_train_examples(), 3, seed=0, mode='uniform'
  )
  sizes = dataset.num_train_examples()[clients].astype(np.float64)
  assert len(set(sizes)) == len(sizes)  # different example counts
  # Each client's delta (w_t - w_k, TFF's sign): its round alone through the
  # unweighted process (the mean of one delta is the delta).
  deltas = []
  for client in clients:
    alone = process.next(
        start_state,
        unweighted.round_data.client_data(
            0, [client], unweighted.method.client_data_fields
        ),
    )
    deltas.append(
        [s - w for s, w in zip(start, _weights_list(process, alone.state))]
    )
  # Building round data moves the clients' batch streams: rewind them so the
  # runners' round 0 trains on the same batches.
  unweighted.batch_streams.positions[:] = 0
  for runner in runners.values():
    runner.run_round(0)
  results = {
      name: _weights_list(runner.process, runner.state)
      for name, runner in runners.items()
  }
  for index, start_variable in enumerate(start):
    client_deltas = np.stack([delta[index] for delta in deltas])
    plain = start_variable - client_deltas.mean(axis=0)
    by_size = start_variable - np.tensordot(
        sizes / sizes.sum(), client_deltas, axes=1
    )
    np.testing.assert_allclose(results[False][index], plain, atol=2e-6)
    np.testing.assert_allclose(results[True][index], by_size, atol=2e-6)
    assert np.abs(plain - by_size).max() > 1e-3


def test_weighted_aggregation_runs_behind_an_omniscient_attack(
    tmp_path, dataset, model_fn
):
  """Attackers mark themselves with minus their train size (real round)."""
  config = training_config.ExperimentConfig(
      method='global',
      rounds=1,
      clients_per_round=4,
      local_steps=1,
      batch_size=10,
      eval_every=1,
      seed=0,
      attack='ipm',
      attack_ratio=0.5,
      aggregator='median',
      bucketing_size=2,
      weighted_aggregation=True,
  )
  runner = training.ExperimentRunner(
      config, dataset, model_fn, str(tmp_path / 'run'), log_fn=None
  )
  fields = runner.method.client_data_fields
  assert fields.num_train_examples and fields.attack
  start = _weights_list(runner.process, runner.state)
  output = runner.process.next(
      runner.state, runner.round_data.client_data(0, [0, 1, 2, 3], fields)
  )
  aggregator = output.metrics['aggregator']
  assert aggregator['omniscient_attackers'] == int(runner.malicious[:4].sum())
  assert aggregator['omniscient_attackers'] > 0
  assert aggregator['zero_weight_clients'] == 0
  new = _weights_list(runner.process, output.state)
  assert all(np.all(np.isfinite(w)) for w in new)
  assert any(np.abs(a - b).max() > 0 for a, b in zip(start, new))
