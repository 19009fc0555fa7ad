"""Tests for tff_ditto.training: sampling, the runner, checkpoints and resume.

The runs use the first 6 clients of the embedded Synthetic(1, 1) dataset and
the synthetic logistic-regression spec (real TFF computations throughout).
"""

import collections
import csv
import dataclasses
import json
import math
import os
import shutil

import numpy as np
import pytest

from tff_ditto import aggregators
from tff_ditto import baselines
from tff_ditto import checkpoints
from tff_ditto import computation_cache
from tff_ditto import initial_weights
from tff_ditto import models
from tff_ditto import sampling
from tff_ditto import training
from tff_ditto import training_config
from tff_ditto.data import load_dataset

NUM_CLIENTS = 6
SUMMARY_KEYS = [
    'benign_pooled_accuracy',
    'benign_mean_accuracy',
    'benign_std_accuracy',
    'benign_variance_accuracy',
    'benign_worst10_accuracy',
    'benign_pooled_loss',
    'benign_num_clients',
]
ROUND_KEYS = [
    'round',
    'seconds',
    'global_train_loss',
    'personal_train_loss',
    'sampled_malicious',
    'non_finite_updates',
    'max_update_norm',
    'max_attacker_update_norm',
]


# ----------------------------------------------------------- sample_clients


def test_sample_clients_is_deterministic_per_seed_and_round():
  sizes = np.array([10, 50, 20, 300, 5, 80, 40, 60])
  first = sampling.sample_clients(3, sizes, 4, seed=7)
  np.testing.assert_array_equal(
      first, sampling.sample_clients(3, sizes, 4, seed=7)
  )
  assert first.dtype.kind == 'i'
  assert list(first) == sorted(set(first.tolist()))  # sorted, no repeats
  assert len(first) == 4 and first.min() >= 0 and first.max() < len(sizes)
  # Different rounds and seeds give different draws (over several tries).
  by_round = {
      tuple(sampling.sample_clients(r, sizes, 4, seed=7)) for r in range(10)
  }
  by_seed = {
      tuple(sampling.sample_clients(3, sizes, 4, seed=s)) for s in range(10)
  }
  assert len(by_round) > 3 and len(by_seed) > 3
  # It does not depend on earlier calls (no hidden global RNG state).
  np.random.seed(123)
  np.testing.assert_array_equal(
      first, sampling.sample_clients(3, sizes, 4, seed=7)
  )


def test_sample_clients_weighted_favours_big_clients():
  sizes = np.array([1000] + [10] * 9)
  counts = np.zeros(10)
  for round_num in range(300):
    counts[sampling.sample_clients(round_num, sizes, 2, seed=0)] += 1
  # The big client (p ~ 0.92 for the first pick) is in nearly every round.
  assert counts[0] > 280
  assert counts[1:].max() < 100
  assert counts.sum() == 600


def test_sample_clients_uniform_ignores_sizes():
  sizes = np.array([1000] + [10] * 9)
  counts = np.zeros(10)
  for round_num in range(400):
    picked = sampling.sample_clients(
        round_num, sizes, 3, seed=1, mode='uniform'
    )
    assert len(set(picked.tolist())) == 3
    counts[picked] += 1
  # Each client is in ~30% of the rounds (120 of 400), the big one included.
  assert np.all(counts > 80) and np.all(counts < 160)


def test_sample_clients_is_capped_at_the_client_count():
  sizes = np.array([3, 1, 2])
  for mode in ('weighted', 'uniform'):
    np.testing.assert_array_equal(
        sampling.sample_clients(0, sizes, 10, seed=0, mode=mode), [0, 1, 2]
    )


# ----------------------------------------------------------------- runs


@pytest.fixture(scope='module')
def dataset():
  full = load_dataset('synthetic')
  return full.subset(full.client_ids[:NUM_CLIENTS])


@pytest.fixture(scope='module')
def model_fn():
  return models.get_model_spec('synthetic', seed=0).tff_model_fn()


def _config(**overrides):
  values = dict(
      method='ditto',
      rounds=4,
      clients_per_round=3,
      local_steps=2,
      batch_size=10,
      lam=0.5,
      eval_every=2,
      checkpoint_every=1,
      finetune_steps=3,
      seed=0,
  )
  values.update(overrides)
  return training_config.ExperimentConfig(**values)


def _runner(config, dataset, model_fn, output_dir, **kwargs):
  kwargs.setdefault('log_fn', None)
  return training.ExperimentRunner(
      config, dataset, model_fn, str(output_dir), **kwargs
  )


