"""The reproduction grid: cells, resumable runner and report, on tiny data."""

import dataclasses
import glob
import hashlib
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import cell_files
import process_output
import repo_paths
from tff_ditto.data import registry
from tff_ditto.reproduction import availability
from tff_ditto.reproduction import comparisons
from tff_ditto.reproduction import derived_rows
from tff_ditto.reproduction import grid
from tff_ditto.reproduction import paper_tables
from tff_ditto.reproduction import report as report_lib
from tff_ditto.reproduction import result_rows
from tff_ditto.reproduction import run_settings
from tff_ditto.reproduction import running
from tff_ditto.reproduction import tables


def test_paper_grid_shape():
  cells = grid.paper_cells(['femnist'])
  assert len(cells) == len(set(cells))
  ids = {cell.cell_id for cell in cells}
  # Table 1: Ditto and global at every attack column, robust rules too.
  for attack, ratio in grid.attack_columns('femnist'):
    for method in ('ditto', 'global'):
      assert grid.make_cell('femnist', method, attack, ratio).cell_id in ids
  assert grid.make_cell('femnist', 'global', 'a1', 0.8, 'krum').cell_id in ids
  # Table 3 and Figure 6 cells.
  assert grid.make_cell('femnist', 'ditto', 'a3', 0.2, 'median').cell_id in ids
  assert (
      grid.make_cell(
          'femnist', 'finetune', 'a3', 0.2, options=dict(finetune_lam=1)
      ).cell_id
      in ids
  )


def test_options_equal_to_the_default_name_the_default_cell():
  # Figure 6's joint lambda=1 is Table 1's Ditto cell: lambda 1 is the preset.
  ditto = grid.make_cell('vehicle', 'ditto', 'a3', 0.2)
  assert (
      grid.make_cell('vehicle', 'ditto', 'a3', 0.2, options=dict(lam=1))
      == ditto
  )
  figure6 = grid.spec_by_key('figure6')
  joint_cells = [
      row.cell('vehicle', 'a3', 0.2)
      for row in figure6.rows
      if row.method == 'ditto'
  ]
  assert ditto in joint_cells
  # Other values, and options without a default, stay in the id.
  assert (
      grid.make_cell(
          'vehicle', 'ditto', 'a3', 0.2, options=dict(lam=0.1)
      ).cell_id
      == 'ditto_a320_mean_lam-0.1'
  )
  assert grid.make_cell('vehicle', 'term', options=dict(term_t=5)).cell_id == (
      'term_none00_mean_term_t-5.0'
  )
  assert grid.make_cell(
      'synthetic', 'ditto', options=dict(no_such_field=1)
  ).options == (('no_such_field', 1.0),)


def test_datasets_present(tmp_path):
  present, absent = availability.available_datasets(None)
  assert present == ['synthetic']
  assert 'celeba' in absent
  os.makedirs(tmp_path / 'vehicle' / 'train')
  present, absent = availability.available_datasets(str(tmp_path))
  assert present == ['vehicle']
  assert 'femnist' in absent


def test_tiny_grid_end_to_end_and_resume(tmp_path):
  cells = [
      grid.make_cell('synthetic', 'ditto'),
      grid.make_cell('synthetic', 'global', 'a1', 0.5),
      grid.make_cell('synthetic', 'no_such_method'),
      # Invalid setting: Krum needs clients_per_round - f - 2 >= 1.
      grid.make_cell('synthetic', 'global', 'a1', 0.8, 'krum'),
      grid.make_cell('celeba', 'ditto'),
  ]
  settings = run_settings.RunSettings(
      data_dir=None, runs_dir=str(tmp_path / 'runs'), rounds=2, max_clients=12
  )
  unavailable = {'celeba': 'no images'}
  lines = []
  results = running.run_grid(cells, settings, unavailable, log_fn=lines.append)
  assert results['status'].tolist()[:3] == [
      'done',
      'done',
      'not run: method unavailable (no_such_method)',
  ]
  assert results['status'][3].startswith('not run: aggregator krum')
  assert results['status'][4] == 'not run: no images'
  done = results[results['status'] == 'done']
  assert done['benign_mean_accuracy'].between(0, 1).all()
  assert (done['rounds'] == 2).all()
  # Finished cells keep their metrics but not their (large) checkpoints.
  ditto_dir = run_settings.cell_dir(cells[0], settings)
  assert os.path.exists(os.path.join(ditto_dir, 'metrics.csv'))
  assert not os.path.exists(os.path.join(ditto_dir, 'client_states'))

  output_dir = str(tmp_path / 'report')
  path = cell_files.write_test_report(
      results, output_dir, ['synthetic', 'celeba'], unavailable
  )
  with open(path) as f:
    report = f.read()
  ditto_accuracy = results['benign_mean_accuracy'][0]
  assert f'{ditto_accuracy:.3f}' in report
  assert 'method unavailable (no_such_method)' in report
  assert 'Not run: celeba (no images)' in report
  for figure in (3, 4, 5, 6):
    png = os.path.join(output_dir, f'figure{figure}_synthetic.png')
    assert os.path.getsize(png) > 1000
  assert len(pd.read_csv(os.path.join(output_dir, 'cells.csv'))) == 5

  # A rerun skips the finished cells without training.
  mtime = os.path.getmtime(os.path.join(ditto_dir, 'summary.json'))
  rerun = running.run_grid(cells, settings, unavailable, log_fn=lines.append)
  assert rerun['status'].tolist()[:2] == ['skipped (finished)'] * 2
  assert os.path.getmtime(os.path.join(ditto_dir, 'summary.json')) == mtime
  assert rerun['benign_mean_accuracy'][0] == ditto_accuracy


def test_half_finished_cell_is_resumed(tmp_path):
  cell = grid.make_cell('synthetic', 'global')
  short = run_settings.RunSettings(
      data_dir=None,
      runs_dir=str(tmp_path / 'runs'),
      rounds=1,
      max_clients=12,
      keep_checkpoints=True,
  )
  running.run_grid([cell], short, log_fn=lambda _: None)
  # The same cell asked for more rounds continues from its checkpoint.
  longer = run_settings.RunSettings(
      data_dir=None, runs_dir=str(tmp_path / 'runs'), rounds=3, max_clients=12
  )
  lines = []
  results = running.run_grid([cell], longer, log_fn=lines.append)
  assert results['status'].tolist() == ['done']
  assert any('resuming 3 rounds' in line for line in lines)
  metrics = pd.read_csv(
      os.path.join(run_settings.cell_dir(cell, longer), 'metrics.csv')
  )
  assert len(metrics) == 3


