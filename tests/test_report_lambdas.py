"""One Ditto run with report lambdas gives the rows of separate runs, exactly.

`report_lambdas` trains extra personal models beside a Ditto run's own, and a
`ditto` run reports its global model as a `global` run does. So one
`lam_selection='auto'` run with report lambdas (0, 1) must reproduce, bit for
bit, the summaries and per-client accuracies of a `global` run (its global
model), a `local` run (lambda 0), a fixed `ditto` lambda = 1 run and a plain
`--lam=auto` run (its selected models), under a clean and a strong-attack
column (candidates {0.05, 0.1, 0.2}, so 0 and 1 are both extra models). Real
TFF computations on the first clients of the embedded Synthetic(1, 1) data.
"""

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest

import toy

from tff_ditto import client_states
from tff_ditto import computation_cache
from tff_ditto import config_equivalence
from tff_ditto import evaluation
from tff_ditto import lambda_policy
from tff_ditto import training
from tff_ditto import training_config
from tff_ditto.data import load_dataset

NUM_CLIENTS = 6
# Columns: clean; A1 at 50 % with the devices' strong-attack decision.
COLUMNS = dict(
    clean=dict(),
    strong=dict(attack='a1', attack_ratio=0.5, strong_attack=True),
)


@pytest.fixture(scope='module')
def dataset():
  full = load_dataset('synthetic', validation_fraction=0.2)
  return full.subset(full.client_ids[:NUM_CLIENTS])


def _config(**overrides) -> training_config.ExperimentConfig:
  return toy.tiny_ditto_config(**overrides)


def _separate_configs(
    column: dict,
) -> dict[str, training_config.ExperimentConfig]:
  """The runs whose rows one multi-lambda run replaces, in one column."""
  auto = dict(column, lam_selection='auto')
  fixed = {k: v for k, v in column.items() if k != 'strong_attack'}
  return dict(
      multi=_config(**auto, report_lambdas=(0.0, 1.0)),
      global_run=_config(method='global', **fixed),
      local=_config(method='local', **fixed),
      ditto_lam_1=_config(**fixed),
      ditto_auto=_config(**auto),
  )


@pytest.fixture(scope='module')
def runs(tmp_path_factory, dataset, synthetic_model_fn):
  """{column: {name: (runner, summary)}} of every run, one shared cache."""
  root = tmp_path_factory.mktemp('report_lambdas')
  cache = computation_cache.ComputationCache()
  results = {}
  for column_name, column in COLUMNS.items():
    results[column_name] = {}
    for name, config in _separate_configs(column).items():
      runner = training.ExperimentRunner(
          config,
          dataset,
          synthetic_model_fn,
          str(root / column_name / name),
          log_fn=None,
          computation_cache=cache,
      )
      results[column_name][name] = (runner, runner.run())
  return results


def _renamed(summary: dict, prefix: str, new_prefix: str = 'benign_') -> dict:
  """The summary entries named `prefix` + a summary name, renamed."""
  return {
      new_prefix + name: summary[prefix + name]
      for name in evaluation.SUMMARY_NAMES
  }


def _table(runner) -> pd.DataFrame:
  return pd.read_csv(os.path.join(runner.output_dir, 'client_metrics.csv'))


def _same(a: dict, b: dict) -> bool:
  """Equal dicts, NaN equal to NaN (bit for bit otherwise)."""
  return json.dumps(a) == json.dumps(b)


def test_lambdas_of_the_multi_run(runs):
  clean = runs['clean']['multi'][0]
  assert clean.personal_models.selection_lambdas == (0.1, 1.0, 2.0)
  assert clean.personal_models.lambdas == (0.1, 1.0, 2.0, 0.0)
  strong = runs['strong']['multi'][0]
  assert strong.personal_models.lambdas == (0.05, 0.1, 0.2, 0.0, 1.0)
  assert len(strong.personalized_weights(0)) == 5 * len(
      runs['strong']['local'][0].personalized_weights(0)
  )


@pytest.mark.parametrize('column', list(COLUMNS))
def test_global_model_summary_equals_a_global_run(runs, column):
  multi = runs[column]['multi'][1]['final']
  global_run = runs[column]['global_run'][1]['final']
  assert _same(
      _renamed(multi, 'global_model_benign_'), _renamed(global_run, 'benign_')
  )
  multi_table = _table(runs[column]['multi'][0])
  global_table = _table(runs[column]['global_run'][0])
  assert multi_table['global_model_accuracy'].tolist() == (
      global_table['accuracy'].tolist()
  )