def _read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _without_seconds(rows):
  return [{k: v for k, v in row.items() if k != 'seconds'} for row in rows]


def _global_weights(runner):
  weights = runner.process.get_model_weights(runner.state)
  return list(weights.trainable) + list(weights.non_trainable)


def _assert_arrays_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert np.array_equal(np.asarray(x), np.asarray(y))


def _checkpoint_versions(output_dir):
  root = os.path.join(output_dir, 'checkpoints')
  prefix = 'program_state_'
  return sorted(
      int(n[len(prefix) :]) for n in os.listdir(root) if n.startswith(prefix)
  )


@pytest.fixture(scope='module')
def resume_runs(tmp_path_factory, dataset, model_fn):
  """Straight 4 rounds; 2 + resumed 2; 2 + torn checkpoint + resumed 2."""
  root = tmp_path_factory.mktemp('resume')
  runs = collections.OrderedDict()

  straight = _runner(_config(), dataset, model_fn, root / 'straight')
  runs['straight'] = (straight, straight.run(), [])

  first_half = _runner(_config(rounds=2), dataset, model_fn, root / 'split')
  first_half.run()
  assert _checkpoint_versions(root / 'split') == [0, 1]
  shutil.copytree(root / 'split', root / 'torn')

  logs = []
  resumed = _runner(
      _config(),
      dataset,
      model_fn,
      root / 'split',
      resume=True,
      log_fn=logs.append,
  )
  assert resumed.next_round == 2
  runs['split'] = (resumed, resumed.run(), logs)

  # Tear the newest checkpoint (round 1): truncate its variable data.
  torn_dir = root / 'torn' / 'checkpoints' / 'program_state_1' / 'variables'
  (data_file,) = [
      n for n in os.listdir(torn_dir) if n.startswith('variables.data')
  ]
  path = torn_dir / data_file
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size // 2)
  logs = []
  torn = _runner(
      _config(),
      dataset,
      model_fn,
      root / 'torn',
      resume=True,
      log_fn=logs.append,
  )
  assert torn.next_round == 1
  runs['torn'] = (torn, torn.run(), logs)
  return runs


@pytest.mark.parametrize('name', ['split', 'torn'])
def test_resume_is_bit_identical_to_a_straight_run(resume_runs, name):
  straight, straight_summary, _ = resume_runs['straight']
  runner, summary, _ = resume_runs[name]
  assert runner.next_round == straight.next_round == 4
  _assert_arrays_equal(_global_weights(runner), _global_weights(straight))
  trained = 0
  for client in range(NUM_CLIENTS):
    _assert_arrays_equal(
        runner.personalized_weights(client),
        straight.personalized_weights(client),
    )
    np.testing.assert_array_equal(
        runner.store.versions, straight.store.versions
    )
    trained += int(straight.store.versions[client] >= 0)
  assert trained >= 3
  assert summary['final'] == straight_summary['final']
  assert summary['final']['benign_num_clients'] == NUM_CLIENTS
  # The written results agree too (up to wall-clock seconds).
  out, ref = runner.output_dir, straight.output_dir
  rows = _read_csv(os.path.join(out, 'metrics.csv'))
  assert [r['round'] for r in rows] == ['0', '1', '2', '3']
  assert _without_seconds(rows) == _without_seconds(
      _read_csv(os.path.join(ref, 'metrics.csv'))
  )
  assert _read_csv(os.path.join(out, 'client_metrics.csv')) == _read_csv(
      os.path.join(ref, 'client_metrics.csv')
  )
  with open(os.path.join(out, 'summary.json')) as f:
    assert json.load(f)['final'] == json.loads(
        json.dumps(straight_summary['final'])
    )
  assert _checkpoint_versions(out) == [2, 3]


def test_resume_falls_back_past_a_torn_checkpoint(resume_runs):
  _, _, logs = resume_runs['torn']
  assert any('checkpoint 1 unreadable' in line for line in logs), logs
  assert any('resumed from checkpoint after round 0' in line for line in logs)
  _, _, split_logs = resume_runs['split']
  assert any(
      'resumed from checkpoint after round 1' in line for line in split_logs
  )


def test_resume_after_the_last_round_only_evaluates(
    resume_runs, dataset, model_fn
):
  straight, straight_summary, _ = resume_runs['straight']
  again = _runner(
      _config(), dataset, model_fn, straight.output_dir, resume=True
  )
  assert again.next_round == 4
  summary = again.run()
  assert again.history == []
  assert summary['final'] == straight_summary['final']
  assert len(_read_csv(os.path.join(straight.output_dir, 'metrics.csv'))) == 4


