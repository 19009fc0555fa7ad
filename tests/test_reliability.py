"""Crash recovery with real processes and real SIGKILLs.

A run killed mid-round, mid-checkpoint-write, or at a random moment, then
resumed with --resume, must end bit-identical to an uninterrupted run with the
same seed: same per-round metrics (but wall-clock), same per-client final
results, same personalized-model files, and no TFF worker left behind.
"""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import process_output
from tff_ditto import client_states

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUNDS = 5
BASE_FLAGS = [
    '--dataset=synthetic',
    '--max_clients=6',
    '--clients_per_round=3',
    f'--rounds={ROUNDS}',
    '--eval_every=2',
    '--local_steps=3',
    '--method=ditto',
    '--seed=3',
    '--checkpoint_every=1',
]


def _command(output_dir, *extra):
  return [
      sys.executable,
      'run_experiment.py',
      *BASE_FLAGS,
      f'--output_dir={output_dir}',
      *extra,
  ]


def _run(output_dir, *extra, fault=None):
  environment = dict(os.environ)
  environment.pop('TFF_DITTO_FAULT', None)
  if fault:
    environment['TFF_DITTO_FAULT'] = fault
  return subprocess.run(
      _command(output_dir, *extra),
      cwd=REPO_ROOT,
      env=environment,
      capture_output=True,
      text=True,
      timeout=600,
  )


def _worker_children(pid):
  """pids of live worker_binary processes whose parent is `pid`."""
  found = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat') as f:
        parent = int(f.read().rsplit(')', 1)[1].split()[1])
      with open(f'/proc/{entry}/cmdline', 'rb') as f:
        command = f.read()
    except OSError:
      continue
    if parent == pid and b'worker_binary' in command:
      found.append(int(entry))
  return found


def _final_state(output_dir):
  run_dir = os.path.join(output_dir, 'ditto')
  metrics = pd.read_csv(os.path.join(run_dir, 'metrics.csv')).drop(
      columns=['seconds']
  )
  clients = pd.read_csv(os.path.join(run_dir, 'client_metrics.csv'))
  with open(os.path.join(run_dir, 'summary.json')) as f:
    final = json.load(f)['final']
  states = {}
  state_root = os.path.join(run_dir, 'client_states')
  for client in sorted(os.listdir(state_root)):
    client_dir = os.path.join(state_root, client)
    if os.path.isdir(client_dir):
      newest = sorted(os.listdir(client_dir))[-1].split('.')[0]
      files = client_states.state_files(
          os.path.join(client_dir, newest + client_states.STATE_SUFFIX)
      )
      states[client] = (newest, [pathlib.Path(f).read_bytes() for f in files])
  return metrics, clients, final, states


def _assert_same_run(reference_dir, resumed_dir):
  ref_metrics, ref_clients, ref_final, ref_states = _final_state(reference_dir)
  metrics, clients, final, states = _final_state(resumed_dir)
  assert list(metrics['round']) == list(range(ROUNDS))
  pd.testing.assert_frame_equal(metrics, ref_metrics, check_exact=True)
  pd.testing.assert_frame_equal(clients, ref_clients, check_exact=True)
  assert final == ref_final
  assert states.keys() == ref_states.keys()
  for client in states:
    assert states[client] == ref_states[client], client


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('reference'))
  result = _run(output_dir)
  assert result.returncode == 0, process_output.failure_text(result.stderr)
  return output_dir


@pytest.mark.parametrize(
    'fault,extra',
    [
        ('mid_round:2', ()),
        ('mid_checkpoint:3', ()),
        # Checkpoints after rounds 2 and 4 only: the resumed run redoes rounds 3
        # and 4, whose metrics rows and client states the killed run had written.
        ('mid_round:4', ('--checkpoint_every=3',)),
    ],
)
def test_sigkill_at_injected_points_then_resume_is_bit_identical(
    reference_run, tmp_path, fault, extra
):
  output_dir = str(tmp_path / 'run')
  killed = _run(output_dir, *extra, fault=fault)
  assert killed.returncode == -signal.SIGKILL, process_output.failure_text(
      killed.stderr
  )
  resumed = _run(output_dir, '--resume', *extra)
  assert resumed.returncode == 0, process_output.failure_text(resumed.stderr)
  if fault.startswith('mid_checkpoint'):
    assert 'incomplete' in resumed.stdout
  _assert_same_run(reference_run, output_dir)


