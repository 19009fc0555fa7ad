"""A dataset's round budget from the validation curve of its `local` run.

The reproduction issue's rule: a dataset's budget is the number of rounds at
which `local` (personal models trained alone, lambda = 0) reaches its plateau
or the paper's local level. This script reads the `metrics.csv` of a run made
with `--eval_split=validation` (or `--curve_split=validation`), and writes

* `<output_dir>/<dataset>_local_curve.csv`: round, benign mean / pooled / std
  of per-client validation accuracy at every evaluation;
* `<output_dir>/<dataset>_local_curve.png`: the curve with the paper's local
  test accuracy (Table 1, clean) for reference;
* `<output_dir>/<dataset>_budget.json`: the chosen budget and how it was
  chosen.

Plateau: the curve has flattened when its mean validation accuracy rose by
less than `--tolerance` over its last `--window` evaluations; the plateau
round is then the first evaluated round within `--tolerance` of the best mean.
Paper level: the first round whose mean validation accuracy reaches the
paper's local (test) accuracy. The budget is the earlier of the two; when
neither is reached, there is none yet, and the JSON says how fast the curve
still rises. Only validation data and the paper's printed number are used;
our test split never is.

A Ditto run whose personal models include lambda = 0 (`--report_lambdas=0,...`
or the grid's Table 1 cells) holds the `local` curve too, bit for bit:
`--personal_lambda=0` reads those models' columns (`[validation_]benign_lam_0_*`)
instead of the run's own.

Usage:

  python scripts/budget_curve.py --dataset=femnist \
      --metrics=runs/femnist_local/local/metrics.csv --output_dir=results/budget
  python scripts/budget_curve.py --dataset=fmnist --personal_lambda=0 \
      --metrics=results/paper_budget/runs/fmnist/<clean Ditto cell>/metrics.csv
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Optional

import matplotlib
import pandas as pd

from tff_ditto.reproduction import grid
from tff_ditto.reproduction import paper_tables

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

_COLUMNS = ('mean_accuracy', 'pooled_accuracy', 'std_accuracy')


def validation_curve(
    metrics: pd.DataFrame, personal_lambda: Optional[float] = None
) -> pd.DataFrame:
  """The evaluated rounds of a run's metrics, validation accuracy columns.

  Args:
    metrics: A run's `metrics.csv`, evaluated on validation either as its
      eval split (`benign_*` columns) or as its curve split
      (`validation_benign_*` columns, preferred when present).
    personal_lambda: Read the columns of this lambda's personal models
      (`benign_lam_<lambda>_*`) of a run that trains several; None: the run's
      own.

  Returns:
    Columns round (1-based: rounds trained), mean_accuracy, pooled_accuracy,
    std_accuracy.

  Raises:
    ValueError: If the metrics hold no evaluation.
  """
  models = '' if personal_lambda is None else f'lam_{personal_lambda:g}_'
  prefix = (
      f'validation_benign_{models}'
      if f'validation_benign_{models}mean_accuracy' in metrics
      else f'benign_{models}'
  )
  key = prefix + 'mean_accuracy'
  if key not in metrics:
    raise ValueError(
        f'the metrics have no column {key}'
        + (
            ''
            if personal_lambda is None
            else ' (did the run train personal models of this lambda?)'
        )
    )
  if metrics[key].isna().all():
    raise ValueError('the metrics hold no evaluated round')
  evaluated = metrics[metrics[key].notna()]
  curve = pd.DataFrame({'round': evaluated['round'].astype(int) + 1})
  for column in _COLUMNS:
    curve[column] = evaluated[prefix + column].to_numpy()
  return curve.reset_index(drop=True)


def plateau_round(curve: pd.DataFrame, tolerance: float) -> int:
  """The first round whose mean accuracy is within `tolerance` of the best."""
  best = curve['mean_accuracy'].max()
  reached = curve[curve['mean_accuracy'] >= best - tolerance]
  return int(reached['round'].iloc[0])


def final_rise(curve: pd.DataFrame, window: int) -> float:
  """How much the mean accuracy rose over the last `window` evaluations."""
  values = curve['mean_accuracy'].to_numpy()
  return float(values[-1] - values[max(len(values) - 1 - window, 0)])


def level_round(curve: pd.DataFrame, level: Optional[float]) -> Optional[int]:
  """The first round whose mean accuracy reaches `level` (None: never)."""
  if level is None:
    return None
  reached = curve[curve['mean_accuracy'] >= level]
  return None if reached.empty else int(reached['round'].iloc[0])


def paper_local(dataset: str) -> Optional[float]:
  """The paper's Table 1 clean `local` accuracy of the dataset, if printed."""
  number = paper_tables.paper_numbers().get(
      ('table1', dataset, 'local') + grid.CLEAN
  )
  return None if number is None else number.mean


