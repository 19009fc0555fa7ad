"""A run's loss and accuracy curves, as a PNG, from its `metrics.csv`.

Left: the train losses of every round (the global model's, the personal
models') and the evaluation loss of the evaluated rounds; right: the
accuracies of the evaluated rounds (benign mean and pooled, the global model
of a personalized run, the malicious clients, the curve split). Rounds on
the x axis are rounds trained (1-based), as in scripts/rows_curve.py and
scripts/budget_curve.py. Drawn with Matplotlib's object API (no pyplot: no
global figure state, no backend switch).
"""

from __future__ import annotations

import os

from matplotlib import figure as figure_lib
import pandas as pd

# metrics.csv column -> curve label, per panel; columns a run lacks (or
# never filled) are left out.
LOSS_CURVES = (
    ('global_train_loss', 'global model, train'),
    ('personal_train_loss', 'personal models, train'),
    ('benign_pooled_loss', 'benign clients, evaluation (pooled)'),
)
ACCURACY_CURVES = (
    ('benign_mean_accuracy', 'benign, mean over clients'),
    ('benign_pooled_accuracy', 'benign, pooled'),
    ('global_model_benign_mean_accuracy', 'global model, benign mean'),
    ('malicious_mean_accuracy', 'malicious, mean over clients'),
    ('validation_benign_mean_accuracy', 'benign mean, validation'),
    ('test_benign_mean_accuracy', 'benign mean, test'),
)


def plot_curves(metrics: pd.DataFrame, title: str) -> figure_lib.Figure:
  """The loss and accuracy panels of a run's metrics.

  Args:
    metrics: The run's `metrics.csv` rows.
    title: The figure's title.

  Returns:
    The figure.
  """
  figure = figure_lib.Figure(figsize=(10, 3.8))
  loss_axes, accuracy_axes = figure.subplots(1, 2)
  rounds = metrics['round'].astype(int) + 1
  for axes, curves in (
      (loss_axes, LOSS_CURVES),
      (accuracy_axes, ACCURACY_CURVES),
  ):
    for column, label in curves:
      if column not in metrics:
        continue
      values = pd.to_numeric(metrics[column], errors='coerce')
      present = values.notna()
      if not present.any():
        continue
      every_round = present.all() and len(values) > 1
      axes.plot(
          rounds[present],
          values[present],
          label=label,
          marker=None if every_round else 'o',
          markersize=3,
      )
    axes.set_xlabel('round')
    if axes.get_legend_handles_labels()[0]:
      axes.legend(fontsize=7)
  loss_axes.set_ylabel('loss')
  accuracy_axes.set_ylabel('accuracy')
  figure.suptitle(title)
  # Fixed margins: tight_layout would draw the figure once more.
  figure.subplots_adjust(
      left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.2
  )
  return figure


def write_curves(metrics_path: str, png_path: str, title: str) -> None:
  """Draws `plot_curves` of a `metrics.csv` into a PNG (atomically).

  Args:
    metrics_path: The run's `metrics.csv`.
    png_path: The PNG file written.
    title: The figure's title.
  """
  figure = plot_curves(pd.read_csv(metrics_path), title)
  temporary = f'{png_path}.tmp{os.getpid()}'
  figure.savefig(temporary, format='png', dpi=100)
  os.replace(temporary, png_path)