@pytest.mark.parametrize('column', list(COLUMNS))
@pytest.mark.parametrize('name,lam', [('local', 0), ('ditto_lam_1', 1)])
def test_report_lambda_equals_its_separate_run(runs, column, name, lam):
  multi = runs[column]['multi'][1]['final']
  separate = runs[column][name][1]['final']
  assert _same(
      _renamed(multi, f'benign_lam_{lam}_'), _renamed(separate, 'benign_')
  )
  multi_table = _table(runs[column]['multi'][0])
  separate_table = _table(runs[column][name][0])
  assert multi_table[f'lam_{lam}_accuracy'].tolist() == (
      separate_table['accuracy'].tolist()
  )


@pytest.mark.parametrize('column', list(COLUMNS))
def test_selected_models_equal_a_plain_auto_run(runs, column):
  multi_runner, multi = runs[column]['multi']
  auto_runner, auto = runs[column]['ditto_auto']
  # Every key of the plain run, with its value, bit for bit: the selected
  # models, the candidates on their own and the shares of each choice.
  assert _same(
      {key: multi['final'][key] for key in auto['final']}, auto['final']
  )
  extras = set(multi['final']) - set(auto['final'])
  assert {key for key in extras if key.startswith('benign_share_')} == set()
  multi_table, auto_table = _table(multi_runner), _table(auto_runner)
  assert multi_table[list(auto_table)].equals(auto_table)
  # The global model trained identically in all runs.
  for runner, _ in runs[column].values():
    for a, b in zip(
        runner.process.get_model_weights(runner.state).trainable,
        auto_runner.process.get_model_weights(auto_runner.state).trainable,
    ):
      np.testing.assert_array_equal(a, b)


def test_fixed_lambda_with_report_lambdas_evaluates_the_fixed_model(
    tmp_path, dataset, synthetic_model_fn, runs
):
  config = _config(report_lambdas=(0.0, 2.0))
  runner = training.ExperimentRunner(
      config, dataset, synthetic_model_fn, str(tmp_path / 'fixed'), log_fn=None
  )
  assert runner.personal_models.lambdas == (1.0, 0.0, 2.0)
  final = runner.run()['final']
  plain_runner, plain = runs['clean']['ditto_lam_1']
  assert _same(_renamed(final, 'benign_'), _renamed(plain['final'], 'benign_'))
  assert _same(
      _renamed(final, 'benign_lam_0_'),
      _renamed(runs['clean']['local'][1]['final'], 'benign_'),
  )
  assert not [key for key in final if key.startswith('benign_share_')]
  table = _table(runner)
  assert 'lam' not in table
  assert table['accuracy'].tolist() == _table(plain_runner)['accuracy'].tolist()
  assert table['lam_1_accuracy'].tolist() == table['accuracy'].tolist()


def test_default_ditto_rows_keep_their_keys(runs):
  """Without report lambdas no per-lambda column; the global model's added."""
  runner, summary = runs['clean']['ditto_lam_1']
  table = _table(runner)
  assert list(table) == [
      'client_id',
      'num_examples',
      'num_correct',
      'accuracy',
      'loss',
      'malicious',
      'global_model_accuracy',
  ]
  final = summary['final']
  assert not [key for key in final if key.startswith('benign_lam_')]
  # The pooled accuracy is the one Ditto runs always reported.
  assert final['global_model_benign_pooled_accuracy'] == (
      runs['clean']['global_run'][1]['final']['benign_pooled_accuracy']
  )
  # local (another method) keeps only the pooled accuracy of its global model.
  local_final = runs['clean']['local'][1]['final']
  assert [k for k in local_final if k.startswith('global_model_')] == [
      'global_model_benign_pooled_accuracy'
  ]
  assert 'global_model_accuracy' not in _table(runs['clean']['local'][0])


def test_report_lambdas_change_the_process_key(runs):
  clean = runs['clean']
  assert clean['multi'][0].process is not clean['ditto_auto'][0].process
  assert clean['multi'][0].method.personalized_evaluation(2) is not clean[
      'ditto_auto'
  ][0].method.personalized_evaluation(2)


BAD_REPORT_LAMBDAS = [
    (dict(report_lambdas=(0.0, -1.0)), 'report_lambdas must all be >= 0'),
    (dict(method='global', report_lambdas=(0.0,)), 'method ditto only'),
    (dict(method='local', report_lambdas=(1.0,)), 'method ditto only'),
    (
        dict(lam_selection='per_step', report_lambdas=(0.0,)),
        'not with lam_selection per_step',
    ),
    (dict(curve_split='test'), 'curve_split must be'),
    (dict(curve_split='train'), 'curve_split must be'),
]


@pytest.mark.parametrize('overrides,message', BAD_REPORT_LAMBDAS)
def test_report_lambdas_and_curve_split_are_validated(overrides, message):
  with pytest.raises(ValueError, match=message):
    _config(**overrides).validate()


