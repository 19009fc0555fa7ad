"""Ditto against the global model: means and a per-device sign test."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Optional

import pandas as pd

from tff_ditto.reproduction.grid import ROBUST_AGGREGATORS
from tff_ditto.reproduction.grid import TABLE1
from tff_ditto.reproduction.grid import TABLE3
from tff_ditto.reproduction.grid import Cell
from tff_ditto.reproduction.grid import Row
from tff_ditto.reproduction.grid import attack_columns
from tff_ditto.reproduction.grid import column_label
from tff_ditto.reproduction.grid import make_cell
from tff_ditto.reproduction.result_rows import lookup
from tff_ditto.reproduction.result_rows import mean_accuracy
from tff_ditto.reproduction.result_rows import source_cell_of
from tff_ditto.reproduction.result_rows import std_accuracy
from tff_ditto.reproduction.training_health import read_non_finite_training

# A per-device sign test below this p-value counts as significant.
SIGNIFICANCE_LEVEL = 0.05


def sign_test_p_value(wins: int, losses: int) -> float:
  """Two-sided exact sign test of `wins` vs `losses` (ties dropped).

  Args:
    wins: Paired comparisons the first method won.
    losses: Paired comparisons it lost.

  Returns:
    The probability, under a fair coin, of a split at least this uneven
    (1.0 when there is nothing to compare).
  """
  total = wins + losses
  if total == 0:
    return 1.0
  tail = sum(math.comb(total, i) for i in range(min(wins, losses) + 1))
  return min(1.0, 2 * tail / 2**total)


def paired_device_comparison(
    first_dir: str,
    second_dir: str,
    first_column: str = 'accuracy',
    second_column: str = 'accuracy',
) -> Optional[dict[str, Any]]:
  """Benign devices' final test accuracy of two cells, device by device.

  Args:
    first_dir: A finished cell's directory (holds `client_metrics.csv`).
    second_dir: The other cell's directory.
    first_column: The first cell's accuracy column there (a derived row's
      is another column of its source's table, e.g. 'lam_0_accuracy').
    second_column: The second cell's.

  Returns:
    {'wins', 'losses', 'ties', 'p_value'} of the first cell against the
    second over the benign devices both evaluated (sign test), or None when
    either cell has no per-device metrics.
  """
  frames = []
  for directory, column in (
      (first_dir, first_column),
      (second_dir, second_column),
  ):
    path = os.path.join(directory, 'client_metrics.csv')
    if not os.path.exists(path):
      return None
    frame = pd.read_csv(path)
    if column not in frame:
      return None
    frames.append(
        frame[~frame['malicious'].astype(bool)].set_index('client_id')[column]
    )
  first, second = frames[0].align(frames[1], join='inner')
  wins, losses = int((first > second).sum()), int((first < second).sum())
  return dict(
      wins=wins,
      losses=losses,
      ties=len(first) - wins - losses,
      p_value=sign_test_p_value(wins, losses),
  )


def _device_accuracies(
    results: pd.DataFrame, runs_dir: str, cell: Cell
) -> tuple[str, str]:
  """Where a cell's per-device accuracies are: (cell folder, column).

  A derived row's are a column of its source cell's client_metrics.csv.
  """
  entry = lookup(results, cell)
  source = source_cell_of(entry)
  if not source:
    return os.path.join(runs_dir, cell.dataset, cell.cell_id), 'accuracy'
  return (
      os.path.join(runs_dir, cell.dataset, source),
      str(entry['accuracy_column']),
  )


TABLE1_DITTO_ROWS = tuple(row for row in TABLE1.rows if row.method == 'ditto')


_COMPARISON_HEADER = (
    (
        '| column | Ditto row | Ditto | {baseline} | difference | benign'
        ' devices Ditto better / worse / tied (sign test p) | verdict |'
    ),
    '|---|---|---|---|---|---|---|',
)


@dataclasses.dataclass(frozen=True)
class CellComparison:
  """Two finished cells side by side, the first against the second.

  Attributes:
    first_mean: The first cell's benign mean test accuracy.
    second_mean: The second cell's.
    first_std: The first cell's benign std of per-device test accuracy.
    second_std: The second cell's.
    paired: `paired_device_comparison` of the first against the second, or
      None where either has no per-device metrics (or none were given).
  """

  first_mean: float
  second_mean: float
  first_std: float
  second_std: float
  paired: Optional[dict[str, Any]]


def compare_cells(
    results: pd.DataFrame,
    runs_dir: Optional[str],
    first: Cell,
    second: Cell,
) -> Optional[CellComparison]:
  """Compares two cells of a grid by their means, stds and devices.

  Args:
    results: The grid's result rows.
    runs_dir: Where the cells ran (None: means and stds only).
    first: A cell of the grid (its row may be derived from another cell).
    second: Another.

  Returns:
    The comparison, or None unless both cells have results.
  """
  first_mean, second_mean = (
      mean_accuracy(results, cell) for cell in (first, second)
  )
  if math.isnan(first_mean) or math.isnan(second_mean):
    return None
  paired = None
  if runs_dir is not None:
    (first_dir, first_column), (second_dir, second_column) = (
        _device_accuracies(results, runs_dir, cell) for cell in (first, second)
    )
    paired = paired_device_comparison(
        first_dir, second_dir, first_column, second_column
    )
  return CellComparison(
      first_mean=first_mean,
      second_mean=second_mean,
      first_std=std_accuracy(results, first),
      second_std=std_accuracy(results, second),
      paired=paired,
  )


def devices_text(paired: Optional[dict[str, Any]]) -> str:
  """'wins / losses / ties (p = ...)' of a paired comparison ('' if None)."""
  if paired is None:
    return ''
  return (
      f'{paired["wins"]} / {paired["losses"]} / '
      f'{paired["ties"]} (p = {paired["p_value"]:.2g})'
  )


def _comparison_line(
    results: pd.DataFrame,
    runs_dir: Optional[str],
    column: str,
    label: str,
    ditto_cell: Cell,
    global_cell: Cell,
) -> str:
  """One row of a Ditto-vs-global table: means, per-device sign test."""
  comparison = compare_cells(results, runs_dir, ditto_cell, global_cell)
  if comparison is None:
    verdict, difference, devices = 'not both run', '', ''
  else:
    difference = (
        f'{100 * (comparison.first_mean - comparison.second_mean):+.1f} pts'
    )
    devices = devices_text(comparison.paired)
    significant = (
        comparison.paired is None
        or comparison.paired['p_value'] < SIGNIFICANCE_LEVEL
    )
    if comparison.first_mean <= comparison.second_mean:
      verdict = '**Ditto <= global**'
    elif significant:
      verdict = 'Ditto > global'
    else:
      verdict = 'Ditto > global, not significant'
  if runs_dir is not None and comparison is not None:
    verdict += _stuck_training_note(results, runs_dir, ditto_cell, global_cell)
  shown = [
      '-' if math.isnan(value) else f'{value:.3f}'
      for value in (
          mean_accuracy(results, ditto_cell),
          mean_accuracy(results, global_cell),
      )
  ]
  return (
      f'| {column} | {label} | {shown[0]} | {shown[1]} | {difference} | '
      f'{devices} | {verdict} |'
  )


def _stuck_training_note(
    results: pd.DataFrame, runs_dir: str, ditto_cell: Cell, global_cell: Cell
) -> str:
  """'; <whose> training stuck from round N' where a run stuck to its end.

  Whose: Ditto's or global's, or the run's when both rows come from one run
  (a derived row names its source cell's run).
  """
  ditto_folder, global_folder = (
      _device_accuracies(results, runs_dir, cell)[0]
      for cell in (ditto_cell, global_cell)
  )
  if ditto_folder == global_folder:
    runs = (("the run's", ditto_folder),)
  else:
    runs = (("Ditto's", ditto_folder), ("global's", global_folder))
  notes = []
  for whose, folder in runs:
    health = read_non_finite_training(folder)
    if health is not None and health.stuck_to_end:
      notes.append(
          f'; {whose} training non-finite, stuck from round'
          f' {health.first_round}'
      )
  return ''.join(notes)


def ditto_vs_global(
    dataset: str, results: pd.DataFrame, runs_dir: Optional[str] = None
) -> list[str]:
  """Per Table 1 column: does each Ditto row beat global, and how clearly?

  Args:
    dataset: The dataset.
    results: The grid's result rows.
    runs_dir: Where the cells ran; with it each comparison also counts the
      benign devices on which Ditto's personal model beats the global model
      (and the sign test's p-value), without it only the means compare.

  Returns:
    Markdown table lines.
  """
  pairs = []
  for attack, ratio in attack_columns(dataset):
    global_cell = make_cell(dataset, 'global', attack, ratio)
    for row in TABLE1_DITTO_ROWS:
      ditto_cell = row.cell(dataset, attack, ratio)
      if row.options_fn is not None and math.isnan(
          mean_accuracy(results, ditto_cell)
      ):
        continue  # The optional lambda-selection row is listed once run.
      pairs.append(
          (column_label(attack, ratio), row.label, ditto_cell, global_cell)
      )
  return [line.format(baseline='global') for line in _COMPARISON_HEADER] + [
      _comparison_line(results, runs_dir, *pair) for pair in pairs
  ]


def _table3_ditto_rows(aggregator: str) -> tuple[Row, ...]:
  """Table 3's Ditto rows under `aggregator` (lambda = 1, per device)."""
  return tuple(
      row
      for row in TABLE3.rows
      if row.method == 'ditto' and row.aggregator == aggregator
  )


def ditto_vs_robust_global(
    dataset: str, results: pd.DataFrame, runs_dir: Optional[str] = None
) -> list[str]:
  """Table 3 pairs: Ditto + aggregator against the global model under it.

  Per aggregator and column, 'Ditto + X (lambda=1)' when it or the global
  cell ran, and 'Ditto + X (lambda auto)' when it ran (as
  `ditto_vs_global` lists Table 1's per-device row).

  Args:
    dataset: The dataset.
    results: The grid's result rows.
    runs_dir: As for `ditto_vs_global`.

  Returns:
    Markdown table lines, or [] when no Table 3 cell ran.
  """
  pairs = []
  for _, aggregator in ROBUST_AGGREGATORS:
    for attack, ratio in TABLE3.columns(dataset):
      global_cell = make_cell(dataset, 'global', attack, ratio, aggregator)
      for row in _table3_ditto_rows(aggregator):
        ditto_cell = row.cell(dataset, attack, ratio)
        cells = (ditto_cell,) if row.options_fn else (ditto_cell, global_cell)
        if all(math.isnan(mean_accuracy(results, cell)) for cell in cells):
          continue
        pairs.append(
            (column_label(attack, ratio), row.label, ditto_cell, global_cell)
        )
  if not pairs:
    return []
  return [
      line.format(baseline='global (same aggregator)')
      for line in _COMPARISON_HEADER
  ] + [_comparison_line(results, runs_dir, *pair) for pair in pairs]