def test_output_directory_guard(tmp_path, dataset, model_fn):
  out = tmp_path / 'run'
  out.mkdir()
  (out / 'old_result.txt').write_text('x')
  with pytest.raises(checkpoints.OutputDirectoryError, match='--resume'):
    _runner(_config(method='global', rounds=1), dataset, model_fn, out)
  assert os.listdir(out) == ['old_result.txt']
  runner = _runner(
      _config(method='global', rounds=1), dataset, model_fn, out, overwrite=True
  )
  assert not (out / 'old_result.txt').exists()
  runner.run()
  assert len(_read_csv(out / 'metrics.csv')) == 1
  with pytest.raises(checkpoints.OutputDirectoryError, match='--overwrite'):
    _runner(_config(method='global', rounds=1), dataset, model_fn, out)
  # An empty existing directory is fine.
  (tmp_path / 'empty').mkdir()
  _runner(
      _config(method='global', rounds=1), dataset, model_fn, tmp_path / 'empty'
  )


def test_invalid_config_is_rejected(tmp_path, dataset, model_fn):
  with pytest.raises(ValueError, match='rounds'):
    _runner(_config(rounds=0), dataset, model_fn, tmp_path / 'x')
  with pytest.raises(ValueError, match='method'):
    _runner(_config(method='nope'), dataset, model_fn, tmp_path / 'y')


def test_progress_line_counts_zeroed_updates(tmp_path, dataset, model_fn):
  # A learning rate near float32's largest value overflows every client's
  # first step: all updates are zeroed, and the progress line says so.
  lines = []
  _runner(
      _config(method='global', rounds=2, client_lr=3e38, eval_every=2),
      dataset,
      model_fn,
      tmp_path / 'blown_up',
      log_fn=lines.append,
  ).run()
  assert len(lines) == 2
  assert all('| 3 non-finite updates zeroed' in line for line in lines)
  lines.clear()
  _runner(
      _config(method='global', rounds=1, eval_every=1),
      dataset,
      model_fn,
      tmp_path / 'healthy',
      log_fn=lines.append,
  ).run()
  assert len(lines) == 1 and 'non-finite' not in lines[0]


# --------------------------------------------------------------- methods

METHODS = ('ditto', 'local', 'global', 'finetune')


@pytest.fixture(scope='module')
def method_runs(tmp_path_factory, dataset, model_fn):
  root = tmp_path_factory.mktemp('methods')
  runs = {}
  for method in METHODS:
    runner = _runner(
        _config(method=method, rounds=2, eval_every=1, lam=1.0),
        dataset,
        model_fn,
        root / method,
    )
    runs[method] = (runner, runner.run())
  return runs


@pytest.mark.parametrize('method', METHODS)
def test_each_method_writes_its_results(method_runs, method):
  runner, summary = method_runs[method]
  out = runner.output_dir
  personalized = method in ('ditto', 'local')
  rows = _read_csv(os.path.join(out, 'metrics.csv'))
  assert [r['round'] for r in rows] == ['0', '1']
  expected_columns = set(ROUND_KEYS + SUMMARY_KEYS)
  if personalized:
    expected_columns.add('global_model_benign_pooled_accuracy')
  if method == 'ditto':
    # A Ditto run reports its global model as a global run does.
    expected_columns.update(
        key.replace('benign_', 'global_model_benign_') for key in SUMMARY_KEYS
    )
  assert set(rows[0]) == expected_columns
  for row in rows:
    assert 0.0 <= float(row['benign_mean_accuracy']) <= 1.0
    assert float(row['global_train_loss']) > 0.0
    assert int(row['benign_num_clients']) == NUM_CLIENTS
    assert math.isnan(float(row['personal_train_loss'])) != personalized
    # Every method trains the global model (`local` too, unused).
    assert float(row['max_update_norm']) > 0.0

  with open(os.path.join(out, 'summary.json')) as f:
    saved = json.load(f)
  assert saved['method'] == method
  assert saved['rounds'] == 2
  assert saved['num_clients'] == NUM_CLIENTS
  assert saved['final'] == json.loads(json.dumps(summary['final']))
  assert saved['config']['lam'] == (0.0 if method == 'local' else 1.0)
  for key in SUMMARY_KEYS:
    assert float(saved['final'][key]) == pytest.approx(float(rows[-1][key]))

  clients = _read_csv(os.path.join(out, 'client_metrics.csv'))
  assert [c['client_id'] for c in clients] == runner.dataset.client_ids
  assert set(clients[0]) == {
      'client_id',
      'num_examples',
      'num_correct',
      'accuracy',
      'loss',
      'malicious',
  } | ({'global_model_accuracy'} if method == 'ditto' else set())
  assert [float(c['num_examples']) for c in clients] == [
      float(n) for n in runner.dataset.num_test_examples()
  ]
  accuracies = np.array([float(c['accuracy']) for c in clients])
  assert np.mean(accuracies) == pytest.approx(
      saved['final']['benign_mean_accuracy']
  )
  assert os.path.isdir(os.path.join(out, 'client_states')) == personalized


