"""The paper's Figures 3-6 from a grid's results (PNG files)."""

from __future__ import annotations

import math
import os

import matplotlib
import pandas as pd

from tff_ditto.reproduction.grid import FIGURE4
from tff_ditto.reproduction.grid import SOLVER_LAMBDAS
from tff_ditto.reproduction.grid import TABLE1
from tff_ditto.reproduction.grid import TABLE2
from tff_ditto.reproduction.grid import TERM_TILTS
from tff_ditto.reproduction.grid import attack_columns
from tff_ditto.reproduction.grid import column_label
from tff_ditto.reproduction.grid import figure5_columns
from tff_ditto.reproduction.grid import make_cell
from tff_ditto.reproduction.result_rows import entry_has_accuracy
from tff_ditto.reproduction.result_rows import lookup
from tff_ditto.reproduction.result_rows import mean_accuracy

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position


def plot_figures(
    dataset: str, results: pd.DataFrame, output_dir: str
) -> list[str]:
  """Figures 3-6 for one dataset; returns the PNG file names written."""

  written = []

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(os.path.join(output_dir, name), dpi=100)
    plt.close(fig)
    written.append(name)

  # Figure 3: accuracy vs attack ratio, per attack, one line per method.
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
  for axis, attack in zip(axes, ('a1', 'a2', 'a3')):
    ratios = [0.0] + [r for a, r in attack_columns(dataset) if a == attack]
    for row in TABLE1.rows:
      values = [
          mean_accuracy(
              results, row.cell(dataset, 'none' if r == 0 else attack, r)
          )
          for r in ratios
      ]
      if not all(math.isnan(v) for v in values):
        axis.plot(
            [100 * r for r in ratios],
            values,
            'o-',
            label=row.label,
            lw=2.5 if row.method == 'ditto' else 1.2,
        )
    axis.set_title(f'{attack.upper()}')
    axis.set_xlabel('malicious devices (%)')
  axes[0].set_ylabel('benign mean test accuracy')
  axes[-1].legend(fontsize=7)
  fig.suptitle(f'Figure 3 ({dataset}): robustness vs attack ratio')
  save(fig, f'figure3_{dataset}.png')

  # Figure 4: TERM under A1 as the tilt t grows; Ditto as reference.
  fig, axis = plt.subplots(figsize=(6, 4))
  plotted = False
  for (attack, ratio), color in zip(
      FIGURE4.columns(dataset), ('C0', 'C1', 'C2')
  ):
    values = [
        mean_accuracy(
            results,
            make_cell(dataset, 'term', attack, ratio, options=dict(term_t=t)),
        )
        for t in TERM_TILTS
    ]
    if not all(math.isnan(v) for v in values):
      axis.plot(
          TERM_TILTS,
          values,
          'o-',
          color=color,
          label=f'TERM, {column_label(attack, ratio)}',
      )
      plotted = True
    ditto = mean_accuracy(results, make_cell(dataset, 'ditto', attack, ratio))
    if not math.isnan(ditto):
      axis.axhline(
          ditto,
          color=color,
          ls='--',
          label=f'Ditto, {column_label(attack, ratio)}',
      )
  if not plotted:
    axis.text(
        0.5,
        0.5,
        'TERM cells not run (see report)',
        transform=axis.transAxes,
        ha='center',
    )
  axis.set_xscale('log')
  axis.set_xlabel('tilt t')
  axis.set_ylabel('benign mean accuracy')
  if axis.get_legend_handles_labels()[0]:
    axis.legend(fontsize=7)
  axis.set_title(f'Figure 4 ({dataset}): fair method under A1')
  save(fig, f'figure4_{dataset}.png')

  # Figure 5: accuracy (x) vs std across benign devices (y).
  columns = figure5_columns(dataset)
  fig, axes = plt.subplots(1, len(columns), figsize=(16, 4))
  rows = TABLE1.rows + tuple(r for r in TABLE2.rows if r not in TABLE1.rows)
  for axis, (attack, ratio) in zip(axes, columns):
    for row in rows:
      entry = lookup(results, row.cell(dataset, attack, ratio))
      if entry_has_accuracy(entry):
        is_ditto = row.method == 'ditto'
        axis.scatter(
            entry['benign_mean_accuracy'],
            entry['benign_std_accuracy'],
            marker='*' if is_ditto else 'o',
            s=160 if is_ditto else 40,
            color='C3' if is_ditto else None,
        )
        axis.annotate(
            row.label,
            (entry['benign_mean_accuracy'], entry['benign_std_accuracy']),
            fontsize=6,
        )
    axis.set_title(column_label(attack, ratio))
    axis.set_xlabel('benign mean accuracy')
  axes[0].set_ylabel('std of accuracy across benign devices')
  fig.suptitle(
      f'Figure 5 ({dataset}): accuracy vs fairness (better: lower right)'
  )
  save(fig, f'figure5_{dataset}.png')

  # Figure 6: joint (Ditto) vs fine-tuning solver, A3 20 %, per lambda.
  fig, axis = plt.subplots(figsize=(6, 4))
  for label, method, option, color in (
      ('joint (Ditto)', 'ditto', 'lam', 'C3'),
      ('fine-tuning', 'finetune', 'finetune_lam', 'C0'),
  ):
    values = [
        mean_accuracy(
            results,
            make_cell(dataset, method, 'a3', 0.2, options={option: lam}),
        )
        for lam in SOLVER_LAMBDAS
    ]
    axis.plot(SOLVER_LAMBDAS, values, 'o-', color=color, label=label)
  axis.set_xscale('log')
  axis.set_xlabel('lambda')
  axis.set_ylabel('benign mean accuracy')
  axis.set_ylim(bottom=0)
  axis.legend()
  axis.set_title(f'Figure 6 ({dataset}): solvers under A3 20%')
  save(fig, f'figure6_{dataset}.png')
  return written
