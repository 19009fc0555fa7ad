"""Per-round time of Table 3's Ditto cells: each robust aggregator vs the mean.

One run per server aggregator of the grid's derived Table 3 cell of a column
(`derived_rows.derived_source_cell`: per-device lambda with report lambda 1,
as `scripts/reproduce.py --tables=table3` runs it, with the grid's config and
data settings), plus the same cell with the mean (the like-for-like
baseline: the same personal models) and, with --table1_cell, the column's
Table 1 Ditto cell (report lambdas 0 and 1, more personal models). The runs
take their rounds in turn, one round each, so all see the same machine
load; evaluations and checkpoints excluded. Default column A3 20 %, the
strongest one in which Krum and Multi-Krum can run (under a strong attack:
candidates {0.05, 0.1, 0.2} plus lambda 1, four personal models, as at A1
and A2 80 %). Writes the medians to --output and prints a markdown table.

  nice -n 5 .venv/bin/python scripts/bench_table3_round.py \\
      --data_dir=../shared/data
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import os
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

# Imported before app.run: Keras 2.14 fails to build Sequential models eagerly
# when TensorFlow is first imported inside an absl main.
import tensorflow as tf  # noqa: E402,F401  pylint: disable=unused-import

import floor_loops  # noqa: E402  (scripts/floor_loops.py)
from tff_ditto import computation_cache  # noqa: E402
from tff_ditto import models  # noqa: E402
from tff_ditto import training  # noqa: E402
from tff_ditto.data import load_dataset  # noqa: E402
from tff_ditto.reproduction import derived_rows  # noqa: E402
from tff_ditto.reproduction import grid  # noqa: E402
from tff_ditto.reproduction import run_settings  # noqa: E402

_DATA_DIR = flags.DEFINE_string(
    'data_dir', '../shared/data', 'Parent of the datasets (femnist/, ...).'
)
_DATASET = flags.DEFINE_string('dataset', 'femnist', 'The dataset.')
_COLUMN = flags.DEFINE_string(
    'column', 'a3:0.2', 'The Table 3 column (attack:ratio).'
)
_AGGREGATORS = flags.DEFINE_list(
    'aggregators',
    [name for _, name in grid.ROBUST_AGGREGATORS],
    'Robust aggregators measured beside the mean.',
)
_TABLE1_CELL = flags.DEFINE_bool(
    'table1_cell',
    True,
    "Also measure the column's Table 1 Ditto cell (mean, report lambdas 0 "
    'and 1).',
)
_ROUNDS = flags.DEFINE_integer('rounds', 15, 'Measured rounds per run.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Unmeasured warm-up rounds.')
_OUTPUT = flags.DEFINE_string(
    'output', 'results/bench_table3_round.csv', 'CSV written with the results.'
)


def measured_cells(
    dataset: str, attack: str, ratio: float
) -> list[tuple[str, grid.Cell]]:
  """(name, cell) of every run: the mean baseline, each aggregator's cell.

  Args:
    dataset: The dataset.
    attack: The column's attack.
    ratio: Its ratio.

  Returns:
    'mean' (the robust cells' options with the mean), each of
    `--aggregators`, and with --table1_cell 'mean, Table 1 cell'.
  """
  robust = {
      aggregator: derived_rows.derived_source_cell(
          dataset, attack, ratio, aggregator
      )
      for aggregator in _AGGREGATORS.value
  }
  any_robust = next(iter(robust.values()))
  cells = [('mean', dataclasses.replace(any_robust, aggregator='mean'))]
  cells += list(robust.items())
  if _TABLE1_CELL.value:
    cells.append((
        'mean, Table 1 cell',
        derived_rows.derived_source_cell(dataset, attack, ratio),
    ))
  return cells


def build_runners(cells, settings, output_dir: str) -> list:
  """One `ExperimentRunner` per cell, sharing the dataset and the cache.

  Args:
    cells: (name, cell) pairs of one dataset.
    settings: The grid settings the cells' configs come from.
    output_dir: Where each run writes (a folder per run).

  Returns:
    The runners, in the order of `cells`.

  Raises:
    ValueError: When a cell cannot run (its reason).
  """
  first = cells[0][1]
  dataset = load_dataset(**run_settings.dataset_settings(first, settings))
  model_fn = models.get_model_spec(
      first.dataset, seed=settings.seed
  ).tff_model_fn()
  cache = computation_cache.ComputationCache()
  runners = []
  for index, (_, cell) in enumerate(cells):
    config, reason = run_settings.cell_config(cell, settings)
    if config is None:
      raise ValueError(f'{cell.cell_id}: {reason}')
    runners.append(
        training.ExperimentRunner(
            config,
            dataset,
            model_fn,
            os.path.join(output_dir, str(index)),
            log_fn=None,
            computation_cache=cache,
        )
    )
  return runners


def interleaved_round_seconds(
    runners, rounds: int, warmup: int
) -> list[list[float]]:
  """Each runner's measured round times, the runners taking turns per round.

  Args:
    runners: The runners.
    rounds: Measured rounds.
    warmup: Rounds run first, not measured.

  Returns:
    Per runner, the seconds of its measured rounds.
  """
  times = [[] for _ in runners]
  for round_num in range(warmup + rounds):
    for runner, seconds in zip(runners, times):
      start = time.perf_counter()
      runner.run_round(round_num)
      if round_num >= warmup:
        seconds.append(time.perf_counter() - start)
  return times


def main(argv):
  del argv
  commit = floor_loops.prepare()
  attack, ratio = grid.parse_column(_COLUMN.value)
  cells = measured_cells(_DATASET.value, attack, ratio)
  rows = []
  with tempfile.TemporaryDirectory(prefix='bench_table3_') as output_dir:
    settings = run_settings.RunSettings(
        data_dir=_DATA_DIR.value,
        runs_dir=output_dir,
        rounds=_WARMUP.value + _ROUNDS.value,
        eval_every=10**9,
        config_overrides=dict(checkpoint_every=0),
    )
    runners = build_runners(cells, settings, output_dir)
    times = interleaved_round_seconds(runners, _ROUNDS.value, _WARMUP.value)
    for (name, cell), runner, seconds in zip(cells, runners, times):
      rows.append(
          collections.OrderedDict(
              run=name,
              cell_id=cell.cell_id,
              personal_models=runner.personal_models.count,
              median_round_seconds=float(np.median(seconds)),
              min_round_seconds=float(np.min(seconds)),
              rounds=_ROUNDS.value,
              warmup=_WARMUP.value,
              load_average_1min=os.getloadavg()[0],
              date=datetime.date.today().isoformat(),
              commit=commit,
              cores=os.cpu_count(),
              cpu=floor_loops.cpu_description(),
          )
      )
  baseline = rows[0]['median_round_seconds']
  for row in rows:
    row['ratio_to_mean'] = row['median_round_seconds'] / baseline
  floor_loops.write_results(
      rows,
      _OUTPUT.value,
      (
          'run',
          'personal_models',
          'median_round_seconds',
          'min_round_seconds',
          'ratio_to_mean',
      ),
  )


if __name__ == '__main__':
  app.run(main)