def test_local_forces_lambda_zero(method_runs):
  local, _ = method_runs['local']
  ditto_runner, _ = method_runs['ditto']
  assert local.config.lam == 0.0
  assert ditto_runner.config.lam == 1.0
  assert local.config == dataclasses.replace(
      ditto_runner.config, method='local', lam=0.0
  )


def test_methods_share_the_global_trajectory(method_runs):
  """Sampling, batches and the global solver are common to all methods."""
  losses = {
      m: [
          r['global_train_loss']
          for r in _read_csv(os.path.join(runner.output_dir, 'metrics.csv'))
      ]
      for m, (runner, _) in method_runs.items()
  }
  for method in METHODS:
    assert losses[method] == losses['ditto']
  weights = {m: _global_weights(r) for m, (r, _) in method_runs.items()}
  for method in METHODS:
    _assert_arrays_equal(weights[method], weights['ditto'])
  # ...while lambda changes the personal models: ditto and local differ.
  ditto_runner, _ = method_runs['ditto']
  local, _ = method_runs['local']
  personal = lambda r: _read_csv(os.path.join(r.output_dir, 'metrics.csv'))[-1][
      'personal_train_loss'
  ]
  assert personal(ditto_runner) != personal(local)
  trained = [
      i for i in range(NUM_CLIENTS) if ditto_runner.store.versions[i] == 1
  ]
  assert trained
  for i in trained:
    assert not np.array_equal(
        ditto_runner.personalized_weights(i)[0],
        local.personalized_weights(i)[0],
    )
  # The finetune method evaluates fine-tuned models, not the global one.
  assert (
      method_runs['finetune'][1]['final'] != method_runs['global'][1]['final']
  )


def test_global_method_keeps_no_client_state(method_runs):
  runner, _ = method_runs['global']
  with pytest.raises(ValueError, match='no client state'):
    runner.personalized_weights(0)


def test_resume_refuses_to_restart_over_unusable_checkpoints(
    resume_runs, dataset, model_fn, tmp_path
):
  """Checkpoints exist but none is complete: resuming must not start over."""
  straight, _, _ = resume_runs['straight']
  copy = tmp_path / 'copy'
  shutil.copytree(straight.output_dir, copy)
  for name in os.listdir(copy / 'checkpoints'):
    if name.startswith('complete_'):
      os.remove(copy / 'checkpoints' / name)
  before = sorted(os.listdir(copy))
  metrics_before = (copy / 'metrics.csv').read_text()
  with pytest.raises(
      checkpoints.OutputDirectoryError, match='refusing to restart'
  ):
    _runner(_config(), dataset, model_fn, copy, resume=True)
  assert sorted(os.listdir(copy)) == before
  assert (copy / 'metrics.csv').read_text() == metrics_before


def test_evaluating_another_split_leaves_the_run_untouched(resume_runs):
  straight, straight_summary, _ = resume_runs['straight']
  table_path = os.path.join(straight.output_dir, 'client_metrics.csv')
  before = open(table_path).read()
  validation = straight.evaluate(
      3, split='validation', client_metrics_path=None
  )
  assert open(table_path).read() == before
  assert validation['benign_num_clients'] == NUM_CLIENTS
  # Same split as the run: the same numbers as its final evaluation.
  again = straight.evaluate(3, split='test', client_metrics_path=None)
  assert again == straight_summary['final']
  global_test = straight.evaluate_global_model('test')
  assert global_test['benign_pooled_accuracy'] == pytest.approx(
      straight_summary['final']['global_model_benign_pooled_accuracy']
  )


# ------------------------------------------------------ computation cache