def test_report_lambdas_are_a_tuple_of_floats():
  config = _config(report_lambdas=[1, 0])
  assert config.report_lambdas == (1.0, 0.0)
  hash(config)
  # Extras follow the selection lambdas in ascending order, once each.
  assert lambda_policy.personal_model_lambdas(
      dataclasses.replace(config, lam_selection='auto')
  ) == (0.1, 1.0, 2.0, 0.0)
  assert lambda_policy.personal_model_lambdas(
      _config(lam=0.5, report_lambdas=(2.0, 0.5, 0.0))
  ) == (0.5, 0.0, 2.0)
  assert lambda_policy.personal_model_lambdas(_config()) == (1.0,)


def test_curve_split_adds_validation_columns_and_changes_nothing_else(
    tmp_path, dataset, synthetic_model_fn, runs
):
  plain_runner, plain = runs['clean']['multi']
  config = dataclasses.replace(
      plain_runner.config, curve_split='validation', eval_every=1
  )
  runner = training.ExperimentRunner(
      config, dataset, synthetic_model_fn, str(tmp_path / 'curve'), log_fn=None
  )
  summary = runner.run()
  assert _same(summary['final'], plain['final'])
  assert _table(runner).equals(_table(plain_runner))
  metrics = pd.read_csv(os.path.join(runner.output_dir, 'metrics.csv'))
  plain_metrics = pd.read_csv(
      os.path.join(plain_runner.output_dir, 'metrics.csv')
  )
  curve_columns = [c for c in metrics if c.startswith('validation_')]
  assert 'validation_benign_mean_accuracy' in curve_columns
  assert 'validation_global_model_benign_mean_accuracy' in curve_columns
  assert 'validation_benign_lam_0_mean_accuracy' in curve_columns
  # Every round evaluated, on both splits; the test columns as without.
  assert metrics['validation_benign_mean_accuracy'].notna().all()
  shared = [c for c in plain_metrics if c != 'seconds']
  pd.testing.assert_frame_equal(
      metrics[shared].tail(1).reset_index(drop=True),
      plain_metrics[shared].tail(1).reset_index(drop=True),
      check_exact=True,
      check_dtype=False,
  )
  validation = runner.evaluate(2, split='validation', client_metrics_path=None)
  last = metrics.iloc[-1]
  for key, value in validation.items():
    assert last[f'validation_{key}'] == pytest.approx(value, rel=1e-12)


def test_an_evaluation_reads_each_state_file_once(
    tmp_path, dataset, synthetic_model_fn
):
  """The test split, the per-device choice and the curve: one read per file."""
  config = _config(
      lam_selection='auto',
      report_lambdas=(0.0, 1.0),
      curve_split='validation',
  )
  runner = training.ExperimentRunner(
      config, dataset, synthetic_model_fn, str(tmp_path), log_fn=None
  )
  runner.run()
  evaluator = runner.evaluator
  weights = runner.process.get_model_weights(runner.state)
  evaluate = lambda: (
      evaluator.evaluate(weights, client_metrics_path=None),
      evaluator.evaluate_curve_split(weights),
  )
  expected = evaluate()
  with evaluator.reading_state_files_once(weights, ['test', 'validation']):
    for path in evaluator.inputs.state_read_paths():
      for file in client_states.state_files(path):
        open(file, 'wb').close()  # Emptied: reading it now fails.
    assert _same(evaluate(), expected)
  with pytest.raises(Exception, match='too short to be an sstable'):
    evaluator.evaluate(weights, client_metrics_path=None)


def test_derived_result_names_where_each_run_is():
  source = _config(lam_selection='auto', report_lambdas=(0.0, 1.0))
  where = lambda **overrides: config_equivalence.derived_result(
      _config(**overrides), source
  )
  assert where(method='global') == config_equivalence.DerivedResult(
      'global_model_benign_', 'global_model_accuracy'
  )
  assert where(method='global', personal_lr=0.3) is not None  # unread
  assert where(method='local').accuracy_column == 'lam_0_accuracy'
  assert where(lam=2.0).summary_prefix == 'benign_lam_2_'
  assert where(lam_selection='auto').summary_prefix == 'benign_'
  assert (
      where(
          lam_selection='auto',
          eval_every=1,
          checkpoint_every=1,
          curve_split='validation',
      )
      is not None
  )
  # Not there: another lambda, setting, selection or method.
  assert where(lam=0.5) is None
  assert where(method='local', client_lr=0.5) is None
  assert where(lam_selection='auto', strong_attack=True) is None
  assert where(method='finetune') is None
  assert where(report_lambdas=(0.0,)) is None
  # A source without report lambdas serves nothing.
  assert (
      config_equivalence.derived_result(
          _config(method='global'), _config(lam_selection='auto')
      )
      is None
  )
