"""Runs a grid: every cell in this process, resumable.

`run_grid` starts TF/TFF once, loads each dataset once, lets cells whose
builders receive the same inputs share the built TFF computations, and runs
one `training.ExperimentRunner` per cell in `<runs_dir>/<dataset>/<cell
id>/`. It skips cells whose summary.json already has the requested rounds,
continues half-finished cells from their checkpoints, and records cells that
cannot run (dataset absent, method or option not implemented, invalid
setting such as Krum with too many attackers) with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import pandas as pd

from tff_ditto import computation_cache
from tff_ditto import models
from tff_ditto import runtime
from tff_ditto import training
from tff_ditto.data import load_dataset
from tff_ditto.reproduction.derived_rows import derived_result_row
from tff_ditto.reproduction.derived_rows import plan_derived_rows
from tff_ditto.reproduction.grid import Cell
from tff_ditto.reproduction.result_rows import result_row
from tff_ditto.reproduction.run_settings import RunSettings
from tff_ditto.reproduction.run_settings import cell_config
from tff_ditto.reproduction.run_settings import cell_dir
from tff_ditto.reproduction.run_settings import dataset_settings
from tff_ditto.reproduction.run_settings import read_record
from tff_ditto.reproduction.run_settings import recorded_config_values
from tff_ditto.reproduction.run_settings import recorded_settings_mismatch


def _finished_summary(directory: str, rounds: int) -> Optional[dict]:
  summary = read_record(directory, 'summary.json')
  return summary if summary and summary.get('rounds') == rounds else None


class _GridResources:
  """What a grid's cells share: TFF runtime, datasets, model_fns and cache.

  One dataset and one model_fn per dataset name (the cache keys models by
  identity), and one `computation_cache.ComputationCache` unless
  `settings.reuse_computations` is False.
  """

  def __init__(self, settings: RunSettings):
    self.settings = settings
    self.cache = None
    self._started = False
    self._datasets: dict[str, Any] = {}
    self._model_fns: dict[str, Callable[[], Any]] = {}

  def start(self) -> None:
    """Starts the TFF runtime (once) and creates the cache."""
    if self._started:
      return
    runtime.set_quiet_logs(0)
    runtime.configure_local_execution(2)
    if self.settings.reuse_computations:
      self.cache = computation_cache.ComputationCache()
    self._started = True

  def runner(self, cell: Cell, config, directory: str, resume: bool):
    """The cell's `training.ExperimentRunner` (loads its dataset once).

    Args:
      cell: The cell.
      config: Its `ExperimentConfig` (`cell_config`).
      directory: Its output directory.
      resume: Continue from its checkpoints.

    Returns:
      The runner, built with the grid's cache and the dataset's model_fn.
    """
    settings = self.settings
    if cell.dataset not in self._datasets:
      self._datasets[cell.dataset] = load_dataset(
          **dataset_settings(cell, settings)
      )
      self._model_fns[cell.dataset] = models.get_model_spec(
          cell.dataset, seed=settings.seed
      ).tff_model_fn()
    return training.ExperimentRunner(
        config,
        self._datasets[cell.dataset],
        self._model_fns[cell.dataset],
        directory,
        resume=resume,
        log_fn=None,
        computation_cache=self.cache,
    )


def run_grid(
    cells: Sequence[Cell],
    settings: RunSettings,
    unavailable_datasets: Optional[Mapping[str, str]] = None,
    log_fn: Callable[[str], None] = print,
    run_missing: bool = True,
) -> pd.DataFrame:
  """Runs (or skips, or resumes) every cell; returns one result row per cell.

  Writes `<runs_dir>/cells.csv` after every cell. A cell whose run raises is
  recorded as 'failed: ...' and the grid goes on.

  Args:
    cells: The grid.
    settings: How cells run.
    unavailable_datasets: {dataset: reason}; their cells are 'not run'.
    log_fn: Progress lines.
    run_missing: False: only collect finished cells (the others are
      'pending: not run yet'), e.g. to report on a grid still running.

  Returns:
    DataFrame of results: status is 'done', 'skipped (finished)',
    'not run: ...' or 'failed: ...'; with `settings.derive_rows` also the
    derived cells (`plan_derived_rows`), after the others: status
    `DERIVED_STATUS` (or their source's status kind and reason) and
    `source_cell` naming the cell that ran them.
  """
  unavailable_datasets = dict(unavailable_datasets or {})
  os.makedirs(settings.runs_dir, exist_ok=True)
  derived = []
  if settings.derive_rows:
    cells, derived = plan_derived_rows(cells, settings)
  rows, resources = [], _GridResources(settings)
  csv_path = os.path.join(settings.runs_dir, 'cells.csv')
  for index, cell in enumerate(cells):
    prefix = f'[{index + 1}/{len(cells)}] {cell.dataset} {cell.cell_id}'
    if cell.dataset in unavailable_datasets:
      rows.append(
          result_row(cell, f'not run: {unavailable_datasets[cell.dataset]}')
      )
      continue
    config, reason = cell_config(cell, settings)
    if config is None:
      log_fn(f'{prefix}: {reason}')
      rows.append(result_row(cell, reason))
      pd.DataFrame(rows).to_csv(csv_path, index=False)
      continue
    directory = cell_dir(cell, settings)
    mismatch = recorded_settings_mismatch(directory, cell, config, settings)
    if mismatch is not None:
      log_fn(f'{prefix}: {mismatch}')
      rows.append(result_row(cell, mismatch))
      continue
    summary = _finished_summary(directory, config.rounds)
    if summary is not None:
      log_fn(f'{prefix}: finished before; skipped')
      rows.append(
          result_row(
              cell,
              'skipped (finished)',
              summary,
              summary.get('seconds', float('nan')),
          )
      )
      continue
    if not run_missing:
      rows.append(result_row(cell, 'pending: not run yet'))
      continue
    resources.start()
    start = time.monotonic()
    try:
      resume = os.path.isdir(directory) and bool(os.listdir(directory))
      log_fn(
          f'{prefix}: {"resuming" if resume else "running"} '
          f'{config.rounds} rounds'
      )
      runner = resources.runner(cell, config, directory, resume)
      with open(os.path.join(directory, 'cell.json'), 'w') as f:
        json.dump(
            dict(
                dataclasses.asdict(cell),
                dataset_settings=dataset_settings(cell, settings),
                config=recorded_config_values(config),
            ),
            f,
            indent=2,
        )
      summary = runner.run()
      del runner
      if not settings.keep_checkpoints:
        for name in ('checkpoints', 'client_states'):
          shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
      rows.append(result_row(cell, 'done', summary, time.monotonic() - start))
      final = summary['final']
      log_fn(
          f'{prefix}: benign mean {final["benign_mean_accuracy"]:.4f} '
          f'(std {final["benign_std_accuracy"]:.4f}), '
          f'{time.monotonic() - start:.0f} s'
      )
    except Exception as error:  # pylint: disable=broad-except
      message = f'{type(error).__name__}: {error}'.splitlines()[0][:200]
      log_fn(f'{prefix}: failed: {message}')
      with open(os.path.join(settings.runs_dir, 'failures.log'), 'a') as f:
        f.write(f'{prefix}\n{traceback.format_exc()}\n')
      rows.append(
          result_row(cell, f'failed: {message}', None, time.monotonic() - start)
      )
    pd.DataFrame(rows).to_csv(csv_path, index=False)
  if resources.cache is not None:
    log_fn(f'computation cache: {resources.cache.describe()}')
  statuses = {(row['dataset'], row['cell_id']): row['status'] for row in rows}
  rows += [
      derived_result_row(
          row,
          statuses.get(
              (row.source.dataset, row.source.cell_id),
              'pending: not in the grid',
          ),
          settings,
      )
      for row in derived
  ]
  frame = pd.DataFrame(rows)
  frame.to_csv(csv_path, index=False)
  return frame
