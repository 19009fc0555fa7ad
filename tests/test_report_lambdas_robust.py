"""One Ditto run per robust aggregator gives that aggregator's rows, exactly.

The server aggregates only the clients' global-model updates, which do not
depend on the personal models, so a Ditto run with aggregator X trains the
global model of a `global` run with X bit for bit, and its personal models on
the same batches. So one `lam_selection='auto'` run with X and report lambda
1 must reproduce the summaries and per-client accuracies of a `global` run
with X (Table 1's 'Robust (X)', Table 3's 'X'), a fixed lambda = 1 `ditto`
run with X ('Ditto + X (lambda=1)') and a plain per-device `ditto` run with X
('Ditto + X (lambda auto)'), under A1, A2 and A3 with the order-statistics
rules (median, Krum, Multi-Krum, k-norm) and median-norm clipping. Real TFF
computations on the first clients of the embedded Synthetic(1, 1) data.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

import toy

from tff_ditto import computation_cache
from tff_ditto import config_equivalence
from tff_ditto import evaluation
from tff_ditto import training
from tff_ditto import training_config
from tff_ditto.data import load_dataset
from tff_ditto.reproduction import derived_rows
from tff_ditto.reproduction import grid

NUM_CLIENTS = 8
# (aggregator, attack, ratio): of 8 clients, 4 (A1 / k-norm's A2) or 2
# malicious, 4 sampled a round; every column is a strong attack for the
# devices' choice (candidates {0.05, 0.1, 0.2}: lambda 1 is an extra model).
CASES = (
    ('norm_clip', 'a1', 0.5),
    ('norm_clip', 'a3', 0.25),
    ('median', 'a1', 0.5),
    ('median', 'a3', 0.25),
    ('krum', 'a3', 0.25),
    ('multi_krum', 'a2', 0.25),
    ('k_norm', 'a2', 0.5),
)


@pytest.fixture(scope='module')
def dataset():
  full = load_dataset('synthetic', validation_fraction=0.2)
  return full.subset(full.client_ids[:NUM_CLIENTS])


@pytest.fixture(scope='module')
def cache():
  return computation_cache.ComputationCache()


def _config(**overrides) -> training_config.ExperimentConfig:
  return toy.tiny_ditto_config(**{'clients_per_round': 4, **overrides})


def _case_configs(
    aggregator: str, attack: str, ratio: float
) -> dict[str, training_config.ExperimentConfig]:
  """The derived Ditto run of a case and the separate runs it replaces.

  The derived run's lambda options are those of the grid's
  `derived_source_cell` for the column and aggregator.
  """
  column = dict(attack=attack, attack_ratio=ratio, aggregator=aggregator)
  source_options = dict(
      derived_rows.derived_source_cell(
          'synthetic', attack, ratio, aggregator
      ).options
  )
  auto = grid.auto_lambda(attack, ratio)
  return dict(
      source=_config(**column, **source_options),
      global_run=_config(method='global', **column),
      ditto_lam_1=_config(**column),
      ditto_auto=_config(**column, **auto),
  )


def _global_weights(runner) -> list[np.ndarray]:
  return runner.process.get_model_weights(runner.state).trainable


def _run(config, dataset, synthetic_model_fn, cache, directory):
  """(runner, summary) of a finished run."""
  runner = training.ExperimentRunner(
      config,
      dataset,
      synthetic_model_fn,
      str(directory),
      log_fn=None,
      computation_cache=cache,
  )
  return runner, runner.run()


def _renamed(summary: dict, prefix: str) -> dict:
  """The entries `prefix` + a summary name, named 'benign_' + the name."""
  return {
      f'benign_{name}': summary[prefix + name]
      for name in evaluation.SUMMARY_NAMES
  }


def _table(runner) -> pd.DataFrame:
  return pd.read_csv(os.path.join(runner.output_dir, 'client_metrics.csv'))


def _same(a: dict, b: dict) -> bool:
  """Equal dicts, NaN equal to NaN (bit for bit otherwise)."""
  return json.dumps(a) == json.dumps(b)


def test_cases_use_the_grids_derived_source_options():
  configs = _case_configs('norm_clip', 'a1', 0.5)
  source = configs['source']
  assert (source.lam_selection, source.strong_attack) == ('auto', True)
  assert source.report_lambdas == derived_rows.ROBUST_DERIVED_REPORT_LAMBDAS
  for name in ('global_run', 'ditto_lam_1', 'ditto_auto'):
    assert config_equivalence.derived_result(configs[name], source)


@pytest.mark.parametrize('aggregator,attack,ratio', CASES)
def test_each_row_equals_its_separate_run(
    tmp_path, dataset, synthetic_model_fn, cache, aggregator, attack, ratio
):
  configs = _case_configs(aggregator, attack, ratio)
  runs = {
      name: _run(config, dataset, synthetic_model_fn, cache, tmp_path / name)
      for name, config in configs.items()
  }
  source_runner, source = runs['source']
  metrics = pd.read_csv(os.path.join(source_runner.output_dir, 'metrics.csv'))
  assert metrics['sampled_malicious'].sum() > 0  # The attack took part.
  source_table = _table(source_runner)
  for name in ('global_run', 'ditto_lam_1', 'ditto_auto'):
    runner, summary = runs[name]
    where = config_equivalence.derived_result(configs[name], configs['source'])
    assert _same(
        _renamed(source['final'], where.summary_prefix),
        _renamed(summary['final'], 'benign_'),
    ), name
    assert source_table[where.accuracy_column].tolist() == (
        _table(runner)['accuracy'].tolist()
    ), name
  # The per-device run's every key (selected models, candidates, shares)
  # and per-client table, and the global model of every run.
  auto_runner, auto = runs['ditto_auto']
  assert _same(
      {key: source['final'][key] for key in auto['final']}, auto['final']
  )
  auto_table = _table(auto_runner)
  assert source_table[list(auto_table)].equals(auto_table)
  for runner, _ in runs.values():
    for a, b in zip(_global_weights(runner), _global_weights(source_runner)):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('aggregator,attack,ratio', CASES)
def test_the_aggregator_changes_the_global_model(
    tmp_path, dataset, synthetic_model_fn, cache, aggregator, attack, ratio
):
  """So the equalities above hold with the robust rule in force."""
  robust = _config(
      method='global', attack=attack, attack_ratio=ratio, aggregator=aggregator
  )
  mean = _config(method='global', attack=attack, attack_ratio=ratio)
  robust_runner, _ = _run(
      robust, dataset, synthetic_model_fn, cache, tmp_path / 'x'
  )
  mean_runner, _ = _run(
      mean, dataset, synthetic_model_fn, cache, tmp_path / 'mean'
  )
  assert any(
      not np.array_equal(a, b)
      for a, b in zip(
          _global_weights(robust_runner), _global_weights(mean_runner)
      )
  )
