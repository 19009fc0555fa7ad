"""Cells whose training stopped being finite, read from their metrics.csv.

A client update holding a NaN or Inf is zeroed and does not count
(`tff_ditto.process_templates.zero_if_non_finite`), so one client whose
training blew up cannot poison the average. A global model that is itself
broken is another matter: its weights stay finite but so large that every
client's training loss is NaN, every update is zeroed, and the model never
moves again. The personal models of lambda > 0 are pulled to it and break
too; lambda = 0 (`local`) trains on. Such a cell's final accuracies are
those of broken models, which the report says rather than leaving a 0.01 in
a table to explain itself.

Measured (FEMNIST, A2 random updates at 20 %, learning rate 0.1, round
numbers from 1): the global training loss was 3.6 in round 1,434 (5 of its
10 clients malicious), 9.7e5 in round 1,435 and NaN from round 1,436 on,
with every update of every round zeroed from there.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import pandas as pd

from tff_ditto import run_outputs
from tff_ditto import sampling
from tff_ditto.reproduction.result_rows import DERIVED_STATUS
from tff_ditto.reproduction.result_rows import FINISHED_STATUSES
from tff_ditto.reproduction.run_settings import read_record


@dataclasses.dataclass(frozen=True)
class NonFiniteTraining:
  """Where a run's global training loss stopped being finite.

  Rounds are counted from 1, as the progress line counts them.

  Attributes:
    first_round: The first round whose global training loss is NaN or Inf.
    last_finite_loss: The global training loss of the round before it.
    non_finite_rounds: Rounds with a non-finite global training loss.
    stuck_rounds: Rounds in which every sampled client's update was
      non-finite (zeroed), so that the global model did not move.
    stuck_to_end: Whether the last round recorded was such a round.
    rounds: Rounds the run recorded.
  """

  first_round: int
  last_finite_loss: float
  non_finite_rounds: int
  stuck_rounds: int
  stuck_to_end: bool
  rounds: int


def non_finite_training(
    metrics: pd.DataFrame, clients_per_round: int
) -> Optional[NonFiniteTraining]:
  """Whether, and from which round, a run's global training went non-finite.

  Args:
    metrics: A run's metrics.csv: one row per round with `round` (from 0),
      `global_train_loss` and `non_finite_updates`.
    clients_per_round: The clients sampled per round.

  Returns:
    None when every round's global training loss is finite.
  """
  losses = metrics['global_train_loss'].to_numpy(np.float64)
  non_finite = ~np.isfinite(losses)
  if not non_finite.any():
    return None
  first = int(np.argmax(non_finite))
  zeroed = metrics['non_finite_updates'].to_numpy(np.float64)
  stuck = zeroed >= clients_per_round
  return NonFiniteTraining(
      first_round=int(metrics['round'].iloc[first]) + 1,
      last_finite_loss=float(losses[first - 1]) if first > 0 else np.nan,
      non_finite_rounds=int(non_finite.sum()),
      stuck_rounds=int(stuck.sum()),
      stuck_to_end=bool(stuck[-1]),
      rounds=len(losses),
  )


def read_non_finite_training(cell_dir: str) -> Optional[NonFiniteTraining]:
  """`non_finite_training` of a finished cell's folder.

  Args:
    cell_dir: The cell's folder: its metrics.csv, and its summary.json
      (the config's clients_per_round, capped at the run's clients as the
      sampling caps it).

  Returns:
    None when either file is absent or the training stayed finite.
  """
  metrics_path = os.path.join(cell_dir, run_outputs.METRICS_FILE)
  summary = read_record(cell_dir, 'summary.json')
  if 'config' not in summary or not os.path.exists(metrics_path):
    return None
  clients_per_round = int(summary['config']['clients_per_round'])
  if summary.get('num_clients'):
    clients_per_round = sampling.clients_in_round(
        clients_per_round, int(summary['num_clients'])
    )
  return non_finite_training(pd.read_csv(metrics_path), clients_per_round)


def non_finite_training_lines(
    dataset: str, results: pd.DataFrame, runs_dir: Optional[str]
) -> list[str]:
  """The report's table of a dataset's cells whose training went non-finite.

  Args:
    dataset: The dataset.
    results: The grid's result rows; the finished cells of `dataset` that
      ran are read (a derived row shares its source cell's training).
    runs_dir: Where the cells ran (None: nothing to read).

  Returns:
    Markdown lines (a heading, a sentence, a table), or [] when every
    cell's training stayed finite.
  """
  if runs_dir is None:
    return []
  ran = results[
      (results['dataset'] == dataset)
      & results['status'].isin(FINISHED_STATUSES)
      & (results['status'] != DERIVED_STATUS)
  ]
  found = []
  for cell_id in ran['cell_id']:
    health = read_non_finite_training(os.path.join(runs_dir, dataset, cell_id))
    if health is not None:
      found.append((cell_id, health))
  if not found:
    return []
  lines = [
      '### Training that stopped being finite',
      '',
      (
          "In these cells the clients' training of the global model stopped"
          ' being finite. An update holding a NaN or Inf is zeroed, so in a'
          ' round where every update is, the global model does not move; a'
          ' global model that stays broken breaks the personal models of'
          ' lambda > 0 too (they are pulled to it), while `local` (lambda ='
          ' 0) trains on. Final global and Ditto accuracies of a cell stuck'
          ' to its end are those of broken models.'
      ),
      '',
      (
          '| cell | first non-finite round | loss the round before |'
          ' rounds non-finite | rounds with every update zeroed | stuck to'
          ' the end | rounds |'
      ),
      '|---|---|---|---|---|---|---|',
  ]
  for cell_id, health in found:
    lines.append(
        f'| {cell_id} | {health.first_round} |'
        f' {health.last_finite_loss:.3g} | {health.non_finite_rounds} |'
        f' {health.stuck_rounds} | {"yes" if health.stuck_to_end else "no"} |'
        f' {health.rounds} |'
    )
  return lines
