"""Where a round's time goes: fixed cost per round against cost per local step.

Runs the project's round (`ExperimentRunner.run_round`, no evaluation, no
checkpoint) at several `--local_steps` and records per round the wall time,
the CPU time of this (driver) process and of the TFF worker process it
started. A line through the wall times gives the round's fixed cost
(dispatch, client data, state files, aggregation: what a round costs
without training) and its cost per local step (the clients' SGD). Results:
results/profile_round.csv and a markdown table on stdout.

For the worker's own profile (which functions its CPU goes to), record it
with Linux perf while this runs, e.g.

  perf record -e cpu-clock -F 999 -g -p <worker pid> -- sleep 10

(docs/performance.md shows one before and after the in-graph client loops).

  .venv/bin/python scripts/profile_round.py --data_dir=../shared/data
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import os
import subprocess
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Imported before app.run: Keras 2.14 fails to build Sequential models eagerly
# when TensorFlow is first imported inside an absl main.
import tensorflow as tf  # noqa: E402,F401  pylint: disable=unused-import

from tff_ditto import experiment  # noqa: E402
from tff_ditto import experiment_defaults  # noqa: E402
from tff_ditto import models  # noqa: E402
from tff_ditto import runtime  # noqa: E402
from tff_ditto import training  # noqa: E402
from tff_ditto import training_config  # noqa: E402
from tff_ditto.data import load_dataset  # noqa: E402

_DATA_DIR = flags.DEFINE_string(
    'data_dir', '../shared/data', 'Parent of the datasets (femnist/, ...).'
)
_DATASET = flags.DEFINE_string('dataset', 'femnist', 'Dataset.')
_METHOD = flags.DEFINE_string('method', 'ditto', 'Method.')
_STEPS = flags.DEFINE_list(
    'local_steps', ['1', '10', '20'], 'Local steps per round to measure.'
)
_ROUNDS = flags.DEFINE_integer('rounds', 10, 'Measured rounds per setting.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Unmeasured warm-up rounds.')
_OUTPUT = flags.DEFINE_string(
    'output', 'results/profile_round.csv', 'CSV written with the results.'
)


def _cpu_seconds(pid: int) -> float:
  """User + system CPU seconds of a process so far (Linux /proc)."""
  with open(f'/proc/{pid}/stat') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def measure(dataset, spec, local_steps: int, worker_pid: int, output_dir: str):
  """(wall, driver CPU, worker CPU) seconds per round at `local_steps`."""
  values = experiment_defaults.preset_for(_DATASET.value)
  values.update(
      method=_METHOD.value,
      local_steps=local_steps,
      rounds=_WARMUP.value + _ROUNDS.value,
      eval_every=10**9,
      checkpoint_every=0,
      seed=0,
  )
  fields = {
      field.name
      for field in dataclasses.fields(training_config.ExperimentConfig)
  }
  config = training_config.ExperimentConfig(
      **{key: value for key, value in values.items() if key in fields}
  )
  runner = training.ExperimentRunner(
      config,
      dataset,
      spec.tff_model_fn(),
      output_dir,
      log_fn=None,
  )
  for round_num in range(_WARMUP.value):
    runner.run_round(round_num)
  worker, driver = _cpu_seconds(worker_pid), _cpu_seconds(os.getpid())
  start = time.perf_counter()
  for round_num in range(_WARMUP.value, _WARMUP.value + _ROUNDS.value):
    runner.run_round(round_num)
  rounds = _ROUNDS.value
  return (
      (time.perf_counter() - start) / rounds,
      (_cpu_seconds(os.getpid()) - driver) / rounds,
      (_cpu_seconds(worker_pid) - worker) / rounds,
  )


def main(argv):
  del argv
  runtime.set_quiet_logs(0)
  runtime.configure_local_execution(max_concurrent_computation_calls=2)
  worker_pid = runtime.started_worker_pids()[-1]
  dataset = load_dataset(
      _DATASET.value, _DATA_DIR.value, validation_fraction=0.1, seed=0
  )
  spec = models.get_model_spec(_DATASET.value, seed=0)
  commit = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True
  ).stdout.strip()
  rows = []
  for steps in [int(value) for value in _STEPS.value]:
    with tempfile.TemporaryDirectory(prefix='profile_round_') as output_dir:
      wall, driver, worker = measure(
          dataset, spec, steps, worker_pid, output_dir
      )
    rows.append(
        collections.OrderedDict(
            dataset=_DATASET.value,
            method=_METHOD.value,
            local_steps=steps,
            round_seconds=wall,
            driver_cpu_seconds=driver,
            worker_cpu_seconds=worker,
        )
    )
    print(
        f'{steps} local steps: {wall:.3f} s per round (CPU: driver '
        f'{driver:.3f} s, worker {worker:.3f} s)',
        flush=True,
    )
  frame = pd.DataFrame(rows)
  slope, intercept = np.polyfit(frame['local_steps'], frame['round_seconds'], 1)
  frame['fit_fixed_seconds'] = intercept
  frame['fit_seconds_per_local_step'] = slope
  frame['date'] = datetime.date.today().isoformat()
  frame['commit'] = commit
  frame['cores'] = os.cpu_count()
  os.makedirs(os.path.dirname(_OUTPUT.value) or '.', exist_ok=True)
  frame.to_csv(_OUTPUT.value, index=False)
  print(
      experiment.markdown_table(
          frame[[
              'local_steps',
              'round_seconds',
              'driver_cpu_seconds',
              'worker_cpu_seconds',
          ]]
      )
  )
  print(f'\nfixed {intercept:.3f} s per round + {slope:.4f} s per local step')


if __name__ == '__main__':
  app.run(main)
