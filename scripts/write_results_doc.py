"""Renders the generated blocks of docs/results.md from the committed results.

docs/results.md mixes hand-written text with blocks

    <!-- begin generated: KIND key=value ... -->
    ...
    <!-- end generated -->

whose content this script renders from files under results/ (the reproduction
report's CSVs and REPORT.md, run summaries, evaluation JSONs), so that no
number in a table is copied by hand. The hand-written text around the blocks is
left as it is.

`rev=COMMIT` renders a block from the files as committed at COMMIT (`git
show`), not from the working tree. A section whose hand-written discussion
refers to one report pins its tables that way, so they stay with the discussion
when the report is regenerated; a new report gets new blocks.

Kinds (arguments in brackets are optional):

  report [rev]                  the report's date, commit, command and mode
  table table=K dataset=D [report=DIR] [rev]
                                a paper table (K = table1, table2, table3,
                                figure4, figure6) from DIR/K_D.csv (DIR
                                default results; reports committed
                                before the paper's numbering was adopted,
                                e.g. at f502c50, name the TERM figure
                                figure5: a block pinned there says
                                table=figure5)
  comparison table=1|3 dataset=D [rev]
                                the report's per-device Ditto vs global table
  claims [report=DIR] [rev]     the verdicts on the paper's claims (the
                                summary table of DIR/REPORT.md)
  default-run                   results/default_run/comparison.csv
  femnist-clean                 results/femnist_clean*/ (500 and 1000 rounds)
  femnist-lam-auto              results/femnist_lam_auto/ (round 1000)
  bucketing                     results/bucketing/bucketing.csv
  budget dataset=D              results/budget/D_budget.json and its local
                                validation curve (scripts/budget_curve.py)
  rows-curve name=N             results/paper_budget/N_rows_curve.csv
                                (scripts/rows_curve.py)

Usage (from the repository root; no TensorFlow needed):

  python scripts/write_results_doc.py            # rewrites docs/results.md
  python scripts/write_results_doc.py --check    # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Callable, Optional

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_PATH = os.path.join('docs', 'results.md')

BEGIN = re.compile(r'^<!-- begin generated: (.*?) -->$')
END = '<!-- end generated -->'
MISSING = '–'


class Source:
  """Reads files of the repository, from the working tree or a commit."""

  def __init__(self, repo_dir: str, rev: Optional[str] = None):
    self.repo_dir = repo_dir
    self.rev = rev

  def text(self, path: str) -> str:
    if self.rev is None:
      with open(os.path.join(self.repo_dir, path)) as f:
        return f.read()
    return subprocess.run(
        ['git', 'show', f'{self.rev}:{path}'],
        cwd=self.repo_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

  def csv_rows(self, path: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(self.text(path))))

  def json(self, path: str) -> dict:
    return json.loads(self.text(path))

  def cite(self, path: str) -> str:
    """A link to `path` from docs/, or where to find it at the pinned rev."""
    if self.rev is None:
      return f'[`{path}`](../{path})'
    return f'`{path}` at commit {self.rev} (`git show {self.rev}:{path}`)'


def _number(text: str) -> Optional[float]:
  try:
    value = float(text)
  except (TypeError, ValueError):
    return None
  return None if value != value else value  # NaN -> None


def _mean_std(mean: Optional[float], std: Optional[float]) -> str:
  if mean is None:
    return MISSING
  return f'{mean:.3f}' + ('' if std is None else f' ({std:.3f})')


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return lines


# ------------------------------------------------------- the report's files


def report_header(source: Source) -> dict[str, str]:
  """The '- Key: value' lines at the top of REPORT.md."""
  header = {}
  for line in source.text('results/REPORT.md').splitlines():
    if line.startswith('## '):
      break
    match = re.match(r'^- ([A-Za-z ]+): (.*)$', line)
    if match:
      header[match.group(1)] = match.group(2)
  return header


def render_report(source: Source) -> list[str]:
  header = report_header(source)
  lines = [f'- Report: {source.cite("results/REPORT.md")}']
  for key in ('Date', 'Commit', 'Mode', 'Datasets run', 'Command'):
    if key in header:
      lines.append(f'- {key}: {header[key]}')
  return lines


def render_paper_table(
    source: Source, table: str, dataset: str, report: str = 'results'
) -> list[str]:
  """One paper table: rows = methods, columns = attack columns.

  Rows and columns without any result are left out; `–` marks a cell not
  run (pending or not runnable; the report gives the reason). `report` is
  the report's folder (e.g. results/paper_budget).
  """
  path = f'{report}/{table}_{dataset}.csv'
  records = source.csv_rows(path)
  methods = list(dict.fromkeys(r['method'] for r in records))
  columns = list(dict.fromkeys(r['column'] for r in records))
  cells = {}
  for r in records:
    text = _mean_std(_number(r['ours_mean']), _number(r['ours_std']))
    paper = _number(r['paper_mean'])
    if paper is not None:
      text += f'; paper {paper:.3f}'
    cells[r['method'], r['column']] = (
        text,
        _number(r['ours_mean']) is not None,
    )
  methods = [m for m in methods if any(cells[m, c][1] for c in columns)]
  columns = [c for c in columns if any(cells[m, c][1] for m in methods)]
  lines = _table(
      ['method'] + columns,
      [[m] + [cells[m, c][0] for c in columns] for m in methods],
  )
  return lines + [
      '',
      (
          'Benign mean (std) of per-device test accuracy; '
          f'{MISSING} = not run (reason in the report). From '
          f'{source.cite(path)}.'
      ),
  ]


def _first_table(lines: list[str]) -> list[str]:
  """The lines of the first markdown table in `lines` ([] if none)."""
  rows = []
  for line in lines:
    if line.startswith('|'):
      rows.append(line)
    elif rows:
      break
  return rows


def render_comparison(source: Source, table: str, dataset: str) -> list[str]:
  """The report's 'Ditto vs global' table of a dataset (Table 1 or 3)."""
  headings = {
      '1': '### Ditto vs global under attack (Table 1)',
      '3': '### Ditto vs global with the same robust aggregator (Table 3)',
  }
  lines = source.text('results/REPORT.md').splitlines()
  start = lines.index(f'## {dataset}')
  position = lines.index(headings[table], start)
  following = [
      i for i, line in enumerate(lines) if i > start and line.startswith('## ')
  ]
  if following and position > following[0]:
    raise ValueError(f'REPORT.md: no {headings[table]!r} under {dataset}.')
  return _first_table(lines[position + 1 :]) + [
      '',
      (
          'Per benign device: how many score higher with Ditto, '
          'lower, or the same (exact sign test). From '
          f'{source.cite("results/REPORT.md")}.'
      ),
  ]


