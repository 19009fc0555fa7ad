"""REPORT.md: the grid's results beside the paper's numbers, and figures.

`write_report` writes the verdict on each of the paper's claims, every paper
table per dataset (ours / paper, and its CSV), the Ditto vs global
comparisons, each claim's checks, the Figure 3-6 PNGs and the cells not run
with why.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Optional

import pandas as pd

from tff_ditto.reproduction.claims import CLAIMS_LEGEND
from tff_ditto.reproduction.claims import claims_details
from tff_ditto.reproduction.claims import claims_summary
from tff_ditto.reproduction.comparisons import ditto_vs_global
from tff_ditto.reproduction.comparisons import ditto_vs_robust_global
from tff_ditto.reproduction.grid import PAPER_SPECS
from tff_ditto.reproduction.grid import TableSpec
from tff_ditto.reproduction.paper_tables import has_paper_numbers
from tff_ditto.reproduction.plots import plot_figures
from tff_ditto.reproduction.result_rows import FINISHED_STATUSES
from tff_ditto.reproduction.tables import table_frame
from tff_ditto.reproduction.tables import table_markdown
from tff_ditto.reproduction.training_health import non_finite_training_lines


def git_revision(repo_dir: str, ignore_dir: Optional[str] = None) -> str:
  """HEAD's hash, with '+uncommitted changes' when the tree is dirty.

  Args:
    repo_dir: The checkout.
    ignore_dir: Changes under this folder do not count (the report's own
      output folder, whose committed files a new report overwrites).
  """
  pathspec = ['.']
  if ignore_dir is not None:
    relative = os.path.relpath(
        os.path.realpath(ignore_dir), os.path.realpath(repo_dir)
    )
    if not relative.startswith('..'):
      pathspec.append(f':(exclude){relative}')
  try:
    head = subprocess.run(
        ['git', 'rev-parse', 'HEAD'],
        cwd=repo_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dirty = subprocess.run(
        [
            'git',
            'status',
            '--porcelain',
            '--untracked-files=no',
            '--',
            *pathspec,
        ],
        cwd=repo_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown (not a git checkout)'
  return head + (' (+ uncommitted changes in the tree)' if dirty else '')


REPORT_LEGEND = (
    'Every entry is `ours / paper`: mean (std) of per-device test accuracy '
    "over benign devices (the paper's metric). The paper's numbers are "
    'all those of its Tables 1-3 (Table 1: Fashion-MNIST and FEMNIST; '
    'Table 2: FEMNIST and CelebA, clean and A1 50 %; Table 3: FEMNIST, '
    'means only), each table showing its own where two print the same cell '
    'differently; `-` = the paper prints no number for the cell (its '
    'figures, its robust aggregators other than clipping and its other '
    'datasets are plotted or in its appendix, not available here); '
    "`(Table 1)` marks Table 1's number for the same method and column "
    "where another table prints none; a row marked `[paper's: "
    'per-device lambda]` runs Ditto with lambda fixed at 1 beside the '
    "paper's Ditto, which selects lambda per device (Section 4, Setup); "
    '`n/a [k]` = not run, reason k below the table; `†` = read from the '
    "column's one Ditto run with report lambdas (its global model, its "
    'lambda = 0 and 1 personal models, its per-device selection: exactly '
    "what the separate run gives; the cell is in the table CSV's "
    '`source_cell`). Raw per-cell results: `cells.csv`.'
)


def _table_section(
    spec: TableSpec, dataset: str, results: pd.DataFrame, output_dir: str
) -> list[str]:
  """A table's markdown lines; writes its `<table>_<dataset>.csv`."""
  frame = table_frame(spec, dataset, results)
  name = f'{spec.key}_{dataset}.csv'
  frame.to_csv(os.path.join(output_dir, name), index=False)
  return [
      f'### {spec.title}',
      '',
      table_markdown(spec, frame),
      '',
      f'CSV: `{name}`',
      '',
  ]


def _paper_only_section(
    dataset: str, why: str, results: pd.DataFrame, output_dir: str
) -> list[str]:
  """A dataset not run here: the tables printing paper numbers for it.

  Returns:
    Markdown lines ([] when the paper prints no number for the dataset);
    writes those tables' CSVs.
  """
  specs = [spec for spec in PAPER_SPECS if has_paper_numbers(spec, dataset)]
  if not specs:
    return []
  lines = [
      f"## {dataset} (not run: the paper's numbers)",
      '',
      f'Not run here ({why}); the tables that print paper numbers for it:',
      '',
  ]
  for spec in specs:
    lines += _table_section(spec, dataset, results, output_dir)
  return lines


