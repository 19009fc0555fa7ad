"""scripts/rows_curve.py on a real multi-lambda Ditto run's metrics."""

from __future__ import annotations

import importlib.util
import os

import pandas as pd
import pytest

import repo_paths
from tff_ditto import training
from tff_ditto import training_config


def _load_script(name):
  path = os.path.join(repo_paths.SCRIPTS, f'{name}.py')
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


rows_curve = _load_script('rows_curve')
write_results_doc = _load_script('write_results_doc')


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, synthetic_six_clients, synthetic_model_fn):
  dataset, model_fn = synthetic_six_clients, synthetic_model_fn
  config = training_config.ExperimentConfig(
      method='ditto',
      rounds=4,
      clients_per_round=3,
      local_steps=2,
      batch_size=10,
      lam_selection='auto',
      report_lambdas=(0.0, 1.0),
      curve_split='validation',
      eval_every=2,
      checkpoint_every=0,
      seed=0,
  )
  directory = str(tmp_path_factory.mktemp('rows') / 'ditto')
  runner = training.ExperimentRunner(
      config, dataset, model_fn, directory, log_fn=None
  )
  runner.run()
  return directory


def test_rows_curve_reads_every_row_of_both_splits(run_dir, tmp_path):
  metrics_path = os.path.join(run_dir, 'metrics.csv')
  curve = rows_curve.write_rows_curve(
      metrics_path, 'toy', str(tmp_path), paper_gap=0.1
  )
  assert curve['split'].tolist() == ['test', 'test', 'validation', 'validation']
  assert curve['round'].tolist() == [2, 4, 2, 4]
  metrics = pd.read_csv(metrics_path)
  last = metrics.iloc[-1]
  test_last = curve[curve['split'] == 'test'].iloc[-1]
  assert test_last['global'] == last['global_model_benign_mean_accuracy']
  assert test_last['local'] == last['benign_lam_0_mean_accuracy']
  assert test_last['ditto_per_device'] == last['benign_mean_accuracy']
  assert (tmp_path / 'toy_rows_curve.png').stat().st_size > 0
  assert len(pd.read_csv(tmp_path / 'toy_rows_curve.csv')) == 4


def test_a_run_without_the_rows_is_refused():
  with pytest.raises(ValueError, match='report lambdas 0 and 1'):
    rows_curve.rows_curve(
        pd.DataFrame({'round': [0], 'benign_mean_accuracy': [0.5]})
    )


def test_results_page_renders_the_rows_curve(run_dir, tmp_path):
  rows_curve.write_rows_curve(
      os.path.join(run_dir, 'metrics.csv'),
      'toy',
      str(tmp_path / 'results' / 'paper_budget'),
  )
  page = '<!-- begin generated: rows-curve name=toy -->\n<!-- end generated -->'
  rendered = write_results_doc.render(page, str(tmp_path))
  assert rendered.count('| test |') == 2
  assert rendered.count('| validation |') == 2