def render_claims(source: Source, report: str = 'results') -> list[str]:
  """The summary table of the report's 'The paper's claims' section."""
  path = f'{report}/REPORT.md'
  lines = source.text(path).splitlines()
  try:
    start = lines.index("## The paper's claims")
  except ValueError:
    raise ValueError(f"{path}: no section '## The paper's claims'.") from None
  following = [
      i for i, line in enumerate(lines) if i > start and line.startswith('## ')
  ]
  section = lines[start + 1 : following[0] if following else len(lines)]
  return _first_table(section) + [
      '',
      (
          'Checks: one pair of cells per column (and aggregator, tilt or'
          ' lambda); the report lists them one by one, with the rule of each'
          f' verdict. From {source.cite(path)}.'
      ),
  ]


# --------------------------------------------------------- single runs


_METRIC_COLUMNS = (
    ('benign_mean_accuracy', 'benign mean acc'),
    ('benign_std_accuracy', 'std (fairness)'),
    ('benign_pooled_accuracy', 'pooled acc'),
    ('benign_worst10_accuracy', 'worst-10% mean'),
)


def _metric_cells(record: dict) -> list[str]:
  return [f'{float(record[key]):.3f}' for key, _ in _METRIC_COLUMNS]


def render_default_run(source: Source) -> list[str]:
  path = 'results/default_run/comparison.csv'
  rows = [[r['method']] + _metric_cells(r) for r in source.csv_rows(path)]
  return _table(['method'] + [name for _, name in _METRIC_COLUMNS], rows) + [
      '',
      f'From {source.cite(path)}.',
  ]


def render_femnist_clean(source: Source) -> list[str]:
  runs = (
      (
          'ditto (lambda = 1)',
          'results/femnist_clean/ditto/summary.json',
          ('final',),
      ),
      (
          'global (FedAvg)',
          'results/femnist_clean/global/summary.json',
          ('final',),
      ),
      (
          'ditto (lambda = 1)',
          'results/femnist_clean_1000/ditto/summary.json',
          ('final',),
      ),
      (
          "global (FedAvg; the Ditto run's global model)",
          'results/femnist_clean_1000/ditto/evaluation_test_round999.json',
          ('global_model',),
      ),
      (
          'local (lr 0.03)',
          'results/femnist_clean_1000/local/summary.json',
          ('final',),
      ),
  )
  rows = []
  for label, path, keys in runs:
    record = source.json(path)
    rounds = record.get('rounds', record.get('round', -1) + 1)
    for key in keys:
      record = record[key]
    rows.append(
        [label, str(rounds)] + _metric_cells(record) + [source.cite(path)]
    )
  path = 'results/femnist_clean_1000/ditto/evaluation_validation_round999.json'
  validation = source.json(path)
  return _table(
      ['method', 'rounds'] + [name for _, name in _METRIC_COLUMNS] + ['file'],
      rows,
  ) + [
      '',
      (
          'Validation split at round 1000: Ditto'
          f' {validation["models"]["benign_mean_accuracy"]:.3f}, global'
          f' {validation["global_model"]["benign_mean_accuracy"]:.3f} (benign'
          f' mean; {source.cite(path)}).'
      ),
  ]


