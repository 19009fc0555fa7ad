"""A grid's results: one row per cell (status and final benign metrics).

`run_grid` writes them (`result_row`); the report reads them back per cell
(`lookup`).
"""

from __future__ import annotations

import json
from typing import Any, Optional

import pandas as pd

from tff_ditto.reproduction.grid import Cell

# Status of a row read from its column's derived Ditto cell.
DERIVED_STATUS = 'derived'


# Statuses of rows with results.
FINISHED_STATUSES = ('done', 'skipped (finished)', DERIVED_STATUS)


def result_row(
    cell: Cell,
    status: str,
    summary: Optional[dict] = None,
    seconds: float = float('nan'),
    source_cell: str = '',
    accuracy_column: str = 'accuracy',
) -> dict[str, Any]:
  """One row of the grid's results.

  Args:
    cell: The cell.
    status: 'done', 'skipped (finished)', `DERIVED_STATUS` or
      '<not run|pending|failed>: reason'.
    summary: Its summary.json (None: no results).
    seconds: Time it took here.
    source_cell: For a derived row, the id of the cell that ran it ('' for
      a cell run on its own).
    accuracy_column: The column of the running cell's client_metrics.csv
      with the row's per-client accuracy.

  Returns:
    The row.
  """
  row = dict(
      dataset=cell.dataset,
      method=cell.method,
      attack=cell.attack,
      ratio=cell.ratio,
      aggregator=cell.aggregator,
      options=json.dumps(dict(cell.options), sort_keys=True),
      cell_id=cell.cell_id,
      status=status,
      source_cell=source_cell,
      accuracy_column=accuracy_column,
  )
  final = (summary or {}).get('final', {})
  for name in (
      'benign_mean_accuracy',
      'benign_std_accuracy',
      'benign_pooled_accuracy',
      'benign_worst10_accuracy',
  ):
    row[name] = final.get(name, float('nan'))
  row['rounds'] = (summary or {}).get('rounds')
  row['seconds'] = seconds
  return row


def lookup(results: pd.DataFrame, cell: Cell) -> Optional[pd.Series]:
  match = results[
      (results['dataset'] == cell.dataset)
      & (results['cell_id'] == cell.cell_id)
  ]
  return None if match.empty else match.iloc[0]


def entry_has_accuracy(entry: Optional[pd.Series]) -> bool:
  return entry is not None and not pd.isna(entry['benign_mean_accuracy'])


def _final_benign_value(results, cell, name: str) -> float:
  """A final benign metric of a cell's result row (NaN: no results)."""
  entry = lookup(results, cell)
  return float(entry[name]) if entry_has_accuracy(entry) else float('nan')


def mean_accuracy(results, cell) -> float:
  """A cell's benign mean test accuracy (NaN: no results)."""
  return _final_benign_value(results, cell, 'benign_mean_accuracy')


def std_accuracy(results, cell) -> float:
  """A cell's benign std of per-device test accuracy (NaN: no results)."""
  return _final_benign_value(results, cell, 'benign_std_accuracy')


def source_cell_of(entry: Optional[pd.Series]) -> str:
  """The id of the cell that ran a derived result row ('' if its own)."""
  if entry is None:
    return ''
  value = entry.get('source_cell', '')
  return '' if pd.isna(value) else str(value)