def write_budget(
    dataset: str,
    metrics_path: str,
    output_dir: str,
    tolerance: float,
    window: int = 5,
    personal_lambda: Optional[float] = None,
) -> dict:
  """Writes the curve CSV, its plot and the budget JSON; returns the JSON."""
  curve = validation_curve(pd.read_csv(metrics_path), personal_lambda)
  os.makedirs(output_dir, exist_ok=True)
  stem = os.path.join(output_dir, f'{dataset}_local')
  curve.to_csv(f'{stem}_curve.csv', index=False, float_format='%.4f')
  paper = paper_local(dataset)
  rise = final_rise(curve, window)
  plateau = plateau_round(curve, tolerance) if rise < tolerance else None
  paper_level = level_round(curve, paper)
  reached = [r for r in (plateau, paper_level) if r is not None]
  budget = dict(
      dataset=dataset,
      metrics=metrics_path,
      personal_lambda=personal_lambda,
      rounds_run=int(curve['round'].iloc[-1]),
      best_mean_validation_accuracy=float(curve['mean_accuracy'].max()),
      final_mean_validation_accuracy=float(curve['mean_accuracy'].iloc[-1]),
      tolerance=tolerance,
      window=window,
      rise_over_window=rise,
      plateau_round=plateau,
      paper_local_test_accuracy=paper,
      paper_level_round=paper_level,
      budget_rounds=min(reached) if reached else None,
      rule=(
          'budget = the earlier of the plateau (the curve rose by less '
          'than tolerance over its last window evaluations; then the first '
          'round within tolerance of its best) and the first round at the '
          "paper's local level; none when neither is reached"
      ),
  )
  with open(os.path.join(output_dir, f'{dataset}_budget.json'), 'w') as f:
    json.dump(budget, f, indent=2)
    f.write('\n')
  figure, axes = plt.subplots(figsize=(6, 3.5))
  axes.plot(
      curve['round'],
      curve['mean_accuracy'],
      marker='o',
      markersize=3,
      label='local: mean validation accuracy',
  )
  axes.fill_between(
      curve['round'],
      curve['mean_accuracy'] - curve['std_accuracy'],
      curve['mean_accuracy'] + curve['std_accuracy'],
      alpha=0.2,
      label='+- std over clients',
  )
  if paper is not None:
    axes.axhline(
        paper,
        color='gray',
        linestyle='--',
        label=f'paper local (test) {paper:.3f}',
    )
  if budget['budget_rounds'] is not None:
    axes.axvline(
        budget['budget_rounds'],
        color='black',
        linestyle=':',
        label=f'budget: round {budget["budget_rounds"]}',
    )
  axes.set_xlabel('round')
  axes.set_ylabel('accuracy')
  axes.set_title(f'{dataset}: local training, validation')
  axes.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(f'{stem}_curve.png', dpi=120)
  plt.close(figure)
  return budget


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True)
  parser.add_argument(
      '--metrics', required=True, help="The local run's metrics.csv."
  )
  parser.add_argument(
      '--personal_lambda',
      type=float,
      default=None,
      help=(
          "Read this lambda's personal models of a Ditto run instead (0: "
          'its local models, trained alongside).'
      ),
  )
  parser.add_argument('--output_dir', default='results/budget')
  parser.add_argument(
      '--tolerance',
      type=float,
      default=0.01,
      help='Plateau: a rise below this over the window.',
  )
  parser.add_argument(
      '--window',
      type=int,
      default=5,
      help='Plateau: over this many last evaluations.',
  )
  arguments = parser.parse_args()
  print(
      json.dumps(
          write_budget(
              arguments.dataset,
              arguments.metrics,
              arguments.output_dir,
              arguments.tolerance,
              arguments.window,
              arguments.personal_lambda,
          ),
          indent=2,
      )
  )


if __name__ == '__main__':
  main()
