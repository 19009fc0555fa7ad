"""A paper table of the report: ours beside the paper's number, per cell."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from tff_ditto.reproduction.grid import TableSpec
from tff_ditto.reproduction.grid import column_label
from tff_ditto.reproduction.paper_tables import paper_number
from tff_ditto.reproduction.result_rows import entry_has_accuracy
from tff_ditto.reproduction.result_rows import lookup
from tff_ditto.reproduction.result_rows import source_cell_of

# Marks a result read from its column's one Ditto run (`derive_rows`).
DERIVED_MARKER = ' †'


def _ours(record: Mapping[str, Any], notes: dict[str, int]) -> str:
  """A `table_frame` record's result, or 'n/a [k]' with its status noted."""
  if not pd.isna(record['ours_mean']):
    source = record.get('source_cell')
    marker = DERIVED_MARKER if isinstance(source, str) and source else ''
    return f'{record["ours_mean"]:.3f} ({record["ours_std"]:.3f}){marker}'
  status = record['status']
  if status not in notes:
    notes[status] = len(notes) + 1
  return f'n/a [{notes[status]}]'


def _table_name(key: str) -> str:
  """'table1' -> 'Table 1'."""
  return key.replace('table', 'Table ')


def _paper(spec: TableSpec, record: Mapping[str, Any]) -> str:
  """A `table_frame` record's paper number, or '-' where it prints none.

  Marked with the table it comes from when that is not `spec`.
  """
  mean, std = record['paper_mean'], record['paper_std']
  if pd.isna(mean):
    return '-'
  text = f'{mean:.3f}' + ('' if pd.isna(std) else f' ({std:.2f})')
  if record['paper_source'] != spec.key:
    text += f' ({_table_name(record["paper_source"])})'
  return text


def _row_label(row_records: Sequence[Mapping[str, Any]]) -> str:
  """A table row's label, with its paper note when it shows one."""
  notes = [
      record['paper_note'] for record in row_records if record['paper_note']
  ]
  label = row_records[0]['method']
  return f"{label} [paper's: {notes[0]}]" if notes else label


def table_frame(
    spec: TableSpec, dataset: str, results: pd.DataFrame
) -> pd.DataFrame:
  """One paper table for one dataset as rows of (method, column, ours, paper).

  Returns:
    Columns method, column, attack, ratio, cell_id, status, ours_mean,
    ours_std, paper_mean, paper_std, paper_source (the paper table the
    number comes from), paper_method (its method name there), paper_note
    and source_cell (for a row derived from its column's one Ditto run,
    that cell's id; '' for a cell run on its own): one row per table cell,
    row by row.
  """
  records = []
  for row in spec.rows:
    for attack, ratio in spec.columns(dataset):
      cell = row.cell(dataset, attack, ratio)
      entry = lookup(results, cell)
      has_accuracy = entry_has_accuracy(entry)
      paper = paper_number(spec, dataset, row, attack, ratio)
      records.append(
          dict(
              method=row.label,
              column=column_label(attack, ratio),
              attack=attack,
              ratio=ratio,
              cell_id=cell.cell_id,
              status='not run: not in grid'
              if entry is None
              else entry['status'],
              ours_mean=entry['benign_mean_accuracy'] if has_accuracy else None,
              ours_std=entry['benign_std_accuracy'] if has_accuracy else None,
              paper_mean=None if paper is None else paper.mean,
              paper_std=None if paper is None else paper.std,
              paper_source='' if paper is None else paper.table,
              paper_method='' if paper is None else row.paper_method,
              paper_note='' if paper is None else row.paper_note,
              source_cell=source_cell_of(entry),
          )
      )
  return pd.DataFrame(records)


def table_markdown(spec: TableSpec, frame: pd.DataFrame) -> str:
  """One paper table: 'ours / paper' per cell + notes.

  Args:
    spec: The table.
    frame: Its `table_frame` for one dataset (rows in the spec's order).

  Returns:
    The markdown table, with the reasons of cells not run below it.
  """
  notes: dict[str, int] = {}
  columns = list(dict.fromkeys(frame['column']))
  header = ['method'] + columns
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  records = frame.to_dict('records')
  width = len(columns)
  for start in range(0, len(records), width):
    row_records = records[start : start + width]
    entries = [
        f'{_ours(record, notes)} / {_paper(spec, record)}'
        for record in row_records
    ]
    lines.append(f'| {_row_label(row_records)} | ' + ' | '.join(entries) + ' |')
  if notes:
    lines.append('')
    lines += [f'[{number}] {status}' for status, number in notes.items()]
  return '\n'.join(lines)