def test_select_cells_filters_and_orders_columns():
  cells = grid.paper_cells(['femnist'], [grid.spec_by_key('table1')])
  columns = [grid.parse_column(text) for text in ('a3:0.2', 'none', 'a1:0.5')]
  selected = grid.select_cells(
      cells,
      methods=['ditto', 'global'],
      aggregators=['mean'],
      columns=columns,
      plain_only=True,
  )
  assert [(c.attack, c.ratio, c.method) for c in selected] == [
      ('a3', 0.2, 'global'),
      ('a3', 0.2, 'ditto'),
      ('none', 0.0, 'global'),
      ('none', 0.0, 'ditto'),
      ('a1', 0.5, 'global'),
      ('a1', 0.5, 'ditto'),
  ]
  # Without plain_only the per-device lambda variant of Ditto is kept.
  with_options = grid.select_cells(
      cells, methods=['ditto'], columns=columns[:1]
  )
  assert {c.options for c in with_options} == {
      (),
      (('lam_selection', 'auto'), ('strong_attack', True)),
  }


def test_strongest_columns_are_selected_per_dataset():
  cells = grid.paper_cells(['femnist', 'fmnist'], [grid.spec_by_key('table1')])
  selected = grid.select_cells(
      cells,
      methods=['global'],
      aggregators=['mean'],
      columns=grid.parse_columns(['none', 'strongest', 'a1:0.8']),
  )
  assert [(c.dataset, c.attack, c.ratio) for c in selected] == [
      ('femnist', 'none', 0.0),
      ('fmnist', 'none', 0.0),
      ('femnist', 'a1', 0.8),
      ('fmnist', 'a1', 0.8),
      ('femnist', 'a2', 0.8),
      ('fmnist', 'a2', 0.8),
      ('femnist', 'a3', 0.2),
      ('fmnist', 'a3', 0.5),
  ]


def test_bad_selection_is_named():
  with pytest.raises(ValueError, match='table9'):
    grid.spec_by_key('table9')
  for text in ('a1', 'a1:x', 'a1:1.5', ':0.2'):
    with pytest.raises(ValueError, match='attack:ratio'):
      grid.parse_column(text)


def test_rounds_per_dataset():
  assert grid.parse_rounds([]) == (None, {}, {})
  assert grid.parse_rounds(['300']) == (300, {}, {})
  default, per_dataset, per_column = grid.parse_rounds(
      ['femnist:300', 'synthetic:3', '7']
  )
  assert (default, per_dataset) == (7, {'femnist': 300, 'synthetic': 3})
  assert not per_column
  for entries in (['0'], ['x'], ['femnist:'], ['femnist:3.5'], ['femnist:-2']):
    with pytest.raises(ValueError, match='positive integer'):
      grid.parse_rounds(entries)
  for entries in (
      ['3', '4'],
      ['femnist:3', 'femnist:4'],
      ['fmnist/a3:0.5:3', 'fmnist/a3:0.50:4'],
  ):
    with pytest.raises(ValueError, match='given twice'):
      grid.parse_rounds(entries)
  with pytest.raises(ValueError, match='attack:ratio'):
    grid.parse_rounds(['fmnist/a3:1.5:30'])
  settings = run_settings.RunSettings(
      data_dir=None, runs_dir='unused', dataset_rounds={'synthetic': 3}
  )
  config, _ = run_settings.cell_config(
      grid.make_cell('synthetic', 'ditto'), settings
  )
  # A named dataset evaluates once, at its last round; the others keep
  # their presets.
  assert (config.rounds, config.eval_every) == (3, 3)
  preset, _ = run_settings.cell_config(
      grid.make_cell('vehicle', 'ditto'), settings
  )
  assert (preset.rounds, preset.eval_every) == (600, 10)
  assert 'synthetic 3 rounds; other datasets: preset' in (
      settings.describe_rounds()
  )


def test_rounds_per_column():
  # A column that ran a budget of its own (Fashion-MNIST's clean column at
  # the reference's 5,000 rounds, its attacked ones at the `local` plateau)
  # is found by the grid and the report with one --rounds.
  _, per_dataset, per_column = grid.parse_rounds(
      ['synthetic:4', 'synthetic/none:6', 'synthetic/a3:0.2:5']
  )
  assert per_column == {
      ('synthetic', ('none', 0.0)): 6,
      ('synthetic', ('a3', 0.2)): 5,
  }
  settings = run_settings.RunSettings(
      data_dir=None,
      runs_dir='unused',
      dataset_rounds=per_dataset,
      column_rounds=per_column,
  )
  rounds = {
      (attack, ratio): (
          run_settings.cell_config(
              grid.make_cell('synthetic', 'ditto', attack, ratio), settings
          )[0].rounds
      )
      for attack, ratio in (('none', 0.0), ('a3', 0.2), ('a1', 0.2))
  }
  assert rounds == {('none', 0.0): 6, ('a3', 0.2): 5, ('a1', 0.2): 4}
  assert settings.describe_rounds() == (
      'synthetic 4 rounds, synthetic clean 6 rounds, synthetic A3 20% 5 '
      'rounds; other datasets: preset rounds per dataset'
  )


def test_cells_take_the_grid_evaluation_period_and_curve_split():
  # The paper-budget runs: long cells evaluated periodically on test, with
  # validation curves beside (--eval_every, --curve_split).
  settings = run_settings.RunSettings(
      data_dir=None,
      runs_dir='unused',
      rounds=40,
      eval_every=10,
      config_overrides={'curve_split': 'validation'},
  )
  config, reason = run_settings.cell_config(
      grid.make_cell('synthetic', 'ditto'), settings
  )
  assert reason is None
  assert (config.rounds, config.eval_every, config.curve_split) == (
      40,
      10,
      'validation',
  )


