"""One command: the Ditto paper's experiment grid on the data present + REPORT.md.

Runs every cell of Tables 1-3 and Figures 3-6 (`tff_ditto.reproduction`) on
the datasets found under --data_dir (FEMNIST, Vehicle, Fashion-MNIST when
its raw files are there; CelebA is listed as not run without its images; the
embedded Synthetic(1, 1) when no real data is present), plus the theory
figures 1-2, and writes <output_dir>/REPORT.md, cells.csv and the PNGs.
Re-running the same command skips finished cells and continues
half-finished ones from their checkpoints.

  # The full grid (days on 2 CPU cores; see docs/reproduction.md):
  .venv/bin/python scripts/reproduce.py --data_dir=../shared/data
  # Smoke test of the whole grid with few rounds and clients:
  .venv/bin/python scripts/reproduce.py --data_dir=../shared/data --quick
  # Only the embedded synthetic data:
  .venv/bin/python scripts/reproduce.py --quick --datasets=synthetic
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import pandas as pd  # noqa: E402
import theory_figures  # noqa: E402  (scripts/, the script's own folder, is first on sys.path)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tff_ditto.reproduction import availability  # noqa: E402  pylint: disable=g-import-not-at-top
from tff_ditto.reproduction import grid  # noqa: E402  pylint: disable=g-import-not-at-top
from tff_ditto.reproduction import report  # noqa: E402  pylint: disable=g-import-not-at-top
from tff_ditto.reproduction import run_settings  # noqa: E402  pylint: disable=g-import-not-at-top
from tff_ditto.reproduction import running  # noqa: E402  pylint: disable=g-import-not-at-top

_DATA_DIR = flags.DEFINE_string(
    'data_dir',
    None,
    'Root of the real data (e.g. ../shared/data); none: '
    'only the embedded Synthetic(1, 1) runs.',
)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir',
    None,
    'Where REPORT.md, cells.csv and the PNGs go (default results/, or '
    'results/quick/ with --quick).',
)
_RUNS_DIR = flags.DEFINE_string(
    'runs_dir',
    None,
    'Where the cells run (default runs/reproduce or runs/reproduce_quick; '
    'one folder per cell; resumable).',
)
_DATASETS = flags.DEFINE_list(
    'datasets',
    None,
    'Datasets to run (default: every paper dataset present under '
    '--data_dir; synthetic when none is).',
)
_QUICK = flags.DEFINE_bool(
    'quick',
    False,
    'Smoke test: the whole grid with --quick_rounds rounds on the first '
    '--quick_max_clients clients of each dataset, with '
    + run_settings.describe_overrides(run_settings.QUICK_CONFIG_OVERRIDES)
    + ' (reproduction.QUICK_CONFIG_OVERRIDES).',
)
_QUICK_ROUNDS = flags.DEFINE_integer(
    'quick_rounds', 2, 'Rounds per cell with --quick.'
)
_QUICK_MAX_CLIENTS = flags.DEFINE_integer(
    'quick_max_clients', 15, 'Clients per dataset with --quick.'
)
_ROUNDS = flags.DEFINE_list(
    'rounds',
    None,
    'Rounds per cell: a number for every dataset, and/or dataset:number'
    ' entries, e.g. 300 or femnist:300 (a dataset not named runs its preset'
    ' rounds; --quick_rounds with --quick), and/or dataset/column:number'
    ' entries for the cells of one column that ran a budget of its own, e.g.'
    ' fmnist/none:5000 or fmnist/a3:0.5:2750.',
)
_EVAL_EVERY = flags.DEFINE_integer(
    'eval_every',
    None,
    'Evaluate every cell every this many rounds (default: the preset, or '
    'only at the last round when --rounds is given).',
)
_CURVE_SPLIT = flags.DEFINE_enum(
    'curve_split',
    None,
    ['validation'],
    'Also evaluate this split at every evaluation of every cell (its summary '
    'goes into metrics.csv prefixed validation_): choose budgets on '
    'validation curves and read the test numbers of the chosen round from '
    'the same cell.',
)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of every cell.')
_CLIENT_LR = flags.DEFINE_float(
    'client_lr',
    None,
    "Client SGD learning rate of every cell (default: each dataset's "
    'preset): a sensitivity grid. Its cells have the ids of the preset '
    "rate's, so give it a --runs_dir and --output_dir of its own (a cell "
    'folder run at another rate is reported as failed, never reused).',
    lower_bound=0.0,
)
_KEEP_CHECKPOINTS = flags.DEFINE_bool(
    'keep_checkpoints',
    False,
    'Keep checkpoints and per-client models of finished cells (large).',
)
_REPORT_ONLY = flags.DEFINE_bool(
    'report_only',
    False,
    'Run nothing: write the report from the cells finished so far (the '
    'others are listed as pending).',
)
_TABLES = flags.DEFINE_list(
    'tables',
    None,
    'Run only the cells of these paper tables/figures (table1, table2, '
    'table3, figure4, figure6); the report still shows every table, with '
    'cells not run yet marked pending.',
)
_METHODS = flags.DEFINE_list(
    'methods', None, 'Run only cells of these methods (e.g. ditto,global).'
)
_AGGREGATORS = flags.DEFINE_list(
    'aggregators', None, 'Run only cells with these server aggregators.'
)
_COLUMNS = flags.DEFINE_list(
    'columns',
    None,
    'Run only these attack columns, in this order (e.g. '
    "a1:0.8,a2:0.8,a3:0.2,none). A3's ratios are per dataset: 10/20/50 % "
    'on fmnist, 10/15/20 % elsewhere; "strongest" stands for each '
    "dataset's A1 80 %, A2 80 % and largest A3 column.",
)
_PLAIN_ONLY = flags.DEFINE_bool(
    'plain_only',
    False,
    'Run only cells without extra options (e.g. Ditto lambda=1 but not '
    'the per-device lambda or TERM tilt variants).',
)
_REUSE_COMPUTATIONS = flags.DEFINE_bool(
    'reuse_computations',
    True,
    'Cells whose process and evaluation builders receive the same inputs '
    'share the built TFF computations instead of building and compiling '
    'them again; --noreuse_computations builds them per cell.',
)
_DERIVE_ROWS = flags.DEFINE_bool(
    'derive_rows',
    True,
    'Run one Ditto cell per Table 1 column (per-device lambda with report '
    'lambdas 0 and 1: its global model, lambda 0 and 1 personal models and '
    "per-device selection are exactly the separate runs' results) instead "
    "of the column's Global, Local, Ditto (lambda=1) and Ditto (lambda "
    "auto) cells (and Figure 6's joint lambda cells in its column); and "
    'one Ditto cell per Table 3 column and robust aggregator X '
    '(per-device lambda with report lambda 1) instead of its Robust (X), '
    'Ditto + X (lambda=1) and Ditto + X (lambda auto) cells; and report '
    'those rows from them (marked; source_cell in the table CSVs). '
    'Cells whose folders already hold a run still run and report on their '
    'own. --noderive_rows runs every cell separately.',
)
_MALICIOUS_PERSONAL_TRAINING = flags.DEFINE_bool(
    'malicious_personal_training',
    True,
    "Malicious clients train their personal models, as the reference's "
    'code does. --nomalicious_personal_training: they train only the '
    'global model, which leaves every reported number (benign devices, the '
    'global model) the same bits and makes attacked Ditto cells cheaper; a '
    'finished cell is reported whichever way it ran, an unfinished one '
    'resumes only the way it started.',
)
_SKIP_THEORY = flags.DEFINE_bool(
    'skip_theory', False, 'Do not redraw the theory figures 1-2.'
)
_DISCUSSION_DIR = flags.DEFINE_string(
    'discussion_dir',
    os.path.join(REPO_ROOT, 'scripts', 'report_discussion'),
    "Folder of hand-written <dataset>.md discussions of the full grid's "
    "results; each goes into the report after its dataset's Ditto vs "
    'global table (not with --quick, whose numbers they do not describe). '
    'Empty: no discussions (the paper-budget report, which the default '
    "folder's texts do not describe).",
)


def _config_overrides(quick: bool) -> dict:
  """`ExperimentConfig` fields the flags set in every cell."""
  overrides = dict(run_settings.QUICK_CONFIG_OVERRIDES) if quick else {}
  if _CURVE_SPLIT.value is not None:
    overrides['curve_split'] = _CURVE_SPLIT.value
  if _CLIENT_LR.value is not None:
    overrides['client_lr'] = _CLIENT_LR.value
  if not _MALICIOUS_PERSONAL_TRAINING.value:
    overrides['malicious_personal_training'] = False
  return overrides


def _theory_section(output_dir: str) -> str:
  """Draws Figures 1-2 into output_dir; returns their markdown."""
  rows = theory_figures.figure1(output_dir, trials=1000, seed=_SEED.value)
  lines = theory_figures.figure2(output_dir, trials=1000, seed=_SEED.value)
  return '\n'.join([
      (
          'Point estimation (`tff_ditto/theory.py`): closed-form lambda* vs the'
          ' argmin of a Monte Carlo lambda sweep (1000 federations, K = 100, n'
          ' = 10, sigma = 1, tau = 0.5):'
      ),
      '',
      '| setting | lambda* | argmin mean error | argmin std of errors |',
      '|---|---|---|---|',
      *rows,
      '',
      *lines,
      '',
      '![Figure 1](theory_figure1.png)',
      '![Figure 2](theory_figure2.png)',
  ])


def _discussions(datasets) -> dict[str, str]:
  """{dataset: markdown} from --discussion_dir (empty with --quick)."""
  found = {}
  if not _DISCUSSION_DIR.value:
    return found
  for dataset in datasets:
    path = os.path.join(_DISCUSSION_DIR.value, f'{dataset}.md')
    if not _QUICK.value and os.path.exists(path):
      with open(path) as f:
        found[dataset] = f.read()
  return found


def main(argv):
  del argv
  start = time.monotonic()
  quick = _QUICK.value
  output_dir = _OUTPUT_DIR.value or os.path.join(
      'results', 'quick' if quick else ''
  )
  output_dir = output_dir.rstrip('/') or 'results'
  runs_dir = _RUNS_DIR.value or os.path.join(
      'runs', 'reproduce_quick' if quick else 'reproduce'
  )
  present, absent = availability.available_datasets(_DATA_DIR.value)
  datasets = _DATASETS.value or present
  unavailable = {d: why for d, why in absent.items() if d in datasets}
  if 'celeba' not in datasets:
    unavailable.setdefault(
        'celeba', absent.get('celeba', availability.NOT_RUN_DATASETS['celeba'])
    )
  try:
    rounds, dataset_rounds, column_rounds = grid.parse_rounds(
        _ROUNDS.value or []
    )
  except ValueError as error:
    raise app.UsageError(str(error)) from error
  if quick and not _ROUNDS.value:
    rounds = _QUICK_ROUNDS.value
  settings = run_settings.RunSettings(
      data_dir=_DATA_DIR.value,
      runs_dir=runs_dir,
      rounds=rounds,
      dataset_rounds=dataset_rounds,
      column_rounds=column_rounds,
      max_clients=_QUICK_MAX_CLIENTS.value if quick else None,
      seed=_SEED.value,
      keep_checkpoints=_KEEP_CHECKPOINTS.value,
      reuse_computations=_REUSE_COMPUTATIONS.value,
      eval_every=_EVAL_EVERY.value,
      config_overrides=_config_overrides(quick),
      derive_rows=_DERIVE_ROWS.value,
  )
  report_datasets = list(dict.fromkeys(list(datasets) + ['celeba']))
  unknown = sorted(
      set(dataset_rounds).union(dataset for dataset, _ in column_rounds)
      - set(report_datasets)
  )
  if unknown:
    raise app.UsageError(
        '--rounds names datasets not in the grid: '
        f'{unknown} (grid: {report_datasets})'
    )
  cells = grid.paper_cells(report_datasets)
  selecting = (
      any(
          flag.value is not None
          for flag in (_TABLES, _METHODS, _AGGREGATORS, _COLUMNS)
      )
      or _PLAIN_ONLY.value
  )
  log = lambda line: print(line, flush=True)
  if selecting:
    selected = grid.paper_cells(
        report_datasets,
        [grid.spec_by_key(key) for key in _TABLES.value]
        if _TABLES.value
        else grid.PAPER_SPECS,
    )
    selected = grid.select_cells(
        selected,
        methods=_METHODS.value,
        aggregators=_AGGREGATORS.value,
        columns=grid.parse_columns(_COLUMNS.value) if _COLUMNS.value else None,
        plain_only=_PLAIN_ONLY.value,
    )
    not_here = sum(cell.dataset in unavailable for cell in selected)
    print(
        f'{len(selected)} of {len(cells)} cells selected ({not_here} of '
        f'them on datasets not available here); datasets {datasets}; '
        f'runs in {runs_dir}',
        flush=True,
    )
    ran = running.run_grid(
        selected,
        settings,
        unavailable,
        log_fn=log,
        run_missing=not _REPORT_ONLY.value,
    )
    # The report covers the whole grid: finished cells, the rest pending;
    # this run's rows (with failures and timings) take precedence.
    collected = running.run_grid(
        cells,
        settings,
        unavailable,
        log_fn=lambda line: None,
        run_missing=False,
    )
    results = pd.concat([ran, collected]).drop_duplicates(
        ['dataset', 'cell_id'], keep='first'
    )
    results.to_csv(os.path.join(runs_dir, 'cells.csv'), index=False)
  else:
    print(
        f'{len(cells)} cells; datasets {datasets}; runs in {runs_dir}',
        flush=True,
    )
    results = running.run_grid(
        cells,
        settings,
        unavailable,
        log_fn=log,
        run_missing=not _REPORT_ONLY.value,
    )
  os.makedirs(output_dir, exist_ok=True)
  theory = None if _SKIP_THEORY.value else _theory_section(output_dir)
  mode = (
      f'quick smoke test: {settings.describe_rounds()}, first '
      f'{settings.max_clients} clients of each dataset, '
      + run_settings.describe_overrides(settings.config_overrides)
      if quick
      else f'full: {settings.describe_rounds()}, all clients'
      + (f'; client_lr={_CLIENT_LR.value}' if _CLIENT_LR.value else '')
  )
  note = (
      '> **Quick smoke test, not the paper reproduction.** Few rounds '
      'and clients per cell: the numbers check the pipeline only.'
      if quick
      else ''
  )
  if _REPORT_ONLY.value or selecting:
    note += '\n\n> **Partial grid**: cells still to run are listed as pending.'
  path = report.write_report(
      results,
      output_dir,
      command=' '.join(
          ['.venv/bin/python scripts/reproduce.py']
          + [shlex.quote(a) for a in sys.argv[1:]]
      ),
      mode=mode,
      repo_dir=REPO_ROOT,
      datasets=report_datasets,
      unavailable_datasets=unavailable,
      elapsed_seconds=time.monotonic() - start,
      theory_markdown=theory,
      header_note=note,
      runs_dir=runs_dir,
      discussions=_discussions(report_datasets),
  )
  print(f'report: {path} ({(time.monotonic() - start) / 60:.1f} min)')


if __name__ == '__main__':
  app.run(main)
