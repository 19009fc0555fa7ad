"""scripts/cell_progress.py: rounds, pace and time left of a runs folder's cells."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

import process_output
import repo_paths
from tff_ditto.reproduction import grid
from tff_ditto.reproduction import run_settings
from tff_ditto.reproduction import running

_SCRIPT = os.path.join(repo_paths.SCRIPTS, 'cell_progress.py')


def _load():
  spec = importlib.util.spec_from_file_location('cell_progress', _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


cell_progress = _load()


def _write_cell(directory, rounds, seconds=None):
  """cell.json asking for `rounds`; metrics.csv rounds 0.. with `seconds`."""
  os.makedirs(directory)
  with open(os.path.join(directory, 'cell.json'), 'w') as f:
    json.dump(dict(config=dict(rounds=rounds)), f)
  if seconds is not None:
    pd.DataFrame(
        dict(round=range(len(seconds)), seconds=seconds, global_train_loss=1.0)
    ).to_csv(os.path.join(directory, 'metrics.csv'), index=False)


def test_a_real_cell_is_finished_then_counted_from_its_metrics(tmp_path):
  # A cell as the grid writes it: finished with its summary; without it,
  # its metrics.csv (rounds numbered from 0) says how far it got.
  settings = run_settings.RunSettings(
      data_dir=None, runs_dir=str(tmp_path / 'runs'), rounds=2, max_clients=12
  )
  cell = grid.make_cell('synthetic', 'global')
  running.run_grid([cell], settings, log_fn=lambda _: None)
  (row,) = cell_progress.runs_progress(
      [settings.runs_dir], show_finished=True
  ).to_dict('records')
  assert (row['dataset'], row['cell_id'], row['state']) == (
      'synthetic',
      cell.cell_id,
      'finished',
  )
  assert (row['rounds_done'], row['rounds'], row['hours_left']) == (2, 2, 0.0)
  assert cell_progress.runs_progress([settings.runs_dir]).empty

  cell_dir = run_settings.cell_dir(cell, settings)
  os.remove(os.path.join(cell_dir, 'summary.json'))
  (row,) = cell_progress.runs_progress([settings.runs_dir]).to_dict('records')
  seconds = pd.read_csv(os.path.join(cell_dir, 'metrics.csv'))['seconds']
  assert (row['state'], row['rounds_done'], row['rounds']) == (
      'running',
      2,
      2,
  )
  assert row['seconds_per_round'] == pytest.approx(seconds.median())


def test_pace_is_the_recent_median_and_states_follow_the_files(tmp_path):
  runs = tmp_path / 'runs'
  _write_cell(str(runs / 'femnist' / 'slow'), 10, [9.0, 1.0, 2.0, 3.0])
  _write_cell(str(runs / 'femnist' / 'queued'), 10)
  stale = os.path.join(str(runs / 'femnist' / 'slow'), 'metrics.csv')
  os.utime(stale, (1e9, 1e9))
  frame = cell_progress.runs_progress([str(runs)], recent_rounds=3)
  rows = {row['cell_id']: row for row in frame.to_dict('records')}
  assert rows['slow']['state'] == 'stopped'
  assert rows['slow']['rounds_done'] == 4
  # The first round (9 s, the computations being built) is not recent.
  assert rows['slow']['seconds_per_round'] == 2.0
  assert rows['slow']['hours_left'] == pytest.approx(6 * 2.0 / 3600)
  assert rows['queued']['state'] == 'not started'
  assert frame['cell_id'].tolist() == ['slow', 'queued']


def test_bad_folders_are_named(tmp_path):
  _write_cell(str(tmp_path / 'runs' / 'vehicle' / 'broken'), 0)
  with pytest.raises(ValueError, match='broken/cell.json'):
    cell_progress.runs_progress([str(tmp_path / 'runs')])
  missing = subprocess.run(
      [sys.executable, _SCRIPT, f'--runs_dirs={tmp_path / "absent"}'],
      capture_output=True,
      text=True,
      check=False,
  )
  assert missing.returncode != 0
  assert 'runs folder not found' in missing.stderr, process_output.failure_text(
      missing.stderr
  )


def test_the_script_prints_and_writes_the_table(tmp_path):
  _write_cell(str(tmp_path / 'runs' / 'fmnist' / 'a350'), 20, [4.0, 6.0])
  output = tmp_path / 'progress.csv'
  completed = subprocess.run(
      [
          sys.executable,
          _SCRIPT,
          f'--runs_dirs={tmp_path / "runs"}',
          f'--output={output}',
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  assert completed.returncode == 0, process_output.failure_text(
      completed.stderr
  )
  assert '| fmnist | a350 | running | 2 | 20 | 5.00 | 0.03 |' in (
      completed.stdout
  )
  assert pd.read_csv(output)['rounds_done'].tolist() == [2]
