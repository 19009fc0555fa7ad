"""Cells whose training stopped being finite: found, counted, reported."""

import dataclasses
import math

import pandas as pd

import cell_files
from tff_ditto.reproduction import grid
from tff_ditto.reproduction import run_settings
from tff_ditto.reproduction import running
from tff_ditto.reproduction import training_health


def test_non_finite_training_counts_rounds_from_one():
  metrics = pd.DataFrame(
      dict(
          round=[0, 1, 2, 3, 4],
          global_train_loss=[2.0, 9.5e5, math.nan, math.inf, math.nan],
          non_finite_updates=[0.0, 1.0, 3.0, 2.0, 3.0],
      )
  )
  health = training_health.non_finite_training(metrics, clients_per_round=3)
  assert health == training_health.NonFiniteTraining(
      first_round=3,
      last_finite_loss=9.5e5,
      non_finite_rounds=3,
      stuck_rounds=2,
      stuck_to_end=True,
      rounds=5,
  )
  finite = metrics.assign(global_train_loss=1.0)
  assert training_health.non_finite_training(finite, 3) is None


def test_a_cell_whose_training_blows_up_is_reported(tmp_path):
  # Table 1's clean global cell with a learning rate near float32's largest
  # value: the first local step of every client overflows, every update is
  # zeroed, and the global model never moves. Its Ditto cell, run under the
  # preset rate into the same runs folder, trains normally.
  broken = grid.make_cell('synthetic', 'global')
  healthy = grid.make_cell('synthetic', 'ditto')
  runs_dir = str(tmp_path / 'runs')
  settings = run_settings.RunSettings(
      data_dir=None, runs_dir=runs_dir, rounds=3, max_clients=12
  )
  blown_up = dataclasses.replace(
      settings, config_overrides=dict(client_lr=3e38)
  )
  lines = []
  results = pd.concat(
      [
          running.run_grid([broken], blown_up, {}, log_fn=lines.append),
          running.run_grid([healthy], settings, {}, log_fn=lines.append),
      ],
      ignore_index=True,
  )
  assert results['status'].tolist() == ['done', 'done']

  health = training_health.read_non_finite_training(
      run_settings.cell_dir(broken, settings)
  )
  assert health is not None
  assert health.first_round == 1
  assert math.isnan(health.last_finite_loss)
  assert health.non_finite_rounds == health.stuck_rounds == health.rounds == 3
  assert health.stuck_to_end
  assert (
      training_health.read_non_finite_training(
          run_settings.cell_dir(healthy, settings)
      )
      is None
  )

  path = cell_files.write_test_report(
      results, tmp_path / 'report', ['synthetic'], runs_dir=runs_dir
  )
  with open(path) as f:
    report = f.read()
  section = report.split('### Training that stopped being finite')[1]
  section = section.split('\n#')[0]
  assert f'| {broken.cell_id} | 1 | nan | 3 | 3 | yes | 3 |' in section
  assert healthy.cell_id not in section
  # The Ditto vs global comparison of the clean column names the stuck run.
  (clean_line,) = [
      line
      for line in report.split('### Ditto vs global under attack')[1].split(
          '\n'
      )
      if line.startswith('| clean | Ditto (lambda=1) |')
  ]
  assert clean_line.endswith(
      "; global's training non-finite, stuck from round 1 |"
  )
  # Without the runs folder there is nothing to read, and no section.
  assert (
      training_health.non_finite_training_lines('synthetic', results, None)
      == []
  )