def render_femnist_lam_auto(source: Source) -> list[str]:
  candidates = ('0.1', '1', '2')
  header = (
      ['split, round 1000', 'Ditto auto']
      + [f'lambda = {c}' for c in candidates]
      + ['global']
  )
  rows, shares, record = [], None, None
  for split in ('validation', 'test'):
    path = f'results/femnist_lam_auto/evaluation_{split}_round999.json'
    record = source.json(path)
    models, global_model = record['models'], record['global_model']
    row = [
        f'{split}, mean (std)',
        _mean_std(
            models['benign_mean_accuracy'], models['benign_std_accuracy']
        ),
    ]
    row += [
        _mean_std(
            models[f'benign_lam_{c}_mean_accuracy'],
            models[f'benign_lam_{c}_std_accuracy'],
        )
        for c in candidates
    ]
    row.append(
        _mean_std(
            global_model['benign_mean_accuracy'],
            global_model['benign_std_accuracy'],
        )
    )
    rows.append(row)
    record = (models, global_model)
    shares = ' / '.join(
        f'{models[f"benign_share_lam_{c}"]:.2f}' for c in candidates
    )
  models, global_model = record
  rows.append(
      ['test, worst-10% mean', f'{models["benign_worst10_accuracy"]:.3f}']
      + [
          f'{models[f"benign_lam_{c}_worst10_accuracy"]:.3f}'
          for c in candidates
      ]
      + [f'{global_model["benign_worst10_accuracy"]:.3f}']
  )
  metrics_path = 'results/femnist_lam_auto/metrics.csv'
  first = next(
      r
      for r in source.csv_rows(metrics_path)
      if _number(r.get('benign_share_lam_1')) is not None
  )
  early = ' / '.join(
      f'{float(first[f"benign_share_lam_{c}"]):.2f}' for c in candidates
  )
  return _table(header, rows) + [
      '',
      f'Shares of clients choosing 0.1 / 1 / 2 at round 1000: {shares} '
      f'(at round {int(first["round"]) + 1}: {early}, '
      f'{source.cite(metrics_path)}). From '
      + ', '.join(
          source.cite(f'results/femnist_lam_auto/evaluation_{s}_round999.json')
          for s in ('validation', 'test')
      )
      + '.',
  ]


def _percent(text: str) -> str:
  return f'{float(text):.1f}'


def render_bucketing(source: Source) -> list[str]:
  path = 'results/bucketing/bucketing.csv'
  records = {
      (r['aggregator'], r['bucketing_size'], r['attack']): r
      for r in source.csv_rows(path)
  }
  names = {'rfa': 'RFA', 'median': 'CM'}
  rows = []
  for aggregator in ('rfa', 'median'):
    for attack in ('ipm', 'alie', 'mimic'):
      s0 = records[aggregator, '0', attack]
      s2 = records[aggregator, '2', attack]
      rows.append([
          names[aggregator],
          attack if attack == 'mimic' else attack.upper(),
          _percent(s0['accuracy']),
          _percent(s2['accuracy']),
          s0['paper_accuracy_beta0'],
          s2['paper_accuracy_beta0'],
      ])
  means = ' / '.join(
      _percent(records['mean', '0', a]['accuracy'])
      for a in ('alie', 'ipm', 'mimic')
  )
  clean = _percent(records['mean', '0', 'none']['accuracy'])
  paper_mimic = records['mean', '0', 'mimic']['paper_accuracy_beta0']
  return _table(
      [
          'aggregator',
          'attack',
          'ours s=0',
          'ours s=2',
          'paper s=0',
          'paper s=2',
      ],
      rows,
  ) + [
      '',
      (
          'References (ours): mean of the 20 honest workers without attack '
          f'{clean}; mean under ALIE / IPM / mimic {means} (paper, mean under '
          f'mimic: {paper_mimic}). From {source.cite(path)} (per-cell outputs '
          'and `bucketing.md` beside it).'
      ),
  ]


