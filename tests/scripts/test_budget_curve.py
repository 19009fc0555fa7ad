"""scripts/budget_curve.py: the budget from a local run's validation curve."""

from __future__ import annotations

import importlib.util
import json
import math
import os

import pandas as pd
import pytest

import repo_paths

_SCRIPT = os.path.join(repo_paths.SCRIPTS, 'budget_curve.py')


def _load(name):
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(os.path.dirname(_SCRIPT), f'{name}.py')
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


budget_curve = _load('budget_curve')
write_results_doc = _load('write_results_doc')


def _metrics(accuracies, prefix='benign_'):
  """metrics.csv rows: evaluations every 100 rounds, NaN in between."""
  rows = []
  for round_num in range(100 * len(accuracies)):
    evaluated = (round_num + 1) % 100 == 0
    accuracy = accuracies[round_num // 100] if evaluated else math.nan
    rows.append({
        'round': round_num,
        'global_train_loss': 1.0,
        prefix + 'mean_accuracy': accuracy,
        prefix + 'pooled_accuracy': accuracy,
        prefix + 'std_accuracy': 0.1 if evaluated else math.nan,
    })
  return pd.DataFrame(rows)


def test_curve_has_the_evaluated_rounds_counted_from_one():
  curve = budget_curve.validation_curve(_metrics([0.1, 0.4, 0.5]))
  assert curve['round'].tolist() == [100, 200, 300]
  assert curve['mean_accuracy'].tolist() == [0.1, 0.4, 0.5]


def test_curve_prefers_the_curve_split_columns():
  metrics = _metrics([0.2, 0.3], prefix='validation_benign_')
  metrics['benign_mean_accuracy'] = 0.9  # the test split: never used
  curve = budget_curve.validation_curve(metrics)
  assert curve['mean_accuracy'].tolist() == [0.2, 0.3]


def test_plateau_is_the_first_round_near_the_best():
  curve = budget_curve.validation_curve(
      _metrics([0.05, 0.3, 0.595, 0.61, 0.6, 0.605])
  )
  assert budget_curve.plateau_round(curve, 0.02) == 300
  assert budget_curve.plateau_round(curve, 0.001) == 400


def test_metrics_without_evaluation_are_refused():
  metrics = _metrics([0.1]).assign(benign_mean_accuracy=math.nan)
  with pytest.raises(ValueError, match='no evaluated round'):
    budget_curve.validation_curve(metrics)


def test_a_curve_still_rising_has_no_budget(tmp_path):
  path = tmp_path / 'metrics.csv'
  _metrics([0.1, 0.2, 0.3, 0.4, 0.5]).to_csv(path, index=False)
  budget = budget_curve.write_budget(
      'femnist', str(path), str(tmp_path), tolerance=0.01, window=2
  )
  assert budget['plateau_round'] is None
  assert budget['budget_rounds'] is None
  assert budget['rise_over_window'] == pytest.approx(0.2)


def test_the_paper_level_ends_the_budget_before_a_plateau(tmp_path):
  path = tmp_path / 'metrics.csv'
  _metrics([0.3, 0.63, 0.7, 0.8]).to_csv(path, index=False)
  budget = budget_curve.write_budget(
      'femnist', str(path), str(tmp_path), tolerance=0.01, window=2
  )
  assert budget['paper_level_round'] == 200  # 0.63 >= 0.628
  assert budget['budget_rounds'] == 200


def test_writes_curve_plot_and_budget(tmp_path):
  path = tmp_path / 'metrics.csv'
  _metrics([0.1, 0.5, 0.6, 0.6]).to_csv(path, index=False)
  budget = budget_curve.write_budget(
      'femnist', str(path), str(tmp_path), tolerance=0.01, window=1
  )
  assert budget['plateau_round'] == 300
  assert budget['budget_rounds'] == 300
  assert budget['paper_local_test_accuracy'] == 0.628  # Table 1, clean
  with open(tmp_path / 'femnist_budget.json') as f:
    assert json.load(f)['plateau_round'] == 300
  assert (tmp_path / 'femnist_local_curve.png').stat().st_size > 0
  assert len(pd.read_csv(tmp_path / 'femnist_local_curve.csv')) == 4


def test_results_page_renders_the_budget(tmp_path):
  path = tmp_path / 'metrics.csv'
  _metrics([0.1, 0.5, 0.6, 0.6]).to_csv(path, index=False)
  budget_curve.write_budget(
      'femnist', str(path), str(tmp_path / 'results' / 'budget'), 0.01, 1
  )
  page = (
      '<!-- begin generated: budget dataset=femnist -->\n<!-- end generated -->'
  )
  rendered = write_results_doc.render(page, str(tmp_path))
  assert '| 300 | 0.600 | 0.100 | 0.600 |' in rendered
  assert 'Budget: **300 rounds**' in rendered
  assert 'local test accuracy (Table 1, clean): 0.628' in rendered


def test_curve_of_a_ditto_runs_local_models():
  metrics = _metrics([0.2, 0.3], prefix='validation_benign_lam_0_')
  metrics['validation_benign_mean_accuracy'] = 0.9  # per-device Ditto
  metrics['validation_benign_lam_1_mean_accuracy'] = 0.8
  curve = budget_curve.validation_curve(metrics, personal_lambda=0.0)
  assert curve['mean_accuracy'].tolist() == [0.2, 0.3]
  with pytest.raises(ValueError, match='benign_lam_2_mean_accuracy'):
    budget_curve.validation_curve(metrics, personal_lambda=2.0)