def test_computation_cache_builds_once_per_key():
  cache = computation_cache.ComputationCache()
  built = []

  def build(value):
    built.append(value)
    return [value]

  first = cache.get_or_build('kind', ('a', 1), lambda: build('a1'))
  assert cache.get_or_build('kind', ('a', 1.0), lambda: build('x')) is first
  other_kind = cache.get_or_build('other', ('a', 1), lambda: build('b'))
  assert other_kind is not first and built == ['a1', 'b']
  assert cache.builds == {'kind': 1, 'other': 1}
  assert cache.hits == {'kind': 1}
  assert len(cache) == 2
  assert '2 computations built, 1 reused' in cache.describe()


def test_objects_enter_keys_by_identity():
  def make_model_fn():
    return lambda: None

  a, b = make_model_fn(), make_model_fn()
  assert computation_cache.ByIdentity(a) == computation_cache.ByIdentity(a)
  assert computation_cache.ByIdentity(a) != computation_cache.ByIdentity(b)
  cache = computation_cache.ComputationCache()
  key_a, key_b = computation_cache.ByIdentity(a), computation_cache.ByIdentity(
      b
  )
  first = cache.get_or_build('k', key_a, list)
  assert cache.get_or_build('k', computation_cache.ByIdentity(a), list) is first
  assert cache.get_or_build('k', key_b, list) is not first


def _run_results(runner):
  """What a finished run produced: rows, summary, models, client table."""
  out = runner.output_dir
  personal = (
      [
          runner.personalized_weights(i)
          for i in range(runner.dataset.num_clients)
      ]
      if runner.store is not None
      else []
  )
  return dict(
      rows=_without_seconds(_read_csv(os.path.join(out, 'metrics.csv'))),
      final=runner.last_evaluation,
      global_weights=_global_weights(runner),
      personal=personal,
      clients=_read_csv(os.path.join(out, 'client_metrics.csv')),
  )


def _assert_same_results(a, b):
  assert a['rows'] == b['rows']
  assert json.dumps(a['final']) == json.dumps(b['final'])  # NaN == NaN
  assert a['clients'] == b['clients']
  _assert_arrays_equal(a['global_weights'], b['global_weights'])
  assert len(a['personal']) == len(b['personal'])
  for x, y in zip(a['personal'], b['personal']):
    _assert_arrays_equal(x, y)


def test_driver_side_differences_reuse_computations_bit_identically(
    tmp_path, dataset, model_fn
):
  """Two Ditto runs differing in attack ratio, rounds and evaluation period.

  A1 poisons labels on the driver side, the mean aggregator has no parameter
  depending on the number of attackers: the builders receive the same
  inputs, so the second run reuses every computation of the first, and
  both give exactly what they give without a cache.
  """
  configs = dict(
      clean=_config(rounds=2, eval_every=2),
      attacked=_config(rounds=3, eval_every=1, attack='a1', attack_ratio=0.5),
  )
  alone = {}
  for name, config in configs.items():
    runner = _runner(config, dataset, model_fn, tmp_path / 'alone' / name)
    runner.run()
    alone[name] = _run_results(runner)
  cache = computation_cache.ComputationCache()
  shared = {}
  for name, config in configs.items():
    runner = _runner(
        config,
        dataset,
        model_fn,
        tmp_path / 'shared' / name,
        computation_cache=cache,
    )
    runner.run()
    shared[name] = runner
  clean, attacked = shared['clean'], shared['attacked']
  assert attacked.process is clean.process
  assert attacked.global_evaluation is clean.global_evaluation
  assert attacked.method.personalized_evaluation(
      1
  ) is clean.method.personalized_evaluation(1)
  assert cache.builds == {
      'ditto_process': 1,
      'global_evaluation': 1,
      'personalized_evaluation': 1,
  }
  assert cache.hits == cache.builds
  assert attacked.malicious.sum() == 3 and attacked.history[-1]['round'] == 2
  for name, runner in shared.items():
    _assert_same_results(_run_results(runner), alone[name])