def render_budget(source: Source, dataset: str) -> list[str]:
  """A dataset's local validation curve and the budget chosen from it."""
  budget_path = f'results/budget/{dataset}_budget.json'
  curve_path = f'results/budget/{dataset}_local_curve.csv'
  budget = source.json(budget_path)
  rows = [
      [
          row['round'],
          f'{float(row["mean_accuracy"]):.3f}',
          f'{float(row["std_accuracy"]):.3f}',
          f'{float(row["pooled_accuracy"]):.3f}',
      ]
      for row in source.csv_rows(curve_path)
  ]
  paper = budget.get('paper_local_test_accuracy')
  if budget['budget_rounds'] is None:
    verdict = (
        f'No budget yet: after {budget["rounds_run"]} rounds the curve still '
        f'rose by {budget["rise_over_window"]:.3f} over its last '
        f'{budget["window"]} evaluations (plateau: less than '
        f'{budget["tolerance"]:g}) and is below the paper\'s local level.'
    )
  else:
    verdict = (
        f'Budget: **{budget["budget_rounds"]} rounds** (plateau round: '
        f'{budget["plateau_round"]}; first round at the paper\'s local '
        f'level: {budget["paper_level_round"]}).'
    )
  return _table(
      ['round', 'local: mean validation accuracy', 'std', 'pooled'], rows
  ) + [
      '',
      verdict
      + " The paper's local test accuracy (Table 1, clean): "
      + (MISSING if paper is None else f'{paper:.3f}')
      + f'. From {source.cite(budget_path)} and {source.cite(curve_path)}.',
  ]


def render_rows_curve(source: Source, name: str) -> list[str]:
  """Table 1's rows against rounds of one multi-lambda Ditto run."""
  path = f'results/paper_budget/{name}_rows_curve.csv'
  rows = [
      [row['split'], row['round']]
      + [
          f'{float(row[key]):.3f}'
          for key in ('global', 'local', 'ditto_lambda_1', 'ditto_per_device')
      ]
      for row in source.csv_rows(path)
  ]
  return _table(
      [
          'split',
          'round',
          'global',
          'local (lambda = 0)',
          'Ditto lambda = 1',
          'Ditto per-device lambda',
      ],
      rows,
  ) + [
      '',
      (
          f'Benign mean per-device accuracy. From {source.cite(path)} '
          '(`scripts/rows_curve.py`).'
      ),
  ]


RENDERERS: dict[str, Callable[..., list[str]]] = {
    'report': render_report,
    'table': render_paper_table,
    'comparison': render_comparison,
    'claims': render_claims,
    'default-run': render_default_run,
    'femnist-clean': render_femnist_clean,
    'femnist-lam-auto': render_femnist_lam_auto,
    'bucketing': render_bucketing,
    'budget': render_budget,
    'rows-curve': render_rows_curve,
}


# ------------------------------------------------------------- the page


def render_block(spec: str, repo_dir: str) -> list[str]:
  """The lines of one generated block, from its 'KIND key=value ...' spec."""
  kind, *arguments = shlex.split(spec)
  if kind not in RENDERERS:
    raise ValueError(
        f'Unknown generated block kind {kind!r} in {spec!r}; '
        f'known: {sorted(RENDERERS)}.'
    )
  options = dict(argument.split('=', 1) for argument in arguments)
  source = Source(repo_dir, options.pop('rev', None))
  return RENDERERS[kind](source, **options)


def render(text: str, repo_dir: str = REPO_DIR) -> str:
  """`text` with every generated block rendered afresh."""
  out, lines, i = [], text.split('\n'), 0
  while i < len(lines):
    line = lines[i]
    out.append(line)
    match = BEGIN.match(line)
    i += 1
    if not match:
      continue
    try:
      end = lines.index(END, i)
    except ValueError:
      raise ValueError(f'{line!r} has no {END!r} after it.') from None
    out += render_block(match.group(1), repo_dir) + [END]
    i = end + 1
  return '\n'.join(out)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument(
      '--check',
      action='store_true',
      help='exit 1 (and write nothing) if the page is stale',
  )
  parser.add_argument('--repo_dir', default=REPO_DIR)
  args = parser.parse_args(argv)
  path = os.path.join(args.repo_dir, DOC_PATH)
  with open(path) as f:
    current = f.read()
  updated = render(current, args.repo_dir)
  if updated == current:
    print(f'{DOC_PATH} is up to date.')
    return 0
  if args.check:
    print(f'{DOC_PATH} is stale: run python scripts/write_results_doc.py')
    return 1
  with open(path, 'w') as f:
    f.write(updated)
  print(f'{DOC_PATH} rewritten.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
