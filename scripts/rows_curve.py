"""Table 1's rows against rounds, from one multi-lambda Ditto run.

A Ditto run with `--lam=auto --report_lambdas=0,1` (the reproduction grid's
one cell per column) evaluates, at every evaluation round, the global model
(`global_model_benign_*`), the lambda = 0 personal models (`local`,
`benign_lam_0_*`), the lambda = 1 ones (`benign_lam_1_*`) and the per-device
choice (`benign_*`); with `--curve_split=validation` the same on validation
(`validation_*`). This script writes

* `<output_dir>/<name>_rows_curve.csv`: split, round, and the benign mean
  per-device accuracy of each row at every evaluation;
* `<output_dir>/<name>_rows_curve.png`: Ditto (per device), Ditto lambda = 1
  and local minus global against rounds, test split, the paper's gap (Table
  1) as a dashed line where given.

Usage:

  python scripts/rows_curve.py --metrics=runs/femnist_a3_20/ditto/metrics.csv \
      --name=femnist_a3_20 --output_dir=results/paper_budget \
      --paper_gap=0.299
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

import matplotlib
import pandas as pd

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

# Row -> the metrics.csv key of its benign mean accuracy (without split).
ROW_KEYS = {
    'global': 'global_model_benign_mean_accuracy',
    'local': 'benign_lam_0_mean_accuracy',
    'ditto_lambda_1': 'benign_lam_1_mean_accuracy',
    'ditto_per_device': 'benign_mean_accuracy',
}
SPLITS = {'test': '', 'validation': 'validation_'}


def rows_curve(metrics: pd.DataFrame) -> pd.DataFrame:
  """The rows' benign mean accuracy at every evaluated round, per split.

  Args:
    metrics: A multi-lambda Ditto run's `metrics.csv` (test as its eval
      split, optionally validation as its curve split).

  Returns:
    Columns split, round (rounds trained), then one per `ROW_KEYS` row.

  Raises:
    ValueError: If a row's key is missing (not such a run).
  """
  missing = [key for key in ROW_KEYS.values() if key not in metrics]
  if missing:
    raise ValueError(
        f'not a Ditto run with report lambdas 0 and 1: no {missing}'
    )
  frames = []
  for split, prefix in SPLITS.items():
    if prefix + ROW_KEYS['global'] not in metrics:
      continue
    evaluated = metrics[metrics[prefix + ROW_KEYS['global']].notna()]
    frame = pd.DataFrame(
        {'split': split, 'round': evaluated['round'].astype(int) + 1}
    )
    for row, key in ROW_KEYS.items():
      frame[row] = evaluated[prefix + key].to_numpy()
    frames.append(frame)
  return pd.concat(frames, ignore_index=True)


def write_rows_curve(
    metrics_path: str,
    name: str,
    output_dir: str,
    paper_gap: Optional[float] = None,
) -> pd.DataFrame:
  """Writes `<name>_rows_curve.csv` and `.png`; returns the curve."""
  curve = rows_curve(pd.read_csv(metrics_path))
  os.makedirs(output_dir, exist_ok=True)
  stem = os.path.join(output_dir, f'{name}_rows_curve')
  curve.to_csv(f'{stem}.csv', index=False, float_format='%.4f')
  test = curve[curve['split'] == 'test']
  figure, axes = plt.subplots(figsize=(6, 3.5))
  for row, label in (
      ('ditto_per_device', 'Ditto (per-device lambda)'),
      ('ditto_lambda_1', 'Ditto (lambda = 1)'),
      ('local', 'local'),
  ):
    axes.plot(
        test['round'],
        test[row] - test['global'],
        marker='o',
        markersize=3,
        label=f'{label} - global',
    )
  if paper_gap is not None:
    axes.axhline(
        paper_gap,
        color='gray',
        linestyle='--',
        label=f'paper: Ditto - global = {paper_gap:+.3f}',
    )
  axes.axhline(0.0, color='black', linewidth=0.5)
  axes.set_xlabel('round')
  axes.set_ylabel('benign mean accuracy difference (test)')
  axes.set_title(name)
  axes.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(f'{stem}.png', dpi=120)
  plt.close(figure)
  return curve


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--metrics', required=True, help="The Ditto run's metrics.csv."
  )
  parser.add_argument(
      '--name', required=True, help='Output file stem, e.g. femnist_a3_20.'
  )
  parser.add_argument('--output_dir', default='results/paper_budget')
  parser.add_argument(
      '--paper_gap',
      type=float,
      default=None,
      help="The paper's Ditto - global of the column.",
  )
  arguments = parser.parse_args()
  curve = write_rows_curve(
      arguments.metrics,
      arguments.name,
      arguments.output_dir,
      arguments.paper_gap,
  )
  print(curve.to_string(index=False))


if __name__ == '__main__':
  main()