def test_selected_report_marks_the_rest_pending(tmp_path):
  root = repo_paths.REPO
  completed = subprocess.run(
      [
          sys.executable,
          os.path.join(root, 'scripts', 'reproduce.py'),
          '--datasets=synthetic',
          '--report_only',
          '--methods=ditto',
          '--columns=a1:0.5',
          '--client_lr=0.02',
          f'--runs_dir={tmp_path / "runs"}',
          f'--output_dir={tmp_path / "out"}',
      ],
      # As a user runs it: no PYTHONPATH, from any folder (the theory
      # figures' import once needed the repository root on sys.path).
      cwd=tmp_path,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert completed.returncode == 0, process_output.failure_text(
      completed.stderr
  )
  # Ditto lambda=1 and lambda auto, on synthetic and on (not run) CelebA.
  assert '4 of ' in completed.stdout
  report = (tmp_path / 'out' / 'REPORT.md').read_text()
  assert 'Partial grid' in report and 'pending: not run yet' in report
  # A sensitivity grid's report says its rate.
  assert 'all clients; client_lr=0.02' in report
  assert (tmp_path / 'out' / 'theory_figure1.png').exists()
  misnamed = subprocess.run(
      [
          sys.executable,
          os.path.join(root, 'scripts', 'reproduce.py'),
          '--datasets=synthetic',
          '--report_only',
          '--rounds=femnst:3',
          f'--runs_dir={tmp_path / "runs"}',
          f'--output_dir={tmp_path / "out"}',
      ],
      cwd=root,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert misnamed.returncode != 0
  assert "not in the grid: ['femnst']" in misnamed.stderr, misnamed.stderr


def test_grid_cells_share_computations_with_the_same_results(tmp_path):
  """Clean and A1 (label poisoning) global cells reuse one process."""
  cells = [
      grid.make_cell('synthetic', 'global'),
      grid.make_cell('synthetic', 'global', 'a1', 0.5),
  ]
  results, logs = {}, {}
  for reuse in (True, False):
    settings = run_settings.RunSettings(
        data_dir=None,
        runs_dir=str(tmp_path / f'reuse_{reuse}'),
        rounds=2,
        max_clients=12,
        reuse_computations=reuse,
    )
    logs[reuse] = []
    results[reuse] = running.run_grid(
        cells, settings, log_fn=logs[reuse].append
    )
    assert results[reuse]['status'].tolist() == ['done', 'done']
  assert logs[True][-1].startswith(
      'computation cache: 2 computations built, 2 reused'
  )
  assert not any(line.startswith('computation cache') for line in logs[False])
  columns = [
      'cell_id',
      'benign_mean_accuracy',
      'benign_std_accuracy',
      'benign_pooled_accuracy',
      'benign_worst10_accuracy',
  ]
  pd.testing.assert_frame_equal(
      results[True][columns], results[False][columns], check_exact=True
  )
  for cell in cells:
    metrics = [
        pd.read_csv(
            os.path.join(
                str(tmp_path / f'reuse_{reuse}'),
                'synthetic',
                cell.cell_id,
                'metrics.csv',
            )
        ).drop(columns='seconds')
        for reuse in (True, False)
    ]
    pd.testing.assert_frame_equal(*metrics, check_exact=True)


def test_config_overrides_apply_under_the_cells_own_options(tmp_path):
  settings = run_settings.RunSettings(
      data_dir=None,
      runs_dir=str(tmp_path),
      rounds=2,
      config_overrides=dict(
          run_settings.QUICK_CONFIG_OVERRIDES, finetune_lam=0.5
      ),
  )
  plain, _ = run_settings.cell_config(
      grid.make_cell('synthetic', 'finetune'), settings
  )
  for name, value in run_settings.QUICK_CONFIG_OVERRIDES.items():
    assert getattr(plain, name) == value
  assert plain.finetune_lam == 0.5
  own, _ = run_settings.cell_config(
      grid.make_cell('synthetic', 'finetune', options=dict(finetune_lam=2)),
      settings,
  )
  assert own.finetune_lam == 2
  preset, _ = run_settings.cell_config(
      grid.make_cell('synthetic', 'finetune'),
      run_settings.RunSettings(data_dir=None, runs_dir=str(tmp_path)),
  )
  assert preset.clients_per_round != 5 or preset.local_steps != 2


def test_sign_test_p_value():
  # 0 wins in 5 untied pairs: 2 * (1/2)^5.
  assert comparisons.sign_test_p_value(0, 5) == 2 / 32
  assert comparisons.sign_test_p_value(5, 0) == 2 / 32
  assert comparisons.sign_test_p_value(3, 3) == 1.0
  assert comparisons.sign_test_p_value(0, 0) == 1.0
  # 1 of 10: 2 * (1 + 10) / 1024.
  assert abs(comparisons.sign_test_p_value(1, 9) - 22 / 1024) < 1e-12


def test_paired_device_comparison_counts_benign_devices_only(tmp_path):
  cell_files.write_client_metrics(
      tmp_path / 'ditto', [0.9, 0.5, 0.4, 0.0], [False, False, False, True]
  )
  cell_files.write_client_metrics(
      tmp_path / 'global', [0.8, 0.5, 0.6, 1.0], [False, False, False, True]
  )
  paired = comparisons.paired_device_comparison(
      str(tmp_path / 'ditto'), str(tmp_path / 'global')
  )
  assert paired == dict(wins=1, losses=1, ties=1, p_value=1.0)
  assert (
      comparisons.paired_device_comparison(
          str(tmp_path / 'ditto'), str(tmp_path / 'missing')
      )
      is None
  )


def test_table3_pairs_compare_ditto_with_global_under_the_same_aggregator(
    tmp_path,
):
  cells = {
      method: grid.make_cell('femnist', method, 'a3', 0.2, 'norm_clip')
      for method in ('ditto', 'global')
  }
  cells['ditto_auto'] = grid.make_cell(
      'femnist',
      'ditto',
      'a3',
      0.2,
      'norm_clip',
      options=grid.auto_lambda('a3', 0.2),
  )
  accuracies = (('global', 0.1), ('ditto', 0.5), ('ditto_auto', 0.6))
  results = pd.DataFrame([
      dict(
          dataset='femnist',
          cell_id=cells[name].cell_id,
          status='done',
          benign_mean_accuracy=accuracy,
          benign_std_accuracy=0.1,
      )
      for name, accuracy in accuracies
  ])
  assert comparisons.ditto_vs_robust_global('femnist', results.iloc[:0]) == []
  for name, device_accuracy, attacker_accuracy in (
      ('ditto', 0.6, 0.0),
      ('global', 0.1, 0.9),
      ('ditto_auto', 0.7, 0.0),
  ):
    cell_files.write_client_metrics(
        tmp_path / 'femnist' / cells[name].cell_id,
        [device_accuracy] * 6 + [attacker_accuracy],
        [False] * 6 + [True],
    )
  lines = comparisons.ditto_vs_robust_global(
      'femnist', results[:2], str(tmp_path)
  )
  # Header, separator and the one pair that ran (A3 20 % with clipping);
  # the per-device row is listed once it ran.
  assert len(lines) == 3
  assert lines[2] == (
      '| A3 20% | Ditto + clipping (lambda=1) | 0.500 | 0.100 | '
      '+40.0 pts | 6 / 0 / 0 (p = 0.031) | Ditto > global |'
  )
  lines = comparisons.ditto_vs_robust_global('femnist', results, str(tmp_path))
  assert len(lines) == 4
  assert lines[3] == (
      '| A3 20% | Ditto + clipping (lambda auto) | 0.600 | 0.100 | '
      '+50.0 pts | 6 / 0 / 0 (p = 0.031) | Ditto > global |'
  )


def test_report_tables_csv_paper_fallback_and_discussion(tmp_path):
  results = pd.DataFrame([
      dict(
          dataset='femnist',
          cell_id=grid.make_cell('femnist', method, 'none', 0.0).cell_id,
          status='done',
          benign_mean_accuracy=accuracy,
          benign_std_accuracy=0.1,
      )
      for method, accuracy in (('global', 0.7), ('ditto', 0.75))
  ])
  frame = tables.table_frame(grid.TABLE2, 'femnist', results)
  global_clean = frame[
      (frame['method'] == 'Global') & (frame['column'] == 'clean')
  ].iloc[0]
  assert global_clean['ours_mean'] == 0.7
  assert (global_clean['paper_mean'], global_clean['paper_source']) == (
      0.804,
      'table2',
  )
  # A column Table 2 does not print shows Table 1's number, marked.
  global_a2 = frame[
      (frame['method'] == 'Global') & (frame['column'] == 'A2 50%')
  ].iloc[0]
  assert (global_a2['paper_mean'], global_a2['paper_source']) == (
      0.703,
      'table1',
  )
  runs = tmp_path / 'runs' / 'femnist'
  cell_files.write_client_metrics(
      runs / 'ditto_none00_mean', [0.9, 0.8, 0.7], [False] * 3
  )
  cell_files.write_client_metrics(
      runs / 'global_none00_mean', [0.8, 0.7, 0.6], [False] * 3
  )
  path = cell_files.write_test_report(
      results,
      tmp_path / 'out',
      ['femnist'],
      runs_dir=str(tmp_path / 'runs'),
      discussions={'femnist': '#### Why the columns look like this'},
  )
  report = open(path).read()
  assert (
      '| clean | Ditto (lambda=1) | 0.750 | 0.700 | +5.0 pts | '
      '3 / 0 / 0 (p = 0.25) | Ditto > global, not significant |'
      in report
  )
  assert '0.703 (0.14) (Table 1)' in report
  assert '#### Why the columns look like this' in report
  written = pd.read_csv(tmp_path / 'out' / 'table2_femnist.csv')
  assert len(written) == len(grid.TABLE2.rows) * len(
      grid.TABLE2.columns('femnist')
  )


def test_evaluate_run_reads_a_finished_cell(tmp_path):
  """scripts/evaluate_run.py re-evaluates a kept cell exactly as it finished."""

  root = repo_paths.REPO
  kept, dropped = (
      grid.make_cell('synthetic', 'ditto'),
      grid.make_cell('synthetic', 'global'),
  )
  for cell, keep in ((kept, True), (dropped, False)):
    settings = run_settings.RunSettings(
        data_dir=None,
        runs_dir=str(tmp_path / 'runs'),
        rounds=2,
        max_clients=12,
        keep_checkpoints=keep,
    )
    (status,) = running.run_grid([cell], settings, log_fn=lambda _: None)[
        'status'
    ]
    assert status == 'done'

  def evaluate(cell, *extra):
    return subprocess.run(
        [
            sys.executable,
            os.path.join(root, 'scripts', 'evaluate_run.py'),
            f'--run_dir={run_settings.cell_dir(cell, settings)}',
            '--splits=test',
            *extra,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )

  completed = evaluate(kept)
  assert completed.returncode == 0, process_output.failure_text(
      completed.stderr
  )
  directory = run_settings.cell_dir(kept, settings)
  with open(os.path.join(directory, 'evaluation_test_round1.json')) as f:
    evaluated = json.load(f)['models']
  with open(os.path.join(directory, 'summary.json')) as f:
    final = json.load(f)['final']
  assert evaluated['benign_mean_accuracy'] == final['benign_mean_accuracy']
  assert evaluated['benign_pooled_loss'] == final['benign_pooled_loss']
  completed = evaluate(dropped)
  assert completed.returncode != 0
  assert 'no checkpoint to evaluate' in completed.stderr
  # Evaluation-only settings can be changed; the results are named after
  # them and the plain ones stay. Settings the training reads cannot.
  completed = evaluate(kept, '--evaluation_overrides=finetune_steps=3')
  assert completed.returncode == 0, process_output.failure_text(
      completed.stderr
  )
  with open(
      os.path.join(directory, 'evaluation_test_round1_finetune_steps-3.json')
  ) as f:
    assert json.load(f)['evaluation_overrides'] == {'finetune_steps': 3}
  assert os.path.exists(os.path.join(directory, 'evaluation_test_round1.json'))
  completed = evaluate(kept, '--evaluation_overrides=client_lr=0.5')
  assert completed.returncode != 0
  assert "'client_lr=0.5' is not name=value" in completed.stderr


def _run_one_round_cell(tmp_path, method):
  """(cell, settings) of a Synthetic cell run for 1 round on 12 clients."""
  cell = grid.make_cell('synthetic', method)
  settings = run_settings.RunSettings(
      data_dir=None, runs_dir=str(tmp_path / 'runs'), rounds=1, max_clients=12
  )
  assert running.run_grid([cell], settings, log_fn=lambda _: None)[
      'status'
  ].tolist() == ['done']
  return cell, settings


def test_a_cell_run_under_other_settings_is_not_reused(tmp_path):
  cell, settings = _run_one_round_cell(tmp_path, 'global')
  for other in (
      run_settings.RunSettings(
          data_dir=None, runs_dir=settings.runs_dir, rounds=1, max_clients=10
      ),
      run_settings.RunSettings(
          data_dir=None,
          runs_dir=settings.runs_dir,
          rounds=1,
          max_clients=12,
          config_overrides=dict(local_steps=3),
      ),
  ):
    (status,) = running.run_grid([cell], other, log_fn=lambda _: None)['status']
    assert status.startswith('failed: ') and 'other settings' in status
    assert (
        'max_clients 12 (now 10)' in status or 'local_steps' in status
    ), status
  # The same settings reuse it, also for a method whose recorded config is
  # normalized by the runner (local records lambda 0).
  local = grid.make_cell('synthetic', 'local')
  for _ in range(2):
    statuses = running.run_grid([cell, local], settings, log_fn=lambda _: None)[
        'status'
    ]
  assert statuses.tolist() == ['skipped (finished)'] * 2
  # Another checkpoint period changes no result: the cell is still reused.
  other_period = run_settings.RunSettings(
      data_dir=None,
      runs_dir=settings.runs_dir,
      rounds=1,
      max_clients=12,
      config_overrides=dict(checkpoint_every=3),
  )
  assert running.run_grid([cell], other_period, log_fn=lambda _: None)[
      'status'
  ].tolist() == ['skipped (finished)']
  # Asking for more rounds under the same settings continues the cell.
  more = run_settings.RunSettings(
      data_dir=None, runs_dir=settings.runs_dir, rounds=2, max_clients=12
  )
  lines = []
  assert running.run_grid([cell], more, log_fn=lines.append)[
      'status'
  ].tolist() == ['done']


def test_frozen_malicious_personal_models_are_reported_but_not_resumed_across(
    tmp_path,
):
  """A cell run with --nomalicious_personal_training reports as any other
  (no reported number changes); an unfinished one resumes only that way."""
  cell = grid.make_cell('synthetic', 'ditto', 'a1', 0.5)
  frozen = run_settings.RunSettings(
      data_dir=None,
      runs_dir=str(tmp_path / 'runs'),
      rounds=1,
      max_clients=12,
      keep_checkpoints=True,
      config_overrides=dict(malicious_personal_training=False),
  )
  assert running.run_grid([cell], frozen, log_fn=lambda _: None)[
      'status'
  ].tolist() == ['done']
  default = dataclasses.replace(frozen, config_overrides={})
  assert running.run_grid(
      [cell], default, log_fn=lambda _: None, run_missing=False
  )['status'].tolist() == ['skipped (finished)']
  # Continuing it for more rounds the other way would mix the two.
  more = dataclasses.replace(default, rounds=2)
  (status,) = running.run_grid([cell], more, log_fn=lambda _: None)[
      'status'
  ].tolist()
  assert 'malicious_personal_training False (now True)' in status, status
  assert running.run_grid(
      [cell],
      dataclasses.replace(frozen, rounds=2),
      log_fn=lambda _: None,
  )['status'].tolist() == ['done']


def test_an_unfinished_cell_records_its_config_and_old_records_use_defaults(
    tmp_path,
):
  """cell.json's config guards an unfinished cell; a field the record lacks
  is compared as its default (the cell ran before the field existed)."""

  cell, settings = _run_one_round_cell(tmp_path, 'perfedavg')
  directory = run_settings.cell_dir(cell, settings)
  with open(os.path.join(directory, 'cell.json')) as f:
    recorded = json.load(f)['config']
  assert recorded['method'] == 'perfedavg' and 'perfedavg_alpha' in recorded
  changed = run_settings.RunSettings(
      data_dir=None,
      runs_dir=settings.runs_dir,
      rounds=1,
      max_clients=12,
      config_overrides=dict(perfedavg_alpha=0.001),
  )
  config, _ = run_settings.cell_config(cell, changed)
  # Unfinished: only cell.json holds the config.
  os.remove(os.path.join(directory, 'summary.json'))
  status = run_settings.recorded_settings_mismatch(
      directory, cell, config, changed
  )
  assert 'perfedavg_alpha None (now 0.001)' in status, status
  # A record from before the field existed ran as its default.
  del recorded['perfedavg_alpha']
  with open(os.path.join(directory, 'cell.json'), 'w') as f:
    json.dump(dict(config=recorded), f)
  assert 'perfedavg_alpha None (now 0.001)' in (
      run_settings.recorded_settings_mismatch(directory, cell, config, changed)
  )
  unchanged, _ = run_settings.cell_config(cell, settings)
  assert (
      run_settings.recorded_settings_mismatch(
          directory, cell, unchanged, settings
      )
      is None
  )


def test_git_revision_ignores_the_reports_own_folder(tmp_path):
  def git(*args):
    subprocess.run(
        ['git', *args], cwd=tmp_path, check=True, capture_output=True
    )

  git('init', '-q')
  (tmp_path / 'results').mkdir()
  (tmp_path / 'results' / 'REPORT.md').write_text('old\n')
  (tmp_path / 'code.py').write_text('x = 1\n')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'c')
  (tmp_path / 'results' / 'REPORT.md').write_text('new\n')
  clean = report_lib.git_revision(
      str(tmp_path), ignore_dir=str(tmp_path / 'results')
  )
  assert len(clean) == 40, clean
  assert 'uncommitted' in report_lib.git_revision(str(tmp_path))
  (tmp_path / 'code.py').write_text('x = 2\n')
  assert 'uncommitted' in report_lib.git_revision(
      str(tmp_path), ignore_dir=str(tmp_path / 'results')
  )


# The sorted cell ids (one per line) of a FEMNIST or Vehicle grid before the
# attack columns became per dataset (commit f502c50); finished runs are
# keyed by them.
_GRID_IDS_BEFORE_SHA256 = (
    'b2352af61202a76768e0a6fd942423727d0513bd3e7a4d98866913a4ceebd98c'
)


def test_attack_columns_per_dataset():
  assert grid.attack_columns('fmnist')[-3:] == (
      ('a3', 0.1),
      ('a3', 0.2),
      ('a3', 0.5),
  )
  assert grid.attack_columns('femnist')[-3:] == (
      ('a3', 0.1),
      ('a3', 0.15),
      ('a3', 0.2),
  )
  assert grid.attack_columns('vehicle') == (grid.attack_columns('femnist'))
  assert grid.strongest_columns('fmnist')[-1] == ('a3', 0.5)
  assert grid.strongest_columns('femnist')[-1] == ('a3', 0.2)
  fmnist = {cell.cell_id for cell in grid.paper_cells(['fmnist'])}
  assert 'ditto_a350_mean' in fmnist and 'global_a350_krum' in fmnist
  assert not any('a315' in cell_id for cell_id in fmnist)
  # The per-device lambda cell at A3 50 % picks the strong-attack lambdas.
  assert 'ditto_a350_mean_lam_selection-auto_strong_attack-True' in fmnist
  assert 'ditto_a310_mean_lam_selection-auto' in fmnist
  assert grid.TABLE1.columns('fmnist') == (grid.attack_columns('fmnist'))
  assert grid.TABLE3.columns('fmnist')[-2:] == (('a3', 0.1), ('a3', 0.5))


@pytest.mark.parametrize('dataset', ['femnist', 'vehicle'])
def test_femnist_and_vehicle_cell_ids_unchanged(dataset):
  ids = [cell.cell_id for cell in grid.paper_cells([dataset])]
  for cell_id in (
      'ditto_a315_mean',
      'ditto_a315_mean_lam_selection-auto_strong_attack-True',
      'ditto_a310_mean_lam_selection-auto',
      'global_a320_krum',
      'ditto_a320_norm_clip',
      'term_a180_mean_term_t-5.0',
      'finetune_a320_mean_finetune_lam-0.1',
      'mapper_a250_mean',
  ):
    assert cell_id in ids
  # Table 3 gained the paper's A1 20 %, A2 20 % and A3 10 % columns: Ditto
  # under each robust aggregator there; and Ditto with per-device lambda
  # under each robust aggregator in all its columns. Every other cell is as
  # before.
  added = {
      f'ditto_{column}_{aggregator}'
      for column in ('a120', 'a220', 'a310')
      for _, aggregator in grid.ROBUST_AGGREGATORS
  }
  added |= {
      grid.make_cell(
          dataset,
          'ditto',
          attack,
          ratio,
          aggregator,
          options=grid.auto_lambda(attack, ratio),
      ).cell_id
      for attack, ratio in grid.TABLE3.columns(dataset)
      for _, aggregator in grid.ROBUST_AGGREGATORS
  }
  assert 'ditto_a180_norm_clip_lam_selection-auto_strong_attack-True' in added
  assert 'ditto_a310_median_lam_selection-auto' in added
  assert added <= set(ids)
  before = sorted(set(ids) - added)
  assert hashlib.sha256('\n'.join(before).encode()).hexdigest() == (
      _GRID_IDS_BEFORE_SHA256
  )


def test_paper_tables_use_the_projects_dataset_names():
  paper = paper_tables.read_paper_tables()
  assert len(paper) == len(paper_tables.paper_numbers()) == 144
  assert set(paper['dataset']) == {'fmnist', 'femnist', 'celeba'}
  assert set(paper['dataset']) <= set(registry.DATASET_NAMES)
  printed = {
      (row.paper_method, spec.key)
      for spec in grid.PAPER_SPECS
      for row in spec.rows
  }
  for table, method in zip(paper['table'], paper['method']):
    assert (method, table) in printed


_EMPTY_RESULTS = pd.DataFrame(
    columns=[
        'dataset',
        'cell_id',
        'status',
        'benign_mean_accuracy',
        'benign_std_accuracy',
    ]
)


def _paper_number(spec, dataset, label, column):
  """(paper mean, std, source table) of one cell of a report table."""
  frame = tables.table_frame(spec, dataset, _EMPTY_RESULTS)
  record = frame[(frame['method'] == label) & (frame['column'] == column)].iloc[
      0
  ]
  return record['paper_mean'], record['paper_std'], record['paper_source']


def test_paper_numbers_in_specific_cells():
  table1, table2, table3 = (grid.TABLE1, grid.TABLE2, grid.TABLE3)
  assert _paper_number(table1, 'fmnist', 'Global', 'A3 50%') == (
      0.275,
      0.12,
      'table1',
  )
  assert _paper_number(table1, 'fmnist', 'Ditto (lambda auto)', 'A3 50%') == (
      0.873,
      0.11,
      'table1',
  )
  assert _paper_number(table1, 'femnist', 'Fair (TERM, t=1)', 'A3 15%') == (
      0.316,
      0.12,
      'table1',
  )
  # FEMNIST global at A3 20 %: .314 in Table 1, .364 in Table 3.
  assert _paper_number(table1, 'femnist', 'Global', 'A3 20%')[0] == 0.314
  mean, std, source = _paper_number(table3, 'femnist', 'Global', 'A3 20%')
  assert (mean, source) == (0.364, 'table3') and pd.isna(std)
  # Ditto at A1 80 %: .672 in Table 1, .669 in Table 3.
  assert (
      _paper_number(table1, 'femnist', 'Ditto (lambda=1)', 'A1 80%')[0] == 0.672
  )
  assert (
      _paper_number(table3, 'femnist', 'Ditto (lambda=1)', 'A1 80%')[0] == 0.669
  )
  # Table 3's Ditto rows: the paper's number beside lambda = 1 (noted) and
  # per-device lambda, as in Table 1.
  for label in (
      'Ditto + clipping (lambda=1)',
      'Ditto + clipping (lambda auto)',
  ):
    assert _paper_number(table3, 'femnist', label, 'A3 10%')[0] == 0.813
  assert (
      _paper_number(table3, 'femnist', 'Ditto (lambda auto)', 'A1 80%')[0]
      == 0.669
  )
  assert pd.isna(
      _paper_number(
          table3, 'femnist', 'Ditto + median (lambda auto)', 'A3 10%'
      )[0]
  )
  assert _paper_number(table2, 'celeba', 'Per-FedAvg', 'A1 50%') == (
      0.756,
      0.26,
      'table2',
  )
  assert (
      _paper_number(table2, 'femnist', 'Ditto (lambda=1)', 'clean')[0] == 0.836
  )
  # No paper number: a robust rule in Table 1, another tilt, a dataset.
  assert pd.isna(_paper_number(table1, 'femnist', 'Robust (Krum)', 'A1 20%')[0])
  assert pd.isna(
      _paper_number(grid.FIGURE4, 'femnist', 'TERM t=2.0', 'A1 20%')[0]
  )
  assert pd.isna(_paper_number(table1, 'vehicle', 'Global', 'clean')[0])


def test_every_paper_number_lands_in_a_report_cell(tmp_path):
  output_dir = tmp_path / 'out'
  path = cell_files.write_test_report(
      _EMPTY_RESULTS,
      output_dir,
      ['fmnist', 'femnist', 'celeba'],
      {'celeba': 'no images'},
  )
  # (paper table, dataset, paper method, attack, ratio, mean) shown.
  cells = set()
  for name in glob.glob(str(output_dir / 'table*.csv')):
    dataset = os.path.basename(name)[: -len('.csv')].split('_', 1)[1]
    frame = pd.read_csv(name, keep_default_na=False)
    for record in frame[frame['paper_source'] != ''].to_dict('records'):
      cells.add((
          record['paper_source'],
          dataset,
          record['paper_method'],
          record['attack'],
          float(record['ratio']),
          float(record['paper_mean']),
      ))
  paper = paper_tables.read_paper_tables()
  missing = []
  for record in paper.to_dict('records'):
    attack, ratio = paper_tables.paper_column(record['column'])
    if (
        record['table'],
        record['dataset'],
        record['method'],
        attack,
        ratio,
        record['mean'],
    ) not in cells:
      missing.append(record)
  assert not missing
  report = open(path).read()
  for text in (
      '0.275 (0.12)',
      '0.364 |',
      '0.314 (0.13)',
      '## celeba (not run',
      '0.538 (0.28)',
  ):
    assert text in report
  assert "Ditto (lambda=1) [paper's: per-device lambda]" in report
  # Table 3's Ditto + clipping rows note the paper's protocol as Table 1's.
  assert "Ditto + clipping (lambda=1) [paper's: per-device lambda]" in report
  assert '| Ditto + clipping (lambda auto) | ' in report
  assert 'only FEMNIST clean' not in report


# ------------------------------------------------------------ derived rows

# A clean column and a strong-attack one (A1 50 %: candidates {0.05, 0.1,
# 0.2}, so the report lambdas 0 and 1 are both extra models).
DERIVED_COLUMNS = (('none', 0.0), ('a1', 0.5))
DERIVED_ROW_LABELS = (
    'Global',
    'Local',
    'Ditto (lambda=1)',
    'Ditto (lambda auto)',
)
RESULT_NAMES = (
    'benign_mean_accuracy',
    'benign_std_accuracy',
    'benign_pooled_accuracy',
    'benign_worst10_accuracy',
    'rounds',
)


def _table1_row_cells(dataset, columns=DERIVED_COLUMNS):
  rows = [row for row in grid.TABLE1.rows if row.label in DERIVED_ROW_LABELS]
  return [
      row.cell(dataset, attack, ratio)
      for attack, ratio in columns
      for row in rows
  ]


def _derived_settings(runs_dir, derive_rows):
  return run_settings.RunSettings(
      data_dir=None,
      runs_dir=str(runs_dir),
      rounds=2,
      max_clients=12,
      config_overrides=run_settings.QUICK_CONFIG_OVERRIDES,
      derive_rows=derive_rows,
  )


def _by_cell(results):
  return {
      cell_id: row
      for cell_id, row in zip(results['cell_id'], results.to_dict('records'))
  }


def _separate_and_derived_grids(root, cells):
  """{'separate' | 'derived': (settings, results, log lines)} of `cells`."""
  grids = {}
  for name, derive in (('separate', False), ('derived', True)):
    settings = _derived_settings(root / name, derive)
    lines = []
    grids[name] = (
        settings,
        running.run_grid(cells, settings, log_fn=lines.append),
        lines,
    )
  return grids


@pytest.fixture(scope='module')
def derived_grids(tmp_path_factory):
  """The four Table 1 rows of two columns: separate cells, and derived."""
  cells = _table1_row_cells('synthetic')
  return cells, _separate_and_derived_grids(
      tmp_path_factory.mktemp('derived'), cells
  )


def test_derived_rows_run_one_ditto_cell_per_column(derived_grids):
  cells, grids = derived_grids
  settings, results, lines = grids['derived']
  sources = [
      derived_rows.derived_source_cell('synthetic', attack, ratio)
      for attack, ratio in DERIVED_COLUMNS
  ]
  assert sources[0].cell_id == (
      'ditto_none00_mean_lam_selection-auto_report_lambdas-0.0+1.0'
  )
  assert sources[1].cell_id == (
      'ditto_a150_mean_lam_selection-auto_'
      'report_lambdas-0.0+1.0_strong_attack-True'
  )
  ran = results[results['status'] == 'done']['cell_id'].tolist()
  assert ran == [source.cell_id for source in sources]
  assert len([line for line in lines if 'running' in line]) == 2
  derived = results[results['status'] == result_rows.DERIVED_STATUS]
  assert sorted(derived['cell_id']) == sorted(cell.cell_id for cell in cells)
  for cell in cells:
    assert not os.path.exists(run_settings.cell_dir(cell, settings))


def test_derived_rows_equal_the_separate_cells(derived_grids):
  cells, grids = derived_grids
  separate = _by_cell(grids['separate'][1])
  derived = _by_cell(grids['derived'][1])
  for cell in cells:
    assert separate[cell.cell_id]['status'] == 'done'
    assert derived[cell.cell_id]['source_cell']
    for name in RESULT_NAMES:
      assert derived[cell.cell_id][name] == separate[cell.cell_id][name], (
          cell.cell_id,
          name,
      )


def test_derived_rows_keep_their_per_device_accuracies(derived_grids):
  cells, grids = derived_grids
  accuracies = {}
  for name, (settings, results, _) in grids.items():
    accuracies[name] = {}
    for cell in cells:
      directory, column = comparisons._device_accuracies(  # pylint: disable=protected-access
          results, settings.runs_dir, cell
      )
      frame = pd.read_csv(os.path.join(directory, 'client_metrics.csv'))
      accuracies[name][cell.cell_id] = frame[column].tolist()
  assert accuracies['derived'] == accuracies['separate']
  # So the report's Ditto vs global sign tests agree line for line.
  lines = {
      name: comparisons.ditto_vs_global('synthetic', results, settings.runs_dir)
      for name, (settings, results, _) in grids.items()
  }
  assert lines['derived'] == lines['separate']
  assert any('p = ' in line for line in lines['derived'])


def test_derived_rows_are_marked_in_the_report(derived_grids, tmp_path):
  _, grids = derived_grids
  settings, results, _ = grids['derived']
  cell_files.write_test_report(
      results, tmp_path, ['synthetic'], runs_dir=settings.runs_dir
  )
  table = pd.read_csv(tmp_path / 'table1_synthetic.csv')
  marked = table[table['source_cell'].notna()]
  assert set(marked['method']) == set(DERIVED_ROW_LABELS)
  assert set(marked['column']) == {'clean', 'A1 50%'}
  assert (marked['status'] == result_rows.DERIVED_STATUS).all()
  report = (tmp_path / 'REPORT.md').read_text()
  assert tables.DERIVED_MARKER.strip() in report
  # Derived rows have results: none is listed among the cells not run.
  assert '## Cells not run' not in report
  assert 'derived: 8' in report


def test_separate_cells_run_before_keep_reporting(derived_grids):
  """A grid holding the separate cells runs no derived cell."""
  cells, grids = derived_grids
  separate_settings, separate, _ = grids['separate']
  settings = dataclasses.replace(separate_settings, derive_rows=True)
  lines = []
  again = running.run_grid(cells, settings, log_fn=lines.append)
  assert again['status'].tolist() == ['skipped (finished)'] * len(cells)
  assert not [line for line in lines if 'running' in line]
  assert again['cell_id'].tolist() == separate['cell_id'].tolist()


def test_a_column_with_some_separate_cells_derives_the_rest(tmp_path):
  cells = _table1_row_cells('synthetic', columns=(('none', 0.0),))
  global_cell = cells[0]
  assert global_cell.method == 'global'
  running.run_grid(
      [global_cell], _derived_settings(tmp_path, False), log_fn=lambda _: None
  )
  results = running.run_grid(
      cells, _derived_settings(tmp_path, True), log_fn=lambda _: None
  )
  by_cell = _by_cell(results)
  assert by_cell[global_cell.cell_id]['status'] == 'skipped (finished)'
  assert not by_cell[global_cell.cell_id]['source_cell']
  for cell in cells[1:]:
    assert by_cell[cell.cell_id]['status'] == result_rows.DERIVED_STATUS
  # The source cell's global model is the separate global cell's.
  source = derived_rows.derived_source_cell('synthetic', 'none', 0.0)
  source_table = pd.read_csv(
      os.path.join(tmp_path, 'synthetic', source.cell_id, 'client_metrics.csv')
  )
  global_table = pd.read_csv(
      os.path.join(
          tmp_path, 'synthetic', global_cell.cell_id, 'client_metrics.csv'
      )
  )
  assert source_table['global_model_accuracy'].tolist() == (
      global_table['accuracy'].tolist()
  )


def test_a_pending_source_marks_its_rows_pending(tmp_path):
  cells = _table1_row_cells('synthetic', columns=(('none', 0.0),))
  results = running.run_grid(
      cells,
      _derived_settings(tmp_path, True),
      log_fn=lambda _: None,
      run_missing=False,
  )
  source = derived_rows.derived_source_cell('synthetic', 'none', 0.0)
  by_cell = _by_cell(results)
  assert by_cell[source.cell_id]['status'] == 'pending: not run yet'
  for cell in cells:
    assert by_cell[cell.cell_id]['status'] == (
        f'pending: from {source.cell_id}: not run yet'
    )


def test_figure6_column_derives_the_joint_solver_cells():
  settings = _derived_settings('/nonexistent-runs', True)
  figure6 = grid.spec_by_key('figure6')
  joint = [
      row.cell('femnist', 'a3', 0.2)
      for row in figure6.rows
      if row.method == 'ditto'
  ]
  _, derived = derived_rows.plan_derived_rows(joint, settings)
  assert [row.target for row in derived] == joint
  assert [row.summary_prefix for row in derived] == [
      'benign_lam_0.1_',
      'benign_lam_1_',
      'benign_lam_2_',
  ]
  # Cells of other methods, options or aggregators are not derived, nor a
  # robust aggregator's outside Table 3's columns.
  others = [
      grid.make_cell('femnist', 'global', 'a3', 0.15, 'median'),
      grid.make_cell('femnist', 'global', 'a3', 0.2, 'trimmed_mean'),
      grid.make_cell('femnist', 'term', 'a3', 0.2),
  ]
  to_run, derived = derived_rows.plan_derived_rows(others, settings)
  assert to_run == others and not derived


# ------------------------------------------------- Table 3's derived rows

ROBUST_AGGREGATOR_NAMES = tuple(name for _, name in grid.ROBUST_AGGREGATORS)


def _runnable(cell, settings):
  return run_settings.cell_config(cell, settings)[0] is not None


def test_table3_grid_runs_one_ditto_cell_per_column_and_aggregator():
  settings = _derived_settings('/nonexistent-runs', True)
  cells = grid.paper_cells(['femnist'], [grid.TABLE3])
  to_run, derived = derived_rows.plan_derived_rows(cells, settings)
  sources = [
      derived_rows.derived_source_cell('femnist', attack, ratio, aggregator)
      for attack, ratio in grid.TABLE3.columns('femnist')
      for aggregator in ('mean',) + ROBUST_AGGREGATOR_NAMES
  ]
  # Krum and Multi-Krum cannot run at 80 % (clients_per_round - f - 2 < 1):
  # their cells run on their own, to be listed as not run with the reason.
  assert sorted(c.cell_id for c in to_run if _runnable(c, settings)) == sorted(
      c.cell_id for c in sources if _runnable(c, settings)
  )
  not_runnable = [c for c in to_run if not _runnable(c, settings)]
  assert {(c.aggregator, c.attack, c.ratio) for c in not_runnable} == {
      (aggregator, attack, 0.8)
      for aggregator in ('krum', 'multi_krum')
      for attack in ('a1', 'a2')
  }
  assert len(not_runnable) == 12  # Global, lambda = 1, per device: 3 each.
  assert not set(not_runnable) & {row.target for row in derived}
  # Every other cell is read from its column's and aggregator's source.
  assert len(derived) + len(not_runnable) == len(cells)
  prefixes = {}
  for row in derived:
    target = row.target
    assert row.source == derived_rows.derived_source_cell(
        'femnist', target.attack, target.ratio, target.aggregator
    )
    label = 'auto' if target.options else target.method
    prefixes.setdefault(label, set()).add(row.summary_prefix)
  assert prefixes == dict(
      ditto={'benign_lam_1_'},
      auto={'benign_'},
      **{'global': {'global_model_benign_'}},
  )
  assert derived_rows.derived_source_cell(
      'femnist', 'a1', 0.8, 'norm_clip'
  ).cell_id == (
      'ditto_a180_norm_clip_lam_selection-auto_report_lambdas-1.0_'
      'strong_attack-True'
  )


def test_paper_budget_table3_selection_runs_only_robust_ditto_cells():
  """The documented --tables=table3 --methods=ditto run at the strongest
  columns: Table 1's Ditto cells serve its mean rows, one Ditto cell per
  robust aggregator and column the rest."""
  settings = _derived_settings('/nonexistent-runs', True)
  columns = grid.parse_columns(['a1:0.8', 'a2:0.8', 'a3:0.2'])
  selected = grid.select_cells(
      grid.paper_cells(['femnist'], [grid.TABLE3]),
      methods=['ditto'],
      columns=columns,
  )
  to_run, derived = derived_rows.plan_derived_rows(selected, settings)
  runnable = [c for c in to_run if _runnable(c, settings)]
  assert [c.cell_id for c in runnable] == [
      derived_rows.derived_source_cell(
          'femnist', attack, ratio, aggregator
      ).cell_id
      for attack, ratio in columns('femnist')
      for aggregator in ('mean',) + ROBUST_AGGREGATOR_NAMES
      if attack == 'a3' or aggregator not in ('krum', 'multi_krum')
  ]
  # Its mean cells are Table 1's column cells (run by the Table 1 command).
  table1_sources = {
      derived_rows.derived_source_cell('femnist', attack, ratio)
      for attack, ratio in grid.attack_columns('femnist')
  }
  assert {c for c in runnable if c.aggregator == 'mean'} <= table1_sources
  # All but Krum's and Multi-Krum's two Ditto rows at A1 and A2 80 %.
  assert len(derived) == len(selected) - 8


TABLE3_DERIVED_COLUMN = ('a3', 0.2)


def _table3_row_cells(dataset, aggregator):
  """Table 3's rows under `aggregator` in `TABLE3_DERIVED_COLUMN`."""
  return [
      row.cell(dataset, *TABLE3_DERIVED_COLUMN)
      for row in grid.TABLE3.rows
      if row.aggregator == aggregator
  ]


@pytest.fixture(scope='module')
def table3_derived_grids(tmp_path_factory):
  """Table 3's clipping rows of one column: separate cells, and derived."""
  cells = _table3_row_cells('synthetic', 'norm_clip')
  return cells, _separate_and_derived_grids(
      tmp_path_factory.mktemp('table3_derived'), cells
  )


def test_table3_derived_rows_equal_the_separate_cells(table3_derived_grids):
  cells, grids = table3_derived_grids
  assert [cell.method for cell in cells] == ['global', 'ditto', 'ditto']
  _, derived_results, lines = grids['derived']
  source = derived_rows.derived_source_cell(
      'synthetic', *TABLE3_DERIVED_COLUMN, 'norm_clip'
  )
  assert derived_results[derived_results['status'] == 'done'][
      'cell_id'
  ].tolist() == [source.cell_id]
  assert len([line for line in lines if 'running' in line]) == 1
  separate = _by_cell(grids['separate'][1])
  derived = _by_cell(derived_results)
  for cell in cells:
    assert separate[cell.cell_id]['status'] == 'done'
    assert derived[cell.cell_id]['status'] == result_rows.DERIVED_STATUS
    assert derived[cell.cell_id]['source_cell'] == source.cell_id
    for name in RESULT_NAMES:
      assert derived[cell.cell_id][name] == separate[cell.cell_id][name], (
          cell.cell_id,
          name,
      )


def test_table3_derived_rows_keep_their_per_device_comparisons(
    table3_derived_grids,
):
  cells, grids = table3_derived_grids
  accuracies, lines = {}, {}
  for name, (settings, results, _) in grids.items():
    accuracies[name] = []
    for cell in cells:
      directory, column = comparisons._device_accuracies(  # pylint: disable=protected-access
          results, settings.runs_dir, cell
      )
      frame = pd.read_csv(os.path.join(directory, 'client_metrics.csv'))
      accuracies[name].append(frame[column].tolist())
    lines[name] = comparisons.ditto_vs_robust_global(
        'synthetic', results, settings.runs_dir
    )
  assert accuracies['derived'] == accuracies['separate']
  assert lines['derived'] == lines['separate']
  assert [line.split(' | ')[1] for line in lines['derived'][2:]] == [
      'Ditto + clipping (lambda=1)',
      'Ditto + clipping (lambda auto)',
  ]