def test_sigkill_at_random_moments_then_resume_is_bit_identical(
    reference_run, tmp_path
):
  output_dir = str(tmp_path / 'run')
  rng = random.Random(20261121)
  for attempt in range(2):
    # The first attempt starts the run; later ones resume it (--resume needs
    # the run's recorded flags.json).
    extra = ('--resume',) if attempt else ()
    process = subprocess.Popen(
        _command(output_dir, *extra),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Wait until training has started, then kill at a random moment.
    deadline = time.monotonic() + 300
    for line in process.stdout:
      if 'round' in line or time.monotonic() > deadline:
        break
    time.sleep(rng.uniform(0.0, 1.5))
    workers = _worker_children(process.pid)
    process.kill()
    process.wait()
    time.sleep(0.5)  # PR_SET_PDEATHSIG delivery
    assert not [
        w for w in workers if os.path.exists(f'/proc/{w}') and _is_live(w)
    ], 'worker outlived its killed parent'
  resumed = _run(output_dir, '--resume')
  assert resumed.returncode == 0, process_output.failure_text(resumed.stderr)
  _assert_same_run(reference_run, output_dir)


def _is_live(pid):
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def test_torn_checkpoint_files_are_detected(reference_run, tmp_path):
  """A checkpoint whose files were damaged after the marker falls back too."""
  output_dir = str(tmp_path / 'run')
  killed = _run(output_dir, fault='mid_round:4')
  assert killed.returncode == -signal.SIGKILL
  checkpoints = os.path.join(output_dir, 'ditto', 'checkpoints')
  newest = max(
      int(n.rsplit('_', 1)[1])
      for n in os.listdir(checkpoints)
      if n.startswith('program_state_')
  )
  damaged = 0
  for root, _, files in os.walk(
      os.path.join(checkpoints, f'program_state_{newest}')
  ):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'r+b') as f:
        f.truncate(max(os.path.getsize(path) // 3, 1))
      damaged += 1
  assert damaged
  resumed = _run(output_dir, '--resume')
  assert resumed.returncode == 0, process_output.failure_text(resumed.stderr)
  assert 'unreadable' in resumed.stdout
  _assert_same_run(reference_run, output_dir)


def test_output_directory_is_not_overwritten(reference_run):
  result = _run(reference_run)
  assert result.returncode != 0
  assert '--resume' in result.stderr and '--overwrite' in result.stderr


def test_flag_errors_are_one_line_before_tensorflow(tmp_path):
  result = subprocess.run(
      [
          sys.executable,
          'run_experiment.py',
          '--clients_per_round=0',
          f'--output_dir={tmp_path}/x',
      ],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert result.returncode != 0
  error_lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(error_lines) == 1, result.stderr
  assert 'clients_per_round' in error_lines[0]
  assert not os.path.exists(f'{tmp_path}/x')


def test_state_data_files_are_plain_float32(reference_run):
  """A personalized model's data file is its flat float32 vector, raw."""
  _, _, _, states = _final_state(reference_run)
  run_states = os.path.join(reference_run, 'ditto', 'client_states')
  for client, (newest, (_, data)) in states.items():
    flat = np.frombuffer(data, np.float32)
    assert flat.ndim == 1 and np.all(np.isfinite(flat)), newest
    path = os.path.join(run_states, client, newest + client_states.STATE_SUFFIX)
    np.testing.assert_array_equal(flat, client_states.read_flat_state(path))
