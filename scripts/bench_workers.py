r"""Rounds per second of real FEMNIST Ditto on 1 owned, 1 and 2 loopback workers.

Each mode runs the same Ditto rounds (`tff_ditto.training.ExperimentRunner`,
FEMNIST CNN, seed 0) with a fresh client-state directory:

* `owned`: the worker this process starts itself (the default of
  `run_experiment.py`, `runtime.configure_local_execution`);
* `one_loopback`: one separately started worker on 127.0.0.1, reached as
  `--workers=127.0.0.1:PORT` (`runtime.configure_remote_execution`);
* `two_loopback`: two such workers under TFF's mergeable context.

Round times are medians after `--warmup_rounds` (tracing, first calls). The
final global weights of each mode are compared with `owned`'s (the same seed
must give the same model: bit for bit with one worker, to float rounding with
two, whose aggregate sums in another order; FEMNIST's dropout masks are
seeded from the bits of the layer input, so later rounds amplify that
rounding into a different trajectory). A repeated mode checks that a fixed
number of workers is bit-reproducible. The 1-minute load average before and
after each mode goes in the CSV: the 2-core machine is shared, so absolute
times are upper bounds.

  nice -n 10 .venv/bin/python scripts/bench_workers.py --data_dir=../shared/data \
      --rounds=8 --output=results/bench_workers.csv
"""

from __future__ import annotations

import csv
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags

from tff_ditto import runtime

_DATA_DIR = flags.DEFINE_string('data_dir', '../shared/data', 'Holds femnist/.')
_ROUNDS = flags.DEFINE_integer('rounds', 8, 'Rounds per mode.', lower_bound=2)
_WARMUP_ROUNDS = flags.DEFINE_integer(
    'warmup_rounds', 2, 'Rounds excluded from the median.', lower_bound=0
)
_CLIENTS_PER_ROUND = flags.DEFINE_integer(
    'clients_per_round', 10, 'Clients per round.'
)
_LOCAL_STEPS = flags.DEFINE_integer('local_steps', 10, 'Local steps.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 10, 'Batch size.')
_MAX_CONCURRENT = flags.DEFINE_integer(
    'max_concurrent_computation_calls',
    2,
    'Client computations each worker runs at once.',
)
_MODES = flags.DEFINE_list(
    'modes',
    ['owned', 'one_loopback', 'two_loopback', 'two_loopback'],
    'Modes to run, in order (a repeated mode checks its own reproducibility).',
)
_OUTPUT = flags.DEFINE_string(
    'output', 'results/bench_workers.csv', 'CSV file to write.'
)

_WORKER_COUNTS = {'owned': 1, 'one_loopback': 1, 'two_loopback': 2}


def _configure(mode: str):
  """Installs the mode's execution context; returns the workers started."""
  if mode == 'owned':
    runtime.configure_local_execution(_MAX_CONCURRENT.value)
    return
  addresses = []
  for _ in range(_WORKER_COUNTS[mode]):
    _, port = runtime.start_local_worker(
        max_concurrent_computation_calls=_MAX_CONCURRENT.value,
        bind_address='127.0.0.1',
    )
    addresses.append(f'127.0.0.1:{port}')
  runtime.configure_remote_execution(addresses)


def _run_mode(mode, dataset, spec, config, directory):
  """Returns (round seconds, final trainable weights as numpy)."""
  from tff_ditto import training  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  _configure(mode)
  runner = training.ExperimentRunner(
      config,
      dataset,
      spec.tff_model_fn(),
      directory,
      log_fn=None,
      overwrite=True,
  )
  seconds = []
  for round_num in range(1, _ROUNDS.value + 1):
    start = time.monotonic()
    runner.run_round(round_num)
    seconds.append(time.monotonic() - start)
    print(f'{mode}: round {round_num} {seconds[-1]:.2f} s', flush=True)
  weights = [
      np.asarray(w)
      for w in runner.process.get_model_weights(runner.state).trainable
  ]
  runtime.stop_started_workers()
  return seconds, weights


def main(argv):
  del argv
  unknown = [m for m in _MODES.value if m not in _WORKER_COUNTS]
  if unknown:
    raise app.UsageError(f'unknown --modes {unknown}')
  if _WARMUP_ROUNDS.value >= _ROUNDS.value:
    raise app.UsageError('--warmup_rounds must be < --rounds')
  runtime.set_quiet_logs(0)
  import numpy as np  # pylint: disable=g-import-not-at-top

  from tff_ditto import experiment_defaults  # pylint: disable=g-import-not-at-top
  from tff_ditto import models  # pylint: disable=g-import-not-at-top
  from tff_ditto.data import load_dataset  # pylint: disable=g-import-not-at-top

  (config,) = experiment_defaults.build_configs(
      'femnist',
      ['ditto'],
      dict(
          rounds=_ROUNDS.value,
          clients_per_round=_CLIENTS_PER_ROUND.value,
          local_steps=_LOCAL_STEPS.value,
          batch_size=_BATCH_SIZE.value,
          client_lr=0.1,
          seed=0,
          eval_every=_ROUNDS.value,
          checkpoint_every=0,
      ),
  )
  dataset = load_dataset('femnist', _DATA_DIR.value, seed=0)
  spec = models.get_model_spec('femnist', seed=0)
  rows, reference, first_run_of_mode = [], None, {}
  with tempfile.TemporaryDirectory() as scratch:
    for mode in _MODES.value:
      load_before = os.getloadavg()[0]
      seconds, weights = _run_mode(
          mode, dataset, spec, config, os.path.join(scratch, mode)
      )
      load_after = os.getloadavg()[0]
      median = statistics.median(seconds[_WARMUP_ROUNDS.value :])
      if reference is None:
        reference = weights
      difference = max(
          float(np.max(np.abs(a.astype(np.float64) - b)))
          for a, b in zip(weights, reference)
      )
      identical = all(np.array_equal(a, b) for a, b in zip(weights, reference))
      same_mode = first_run_of_mode.setdefault(mode, weights)
      repeat_identical = (
          ''
          if same_mode is weights
          else all(np.array_equal(a, b) for a, b in zip(weights, same_mode))
      )
      rows.append(
          dict(
              mode=mode,
              workers=_WORKER_COUNTS[mode],
              rounds=_ROUNDS.value,
              warmup_rounds=_WARMUP_ROUNDS.value,
              clients_per_round=_CLIENTS_PER_ROUND.value,
              local_steps=_LOCAL_STEPS.value,
              batch_size=_BATCH_SIZE.value,
              median_round_seconds=round(median, 3),
              rounds_per_second=round(1.0 / median, 4),
              round_seconds=' '.join(f'{s:.2f}' for s in seconds),
              max_abs_weight_difference_vs_first_mode=difference,
              identical_to_first_mode=identical,
              identical_to_earlier_run_of_same_mode=repeat_identical,
              load_average_1m_before=round(load_before, 2),
              load_average_1m_after=round(load_after, 2),
              cpu_count=os.cpu_count(),
          )
      )
      print(rows[-1], flush=True)
  first = rows[0]['median_round_seconds']
  for row in rows:
    row['speed_vs_first_mode'] = round(first / row['median_round_seconds'], 3)
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  with open(_OUTPUT.value, 'w', newline='') as file:
    writer = csv.DictWriter(file, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