def write_report(
    results: pd.DataFrame,
    output_dir: str,
    *,
    command: str,
    mode: str,
    repo_dir: str,
    datasets: Sequence[str],
    unavailable_datasets: Mapping[str, str],
    elapsed_seconds: float,
    theory_markdown: Optional[str] = None,
    header_note: str = '',
    runs_dir: Optional[str] = None,
    discussions: Optional[Mapping[str, str]] = None,
) -> str:
  """Writes <output_dir>/REPORT.md, per-table CSVs and the figure PNGs.

  Args:
    results: One row per grid cell (`run_grid`).
    output_dir: Where REPORT.md, `cells.csv`, `<table>_<dataset>.csv` and
      the PNGs go.
    command: The command line that produced the report.
    mode: Description of the mode (rounds, clients).
    repo_dir: The git checkout whose commit the report names.
    datasets: Datasets to report (in order).
    unavailable_datasets: {dataset: why it was not run}.
    elapsed_seconds: Time this invocation took.
    theory_markdown: Section 3.3 markdown, if drawn.
    header_note: Markdown under the title.
    runs_dir: Where the cells ran (enables the per-device Ditto vs global
      comparison).
    discussions: {dataset: markdown} discussing that dataset's results, put
      after its Ditto vs global table.

  Returns:
    The path of REPORT.md.
  """
  os.makedirs(output_dir, exist_ok=True)
  counts = (
      results['status']
      .map(lambda s: s if s in FINISHED_STATUSES else s.split(':')[0])
      .value_counts()
      .to_dict()
  )
  lines = ['# Reproduction report: Ditto (Li et al., ICML 2021)', '']
  if header_note:
    lines += [header_note, '']
  lines += [
      f'- Date: {datetime.datetime.now():%Y-%m-%d %H:%M}',
      f'- Commit: {git_revision(repo_dir, ignore_dir=output_dir)}',
      f'- Command: `{command}`',
      f'- Mode: {mode}',
      f'- Grid: {len(results)} cells; '
      + ', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))
      + f'; this invocation took {elapsed_seconds / 60:.1f} min',
      '- Datasets run: '
      + (
          ', '.join(d for d in datasets if d not in unavailable_datasets)
          or 'none'
      ),
  ]
  for name, why in sorted(unavailable_datasets.items()):
    lines.append(f'- Not run: {name} ({why})')
  lines += [
      '',
      REPORT_LEGEND,
      '',
  ]
  run_datasets = [d for d in datasets if d not in unavailable_datasets]
  if run_datasets:
    lines += [
        "## The paper's claims",
        '',
        CLAIMS_LEGEND,
        '',
        *claims_summary(run_datasets, results, runs_dir),
        '',
    ]
  if theory_markdown:
    lines += ['## Theory (Section 3.3, Figures 1-2)', '', theory_markdown, '']
  for dataset in datasets:
    if dataset in unavailable_datasets:
      lines += _paper_only_section(
          dataset, unavailable_datasets[dataset], results, output_dir
      )
      continue
    lines += [f'## {dataset}', '']
    for spec in PAPER_SPECS:
      lines += _table_section(spec, dataset, results, output_dir)
    lines += [
        '### Ditto vs global under attack (Table 1)',
        '',
        *ditto_vs_global(dataset, results, runs_dir),
        '',
    ]
    non_finite = non_finite_training_lines(dataset, results, runs_dir)
    if non_finite:
      lines += [*non_finite, '']
    robust_pairs = ditto_vs_robust_global(dataset, results, runs_dir)
    if robust_pairs:
      lines += [
          '### Ditto vs global with the same robust aggregator (Table 3)',
          '',
          *robust_pairs,
          '',
      ]
    details = claims_details(dataset, results, runs_dir)
    if details:
      lines += ["### The paper's claims, check by check", '', *details, '']
    if discussions and discussions.get(dataset):
      lines += [discussions[dataset].strip(), '']
    for name in plot_figures(dataset, results, output_dir):
      lines.append(f'![{name}]({name})')
    lines.append('')
  not_run = results[~results['status'].isin(FINISHED_STATUSES)]
  if not not_run.empty:
    lines += [
        '## Cells not run, and why',
        '',
        '| reason | cells | e.g. |',
        '|---|---|---|',
    ]
    for status, group in not_run.groupby('status', sort=False):
      examples = ', '.join(
          f'{d}/{c}' for d, c in zip(group['dataset'][:3], group['cell_id'][:3])
      )
      lines.append(f'| {status} | {len(group)} | {examples} |')
    lines.append('')
  path = os.path.join(output_dir, 'REPORT.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  results.to_csv(os.path.join(output_dir, 'cells.csv'), index=False)
  return path
