"""scripts/paper_budget_queue.py: its queues are valid reproduce.py commands."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

import process_output
import repo_paths
from tff_ditto.reproduction import grid

_SCRIPT = os.path.join(repo_paths.SCRIPTS, 'paper_budget_queue.py')
_QUEUES = (
    'femnist_table1',
    'fmnist_table1',
    'femnist_lr003',
    'femnist_table3',
    'femnist_term',
    'femnist_figure4',
    'vehicle_rest',
)


def _dry_run(queue: str) -> list[str]:
  completed = subprocess.run(
      [sys.executable, _SCRIPT, f'--queue={queue}', '--dry_run'],
      capture_output=True,
      text=True,
      check=False,
  )
  assert completed.returncode == 0, process_output.failure_text(
      completed.stderr
  )
  return completed.stdout.splitlines()


@pytest.fixture(scope='module')
def reproduce_flags() -> set[str]:
  completed = subprocess.run(
      [
          sys.executable,
          os.path.join(repo_paths.SCRIPTS, 'reproduce.py'),
          '--helpfull',
      ],
      capture_output=True,
      text=True,
      check=False,
  )
  # absl's --helpfull exits with status 1 after printing the flags.
  assert '--data_dir' in completed.stdout, process_output.failure_text(
      completed.stderr
  )
  return set(re.findall(r'--(?:\[no\])?(\w+):', completed.stdout))


@pytest.mark.parametrize('queue', _QUEUES)
def test_each_queue_runs_reproduce_with_its_flags(queue, reproduce_flags):
  lines = _dry_run(queue)
  # It runs in, and with the code of, the checkout it is in.
  assert lines[0] == f'cd {shlex.quote(repo_paths.REPO)}'
  assert f'export PYTHONPATH={shlex.quote(repo_paths.REPO)}' in lines
  commands = [shlex.split(line) for line in lines if 'reproduce.py' in line]
  assert commands
  for command in commands:
    assert command[1] == os.path.join(repo_paths.SCRIPTS, 'reproduce.py')
    values = {}
    for argument in command[2:]:
      name, _, value = argument[2:].partition('=')
      assert name.removeprefix('no') in reproduce_flags, argument
      values[name] = value
    assert os.path.isabs(values['data_dir'])
    # The paper-budget cells share one runs folder; the lr 0.03 grid, which
    # changes a preset, has its own.
    assert values['runs_dir'] == (
        'results/paper_budget_lr003/runs'
        if 'client_lr' in values
        else 'results/paper_budget/runs'
    )
    # Their rounds and columns are ones the grid takes.
    grid.parse_rounds(values['rounds'].split(','))
    if 'columns' in values:
      assert grid.parse_columns(values['columns'].split(','))(
          values['datasets']
      )


def test_attacked_ditto_queues_freeze_malicious_personal_models():
  for queue in (
      'femnist_table1',
      'fmnist_table1',
      'femnist_lr003',
      'femnist_table3',
  ):
    assert '--nomalicious_personal_training' in _dry_run(queue)[-1]
  assert 'export MALLOC_MMAP_MAX_=0' in _dry_run('fmnist_table1')


def test_an_unknown_queue_is_refused():
  completed = subprocess.run(
      [sys.executable, _SCRIPT, '--queue=celeba', '--dry_run'],
      capture_output=True,
      text=True,
      check=False,
  )
  assert completed.returncode != 0
  assert 'femnist_table1' in completed.stderr


def test_table3_queue_leaves_the_mean_cells_to_table1():
  (command,) = [
      line for line in _dry_run('femnist_table3') if 'reproduce.py' in line
  ]
  aggregators = re.search(r'--aggregators=(\S+)', command).group(1).split(',')
  # Every robust aggregator of Table 3, and not the mean, whose cells are
  # Table 1's (the femnist_table1 queue runs them).
  assert sorted(aggregators) == sorted(
      aggregator for _, aggregator in grid.ROBUST_AGGREGATORS
  )