def test_builder_inputs_separate_computations(tmp_path, dataset, model_fn):
  """Runs whose builders receive different inputs never share a process."""
  cache = computation_cache.ComputationCache()
  base = dict(aggregator='k_norm', attack='a1', attack_ratio=0.5)
  # k_norm excludes E = int(3 * malicious / 6) updates: 1 at ratio 0.5, 0 at
  # 0.2; A2 makes clients transform their updates (simulate_attacks).
  variants = dict(
      base=base,
      fewer_attackers=dict(base, attack_ratio=0.2),
      update_attack=dict(base, attack='a2'),
      other_lambda=dict(base, lam=1.0),
      tilted=dict(method='term', term_t=1.0, attack='a1', attack_ratio=0.5),
      other_tilt=dict(method='term', term_t=2.0, attack='a1', attack_ratio=0.5),
  )
  processes = {
      name: (
          _runner(
              _config(**overrides),
              dataset,
              model_fn,
              tmp_path / name,
              computation_cache=cache,
          ).process
      )
      for name, overrides in variants.items()
  }
  assert len({id(p) for p in processes.values()}) == len(variants)
  assert cache.builds['ditto_process'] == 4 and cache.builds['baseline'] == 2
  assert not cache.hits['ditto_process'] and not cache.hits['baseline']
  # Controls: a driver-side difference (rounds; for TERM also the ratio)
  # reuses the same process.
  again = _runner(
      _config(**base, rounds=7),
      dataset,
      model_fn,
      tmp_path / 'again',
      computation_cache=cache,
  )
  assert again.process is processes['base']
  term_again = _runner(
      _config(**dict(variants['tilted'], attack_ratio=0.2)),
      dataset,
      model_fn,
      tmp_path / 'term_again',
      computation_cache=cache,
  )
  assert term_again.process is processes['tilted']


class _ReadRecorder:
  """Stands in for a config and records which fields are read."""

  def __init__(self, config):
    self._config = config
    self.read = set()

  def __getattr__(self, name):
    self.read.add(name)
    return getattr(self._config, name)


def test_baseline_builders_read_no_field_left_out_of_their_key(model_fn):
  for method in baselines.BASELINE_METHODS:
    recorder = _ReadRecorder(_config(method=method))
    baselines.build_method(
        recorder,
        model_fn,
        num_clients=NUM_CLIENTS,
        model_aggregator=aggregators.build_aggregator('mean'),
        simulate_attacks=False,
    )
    assert 'method' in recorder.read
    unread = recorder.read & set(baselines.UNREAD_CONFIG_FIELDS)
    assert not unread, (method, unread)


def test_personal_lr_moves_only_the_personal_models(
    tmp_path, dataset, model_fn
):
  results = {}
  for name, personal_lr in (('default', None), ('same', 0.05), ('larger', 0.5)):
    runner = _runner(
        _config(rounds=2, client_lr=0.05, personal_lr=personal_lr),
        dataset,
        model_fn,
        tmp_path / name,
    )
    runner.run()
    results[name] = _run_results(runner)
  # personal_lr equal to client_lr is the default, bit for bit.
  _assert_same_results(results['default'], results['same'])
  # Another personal_lr leaves the global model alone ...
  _assert_arrays_equal(
      results['default']['global_weights'], results['larger']['global_weights']
  )
  # ... and changes the personal models of the sampled clients.
  changed = [
      not all(np.array_equal(x, y) for x, y in zip(a, b))
      for a, b in zip(
          results['default']['personal'], results['larger']['personal']
      )
  ]
  assert any(changed)


def test_personal_lr_must_be_positive():
  with pytest.raises(ValueError, match='personal_lr'):
    _config(personal_lr=0.0).validate()


def test_initial_model_weights_are_cached_per_seed_and_copied(model_fn):
  first = initial_weights.initial_model_weights(model_fn, 3)
  again = initial_weights.initial_model_weights(model_fn, 3)
  _assert_arrays_equal(first.trainable, again.trainable)
  assert first.trainable[0] is not again.trainable[0]
  # Callers get their own arrays: changing one leaves the next call alone.
  first.trainable[0][...] = 123.0
  fresh = initial_weights.initial_model_weights(model_fn, 3)
  _assert_arrays_equal(fresh.trainable, again.trainable)
  assert not np.array_equal(fresh.trainable[0], first.trainable[0])


def test_per_object_memo_builds_once_per_owner_and_key():
  memo = computation_cache.PerObjectMemo()
  builds = []

  def build(value):
    builds.append(value)
    return [value]

  owner, other = (lambda: None), (lambda: None)
  first = memo.get_or_build(owner, 1, lambda: build(1))
  assert memo.get_or_build(owner, 1, lambda: build(9)) is first
  assert memo.get_or_build(owner, 2, lambda: build(2)) == [2]
  assert memo.get_or_build(other, 1, lambda: build(3)) == [3]
  assert builds == [1, 2, 3]
  # An owner without weak references (an int) is not memoized.
  memo.get_or_build(7, 1, lambda: build(4))
  memo.get_or_build(7, 1, lambda: build(5))
  assert builds == [1, 2, 3, 4, 5]
