"""Derived rows: a column's rows read from its one Ditto cell per aggregator.

A Ditto cell with per-device lambda and report lambdas holds, exactly, the
results of its column's Global, Local, Ditto (lambda=1) and Ditto (lambda
auto) cells (`config_equivalence.derived_result`); with
`RunSettings.derive_rows` the grid runs it instead of them
(`plan_derived_rows`) and reads their rows from it (`derived_result_row`).
The server never sees the personal models, so the same holds under any
server aggregator: at each Table 3 column, one Ditto cell per robust
aggregator gives the Table 1 / Table 3 rows 'Robust (X)' (its global model)
and Table 3's 'Ditto + X (lambda=1)' and 'Ditto + X (lambda auto)'.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tff_ditto import config_equivalence
from tff_ditto.reproduction.grid import FIGURE6
from tff_ditto.reproduction.grid import ROBUST_AGGREGATORS
from tff_ditto.reproduction.grid import SOLVER_LAMBDAS
from tff_ditto.reproduction.grid import TABLE3
from tff_ditto.reproduction.grid import Cell
from tff_ditto.reproduction.grid import Column
from tff_ditto.reproduction.grid import attack_columns
from tff_ditto.reproduction.grid import auto_lambda
from tff_ditto.reproduction.grid import make_cell
from tff_ditto.reproduction.result_rows import DERIVED_STATUS
from tff_ditto.reproduction.result_rows import FINISHED_STATUSES
from tff_ditto.reproduction.result_rows import result_row
from tff_ditto.reproduction.run_settings import RunSettings
from tff_ditto.reproduction.run_settings import cell_config
from tff_ditto.reproduction.run_settings import cell_dir
from tff_ditto.reproduction.run_settings import read_record

# The report lambdas of a Table 1 column's derived Ditto cell (mean
# aggregator): Local's 0 and the fixed-lambda row's 1 (under a strong attack
# the candidates are {0.05, 0.1, 0.2}, without them); in Figure 6's column
# also its joint-solver lambdas.
DERIVED_REPORT_LAMBDAS = (0.0, 1.0)

# The report lambdas of a robust aggregator's derived Ditto cell: the
# 'Ditto + X (lambda=1)' row's 1. No 0: Local runs with the mean (no grid
# cell runs local under another aggregator).
ROBUST_DERIVED_REPORT_LAMBDAS = (1.0,)

_ROBUST_AGGREGATOR_NAMES = tuple(name for _, name in ROBUST_AGGREGATORS)


def derived_columns(dataset: str, aggregator: str) -> tuple[Column, ...]:
  """The columns in which `aggregator`'s rows come from one Ditto cell.

  The mean's: every Table 1 column. A robust aggregator's: Table 3's
  columns, where the grid has its Ditto rows; elsewhere only its global
  row (Table 1's 'Robust (X)'), which runs on its own, cheaper than a Ditto
  cell training three or four personal models beside it.

  Args:
    dataset: The dataset.
    aggregator: The server aggregator.

  Returns:
    The (attack, ratio) columns; () for an aggregator not in the grid.
  """
  if aggregator == 'mean':
    return attack_columns(dataset)
  if aggregator in _ROBUST_AGGREGATOR_NAMES:
    return TABLE3.columns(dataset)
  return ()


def derived_source_cell(
    dataset: str, attack: str, ratio: float, aggregator: str = 'mean'
) -> Cell:
  """The one Ditto cell of a column and aggregator that its rows read.

  Per-device lambda (as the 'Ditto (lambda auto)' rows) under `aggregator`.
  With the mean: report lambdas `DERIVED_REPORT_LAMBDAS`, plus
  `SOLVER_LAMBDAS` in Figure 6's column; its global model is the Global
  row, its lambda 0 and 1 models the Local and Ditto (lambda=1) rows, its
  selected models the Ditto (lambda auto) row. With a robust aggregator X:
  report lambdas `ROBUST_DERIVED_REPORT_LAMBDAS`; its global model is the
  'Robust (X)' row (Table 3's 'X'), its lambda 1 models 'Ditto + X
  (lambda=1)', its selected ones 'Ditto + X (lambda auto)'
  (`config_equivalence.derived_result`).

  Args:
    dataset: The dataset.
    attack: The column's attack.
    ratio: Its ratio.
    aggregator: The server aggregator.

  Returns:
    The cell.
  """
  if aggregator == 'mean':
    lambdas = set(DERIVED_REPORT_LAMBDAS)
    if (attack, ratio) in FIGURE6.columns(dataset):
      lambdas |= set(SOLVER_LAMBDAS)
  else:
    lambdas = set(ROBUST_DERIVED_REPORT_LAMBDAS)
  return make_cell(
      dataset,
      'ditto',
      attack,
      ratio,
      aggregator,
      options=dict(
          auto_lambda(attack, ratio), report_lambdas=tuple(sorted(lambdas))
      ),
  )


@dataclasses.dataclass(frozen=True)
class DerivedRow:
  """A cell whose results are read from another cell's run.

  Attributes:
    target: The cell reported.
    source: The cell that runs (`derived_source_cell`).
    summary_prefix: Where the target's summary is in the source's.
    accuracy_column: Where its per-client accuracy is in the source's
      client_metrics.csv.
  """

  target: Cell
  source: Cell
  summary_prefix: str
  accuracy_column: str


def _derivation(cell: Cell, settings: RunSettings) -> Optional[DerivedRow]:
  """How `cell` is read from its column's derived Ditto cell, or None.

  Only cells in a `derived_columns` column of their aggregator whose config
  the source's run (same aggregator) holds exactly
  (`config_equivalence.derived_result`), and whose source can run.
  """
  column = (cell.attack, cell.ratio)
  if column not in derived_columns(cell.dataset, cell.aggregator):
    return None
  source = derived_source_cell(
      cell.dataset, cell.attack, cell.ratio, cell.aggregator
  )
  if source == cell:
    return None
  target_config, _ = cell_config(cell, settings)
  source_config, _ = cell_config(source, settings)
  if target_config is None or source_config is None:
    return None
  where = config_equivalence.derived_result(target_config, source_config)
  if where is None:
    return None
  return DerivedRow(cell, source, where.summary_prefix, where.accuracy_column)


def _has_own_run(cell: Cell, settings: RunSettings) -> bool:
  """Whether the cell's folder holds a run of its own (finished or not)."""
  directory = cell_dir(cell, settings)
  return os.path.isdir(directory) and bool(os.listdir(directory))


def plan_derived_rows(
    cells: Sequence[Cell], settings: RunSettings
) -> tuple[list[Cell], list[DerivedRow]]:
  """The cells to run, and the cells read from their column's Ditto cell.

  A derivable cell (`_derivation`) without a run of its own is replaced by
  its column's `derived_source_cell`, run once, where the first cell it
  serves was; every other cell runs (or is skipped, or resumed) as without
  derived rows, so grids holding separate cells keep reporting them.

  Args:
    cells: The grid.
    settings: How cells run.

  Returns:
    (cells to run, rows to derive after the run).
  """
  to_run, derived, seen = [], [], set()

  def add(cell: Cell) -> None:
    if cell not in seen:
      seen.add(cell)
      to_run.append(cell)

  for cell in cells:
    derivation = _derivation(cell, settings)
    if derivation is None or _has_own_run(cell, settings):
      add(cell)
    else:
      derived.append(derivation)
      add(derivation.source)
  return to_run, derived


def _derived_summary(
    source_summary: Mapping[str, Any], prefix: str
) -> dict[str, Any]:
  """The source's summary with the target's entries named 'benign_<name>'."""
  final = {
      f'benign_{key[len(prefix):]}': value
      for key, value in source_summary.get('final', {}).items()
      if key.startswith(prefix)
  }
  return dict(final=final, rounds=source_summary.get('rounds'))


def derived_result_row(
    row: DerivedRow, source_status: str, settings: RunSettings
) -> dict[str, Any]:
  """The result row of a derived cell, from its source cell's run.

  Args:
    row: The derivation.
    source_status: The source cell's status in this grid.
    settings: How cells ran.

  Returns:
    A `result_row` with status `DERIVED_STATUS` and `source_cell` set, or,
    when the source has no results, the source's status kind with the
    reason (e.g. 'pending: from <source id>: not run yet').
  """
  source_id = row.source.cell_id
  summary = read_record(cell_dir(row.source, settings), 'summary.json')
  if source_status in FINISHED_STATUSES and summary:
    return result_row(
        row.target,
        DERIVED_STATUS,
        _derived_summary(summary, row.summary_prefix),
        source_cell=source_id,
        accuracy_column=row.accuracy_column,
    )
  kind, _, reason = source_status.partition(':')
  return result_row(
      row.target,
      f'{kind}: from {source_id}: {reason.strip() or kind}',
      source_cell=source_id,
      accuracy_column=row.accuracy_column,
  )
