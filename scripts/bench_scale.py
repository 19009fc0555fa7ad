"""Scale benchmark: many clients per round, many clients in total, flat memory.

Runs the real Ditto round (`tff_ditto.training.ExperimentRunner`, FEMNIST CNN,
file-backed personal models, checkpoints every round as in real runs) with
`--clients_per_round` (100) of `--num_clients` (1000) clients for `--rounds`
(200) rounds and records, per round, the wall time and the resident memory
(VmRSS) of this process and of the TFF worker. The memory slope is a least-
squares fit of RSS over the rounds after warm-up; "flat" means the slope times
the number of rounds stays small against the RSS itself.

Clients: the real LEAF FEMNIST writers (../shared/data/femnist) are reused
cyclically to make `--num_clients` clients (client j holds writer j mod 240's
data under its own id and its own personal model); speed and memory depend on
the model and the number of clients, not on whose handwriting it is.

  .venv/bin/python scripts/bench_scale.py --data_dir=../shared/data

Results: results/bench_scale_rounds.csv (one row per round) and
results/bench_scale.csv (one summary row per run).
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import collections  # noqa: E402
import datetime  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

# Imported before app.run: Keras 2.14 fails to build Sequential models eagerly
# when TensorFlow is first imported inside an absl main.
import tensorflow as tf  # noqa: E402,F401

_DATA_DIR = flags.DEFINE_string(
    'data_dir', '../shared/data', 'Parent of the femnist/ LEAF folder.'
)
_NUM_CLIENTS = flags.DEFINE_integer(
    'num_clients', 1000, 'Clients in total (FEMNIST writers reused cyclically).'
)
_CLIENTS_PER_ROUND = flags.DEFINE_integer(
    'clients_per_round', 100, 'Clients sampled per round.'
)
_ROUNDS = flags.DEFINE_integer('rounds', 200, 'Rounds to run.')
_WARMUP = flags.DEFINE_integer(
    'warmup', 5, 'Rounds left out of the medians and of the memory slope.'
)
_LOCAL_STEPS = flags.DEFINE_integer('local_steps', 10, 'Local steps.')
_MAX_CONCURRENT_CLIENTS = flags.DEFINE_integer(
    'max_concurrent_clients',
    2,
    'Client computations the local TFF worker runs at once.',
)
_OUTPUT_PREFIX = flags.DEFINE_string(
    'output_prefix',
    'results/bench_scale',
    'Writes <prefix>_rounds.csv (per round) and <prefix>.csv (summary).',
)
_WORK_DIR = flags.DEFINE_string(
    'work_dir',
    None,
    'Where client states and checkpoints go (default: a temporary directory, '
    'deleted at the end).',
)


def resident_megabytes(pid: int) -> float:
  """VmRSS of a process in MiB (0 if it is gone)."""
  try:
    with open(f'/proc/{pid}/status') as status:
      for line in status:
        if line.startswith('VmRSS:'):
          return int(line.split()[1]) / 1024.0
  except OSError:
    pass
  return 0.0


def worker_pids() -> list[int]:
  """Pids of the TFF worker binaries this process started."""
  me = str(os.getpid())
  pids = []
  for name in os.listdir('/proc'):
    if not name.isdigit():
      continue
    try:
      with open(f'/proc/{name}/stat') as stat:
        parent = stat.read().rsplit(')', 1)[1].split()[1]
      with open(f'/proc/{name}/cmdline', 'rb') as cmdline:
        command = cmdline.read()
    except OSError:
      continue
    if parent == me and b'worker_binary' in command:
      pids.append(int(name))
  return pids


def slope_per_round(values) -> float:
  import numpy as np  # pylint: disable=g-import-not-at-top

  if len(values) < 2:
    return float('nan')
  rounds = np.arange(len(values), dtype=np.float64)
  return float(np.polyfit(rounds, np.asarray(values, np.float64), 1)[0])


def main(argv):
  del argv
  from tff_ditto import runtime  # pylint: disable=g-import-not-at-top

  runtime.set_quiet_logs(0)
  runtime.configure_local_execution(_MAX_CONCURRENT_CLIENTS.value)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top

  from tff_ditto import experiment  # pylint: disable=g-import-not-at-top
  from tff_ditto import models  # pylint: disable=g-import-not-at-top
  from tff_ditto import training  # pylint: disable=g-import-not-at-top
  from tff_ditto import training_config  # pylint: disable=g-import-not-at-top
  from tff_ditto.data import FederatedDataset  # pylint: disable=g-import-not-at-top
  from tff_ditto.data import load_dataset  # pylint: disable=g-import-not-at-top

  femnist = load_dataset('femnist', _DATA_DIR.value)
  writers = femnist.client_ids
  client_ids = [f'client{j:05d}' for j in range(_NUM_CLIENTS.value)]

  def cyclic(split):
    return collections.OrderedDict(
        (client, split[writers[j % len(writers)]])
        for j, client in enumerate(client_ids)
    )

  dataset = FederatedDataset(
      name='femnist_cyclic',
      train=cyclic(femnist.train),
      validation=cyclic(femnist.validation),
      test=cyclic(femnist.test),
      num_classes=femnist.num_classes,
      description=(
          f'{_NUM_CLIENTS.value} clients: FEMNIST writers reused cyclically'
      ),
  )
  config = training_config.ExperimentConfig(
      method='ditto',
      rounds=_ROUNDS.value,
      clients_per_round=_CLIENTS_PER_ROUND.value,
      local_steps=_LOCAL_STEPS.value,
      batch_size=10,
      client_lr=0.1,
      lam=1.0,
      eval_every=10**9,  # Only the final evaluation; this measures training.
      checkpoint_every=1,
  )
  work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix='bench_scale_')
  rows = []

  def log(line):
    if not line.startswith('['):
      print(line, flush=True)

  runner = training.ExperimentRunner(
      config,
      dataset,
      models.get_model_spec('femnist', seed=0).tff_model_fn(),
      os.path.join(work_dir, 'run'),
      overwrite=True,
      log_fn=log,
  )
  workers = worker_pids()
  start = time.monotonic()
  for round_num in range(config.rounds):
    row = runner.run_round(round_num)
    runner.save_checkpoint(round_num)
    rows.append(
        collections.OrderedDict(
            round=round_num,
            seconds=row['seconds'],
            seconds_with_checkpoint=time.monotonic() - start,
            driver_rss_mb=resident_megabytes(os.getpid()),
            worker_rss_mb=sum(resident_megabytes(p) for p in workers),
            train_loss=row['global_train_loss'],
        )
    )
    start = time.monotonic()
    print(
        f'round {round_num + 1}/{config.rounds} | {row["seconds"]:.2f}s | '
        f'driver {rows[-1]["driver_rss_mb"]:.0f} MiB | worker '
        f'{rows[-1]["worker_rss_mb"]:.0f} MiB',
        flush=True,
    )
  per_round = pd.DataFrame(rows)
  commit = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True
  ).stdout.strip()
  os.makedirs(os.path.dirname(_OUTPUT_PREFIX.value) or '.', exist_ok=True)
  per_round.to_csv(f'{_OUTPUT_PREFIX.value}_rounds.csv', index=False)
  measured = per_round[per_round['round'] >= _WARMUP.value]
  total_rss = measured['driver_rss_mb'] + measured['worker_rss_mb']
  summary = pd.DataFrame([
      collections.OrderedDict(
          date=datetime.datetime.now().isoformat(timespec='seconds'),
          commit=commit,
          num_clients=_NUM_CLIENTS.value,
          clients_per_round=_CLIENTS_PER_ROUND.value,
          local_steps=_LOCAL_STEPS.value,
          rounds=config.rounds,
          median_round_seconds=float(measured['seconds'].median()),
          median_checkpoint_seconds=float(
              (
                  measured['seconds_with_checkpoint'] - measured['seconds']
              ).median()
          ),
          peak_driver_rss_mb=float(per_round['driver_rss_mb'].max()),
          peak_worker_rss_mb=float(per_round['worker_rss_mb'].max()),
          driver_rss_slope_mb_per_round=slope_per_round(
              measured['driver_rss_mb']
          ),
          worker_rss_slope_mb_per_round=slope_per_round(
              measured['worker_rss_mb']
          ),
          total_rss_growth_mb_over_run=float(
              slope_per_round(total_rss) * len(measured)
          ),
          load_average=os.getloadavg()[0],
          cores=os.cpu_count(),
      )
  ])
  summary.to_csv(f'{_OUTPUT_PREFIX.value}.csv', index=False)
  print(experiment.markdown_table(summary.T.reset_index()))
  if not _WORK_DIR.value:
    shutil.rmtree(work_dir, ignore_errors=True)
  del np


if __name__ == '__main__':
  app.run(main)
