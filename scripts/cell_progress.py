"""Where each cell of a reproduction runs folder stands: rounds, pace, time left.

Reads every `<runs_dir>/<dataset>/<cell id>/` that holds a `cell.json` (as
`scripts/reproduce.py` writes them): the rounds asked for (cell.json), the
rounds done (metrics.csv), whether it finished (summary.json with those
rounds), its recent pace (median seconds a round over the last
`--recent_rounds` rounds, evaluation rounds left out) and the time it needs
at that pace, evaluations included by their measured share. A cell whose
metrics.csv changed within `--active_minutes` is reported as running. No
TensorFlow; safe to run beside the cells.

  python scripts/cell_progress.py --runs_dirs=results/paper_budget/runs
  python scripts/cell_progress.py \\
      --runs_dirs=/work/runs-a250/results/paper_budget/runs,/work/runs-fmnist/results/paper_budget/runs \\
      --output=/tmp/progress.csv
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence

from absl import app
from absl import flags
import pandas as pd

_RUNS_DIRS = flags.DEFINE_list(
    'runs_dirs',
    ['results/paper_budget/runs'],
    'Runs folders (`reproduce.py --runs_dir`) to read.',
)
_RECENT_ROUNDS = flags.DEFINE_integer(
    'recent_rounds', 50, 'Rounds over which the pace is measured.'
)
_ACTIVE_MINUTES = flags.DEFINE_float(
    'active_minutes',
    10.0,
    'A cell whose metrics changed within this many minutes is running.',
)
_SHOW_FINISHED = flags.DEFINE_bool(
    'show_finished', False, 'List finished cells too.'
)
_OUTPUT = flags.DEFINE_string(
    'output', None, 'Also write the table as CSV to this path.'
)

COLUMNS = (
    'dataset',
    'cell_id',
    'state',
    'rounds_done',
    'rounds',
    'seconds_per_round',
    'hours_left',
)


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _pace(metrics: pd.DataFrame, recent_rounds: int) -> float:
  """Median seconds of a round over the last `recent_rounds` rounds."""
  seconds = metrics['seconds'].dropna().tail(recent_rounds)
  return float(seconds.median()) if len(seconds) else math.nan


def cell_progress(
    cell_dir: str, recent_rounds: int, active_minutes: float, now: float
) -> dict:
  """One cell's row of `COLUMNS`.

  Args:
    cell_dir: The cell's folder (holding cell.json).
    recent_rounds: Rounds over which the pace is measured.
    active_minutes: A metrics.csv changed within this is 'running'.
    now: The current time (seconds since the epoch).

  Returns:
    The row; state is 'finished', 'running', 'stopped' or 'not started'.

  Raises:
    ValueError: If cell.json names no rounds.
  """
  record = _read_json(os.path.join(cell_dir, 'cell.json'))
  rounds = record.get('config', {}).get('rounds')
  if not rounds:
    raise ValueError(f'{cell_dir}/cell.json: no config.rounds')
  row = dict(
      dataset=os.path.basename(os.path.dirname(cell_dir)),
      cell_id=os.path.basename(cell_dir),
      rounds=int(rounds),
      rounds_done=0,
      seconds_per_round=math.nan,
      hours_left=math.nan,
  )
  summary = _read_json(os.path.join(cell_dir, 'summary.json'))
  metrics_path = os.path.join(cell_dir, 'metrics.csv')
  if summary.get('rounds') == rounds:
    return dict(row, state='finished', rounds_done=int(rounds), hours_left=0.0)
  if not os.path.exists(metrics_path):
    return dict(row, state='not started')
  metrics = pd.read_csv(metrics_path)
  # metrics.csv numbers rounds from 0.
  done = int(metrics['round'].max()) + 1 if len(metrics) else 0
  pace = _pace(metrics, recent_rounds)
  active = now - os.path.getmtime(metrics_path) < 60 * active_minutes
  return dict(
      row,
      state='running' if active else 'stopped',
      rounds_done=done,
      seconds_per_round=pace,
      hours_left=(rounds - done) * pace / 3600,
  )


def runs_progress(
    runs_dirs: Sequence[str],
    recent_rounds: int = 50,
    active_minutes: float = 10.0,
    show_finished: bool = False,
    now: float | None = None,
) -> pd.DataFrame:
  """Every cell's row of `COLUMNS` in `runs_dirs`, unfinished cells first."""
  now = time.time() if now is None else now
  rows = []
  for runs_dir in runs_dirs:
    if not os.path.isdir(runs_dir):
      raise FileNotFoundError(f'runs folder not found: {runs_dir}')
    for dataset in sorted(os.listdir(runs_dir)):
      dataset_dir = os.path.join(runs_dir, dataset)
      if not os.path.isdir(dataset_dir):
        continue
      for cell_id in sorted(os.listdir(dataset_dir)):
        cell_dir = os.path.join(dataset_dir, cell_id)
        if os.path.exists(os.path.join(cell_dir, 'cell.json')):
          rows.append(
              cell_progress(cell_dir, recent_rounds, active_minutes, now)
          )
  frame = pd.DataFrame(rows, columns=list(COLUMNS))
  if not show_finished:
    frame = frame[frame['state'] != 'finished']
  order = {'running': 0, 'stopped': 1, 'not started': 2, 'finished': 3}
  return frame.sort_values(
      by=['state', 'dataset', 'cell_id'],
      key=lambda column: (
          column.map(order) if column.name == 'state' else column
      ),
  ).reset_index(drop=True)


def markdown(frame: pd.DataFrame) -> str:
  """The table as markdown, times rounded."""
  lines = [
      '| ' + ' | '.join(COLUMNS) + ' |',
      '|' + '---|' * len(COLUMNS),
  ]
  for row in frame.itertuples(index=False):
    cells = []
    for name, value in zip(COLUMNS, row):
      if isinstance(value, float):
        value = '' if math.isnan(value) else f'{value:.2f}'
      cells.append(str(value))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    frame = runs_progress(
        _RUNS_DIRS.value,
        _RECENT_ROUNDS.value,
        _ACTIVE_MINUTES.value,
        _SHOW_FINISHED.value,
    )
  except (FileNotFoundError, ValueError) as error:
    sys.exit(f'error: {error}')
  print(markdown(frame))
  if _OUTPUT.value:
    frame.to_csv(_OUTPUT.value, index=False)


if __name__ == '__main__':
  app.run(main)
