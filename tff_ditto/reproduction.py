"""The Ditto paper's experiment grid as data, its resumable runner and report.

A grid is a list of `Cell`s (dataset, method, attack, ratio, aggregator,
extra `ExperimentConfig` options). Paper tables and figures are `TableSpec`s:
rows (label, method, aggregator, options, the paper's name of the row)
crossed with each dataset's columns (attack, ratio; A3's ratios differ per
dataset, see `attack_columns`); `paper_cells` is the union of their cells
per dataset. `run_grid` runs every cell in this process (TF/TFF started
once; each dataset loaded once; cells whose builders receive the same
inputs share the built TFF computations), one `training.ExperimentRunner`
per cell in `<runs_dir>/<dataset>/<cell id>/`, skips cells whose
summary.json already has the requested rounds, continues half-finished
cells from their checkpoints, and records cells that cannot run (dataset
absent, method or option not implemented, invalid setting such as Krum with
too many attackers) with the reason. `write_report` turns the results into
REPORT.md with the paper's numbers (every number of its Tables 1-3, from
the package's `paper_tables.csv`) side by side, and the Figure 3-6 PNGs.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.resources
import io
import json
import math
import os
import shutil
import subprocess
import time
import traceback
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional

import pandas as pd

# ----------------------------------------------------------------- the grid

Column = tuple[str, float]

CLEAN: Column = ('none', 0.0)
# Table 1's A1 / A2 columns (every dataset): 20 / 50 / 80 % of devices.
A1_A2_COLUMNS: tuple[Column, ...] = (
    ('a1', 0.2), ('a1', 0.5), ('a1', 0.8),
    ('a2', 0.2), ('a2', 0.5), ('a2', 0.8),
)
# Table 1's A3 ratios: Fashion-MNIST 10 / 20 / 50 %, FEMNIST (and every
# other dataset here) 10 / 15 / 20 %.
DEFAULT_A3_RATIOS = (0.1, 0.15, 0.2)
A3_RATIOS: Mapping[str, tuple[float, ...]] = {'fmnist': (0.1, 0.2, 0.5)}
TERM_TILTS = (0.1, 1.0, 2.0, 5.0)
SOLVER_LAMBDAS = (0.1, 1.0, 2.0)
ROBUST_AGGREGATORS = (
    ('median', 'median'), ('Krum', 'krum'), ('Multi-Krum', 'multi_krum'),
    ('k-norm', 'k_norm'), ('clipping', 'norm_clip'),
)


def a3_ratios(dataset: str) -> tuple[float, ...]:
  """The A3 (model replacement) ratios of `dataset`'s Table 1, ascending."""
  return A3_RATIOS.get(dataset, DEFAULT_A3_RATIOS)


def attack_columns(dataset: str) -> tuple[Column, ...]:
  """Table 1's columns for `dataset`: clean, A1 / A2, then its A3 ratios."""
  return ((CLEAN,) + A1_A2_COLUMNS
          + tuple(('a3', ratio) for ratio in a3_ratios(dataset)))


def strongest_columns(dataset: str) -> tuple[Column, ...]:
  """The strongest column of each attack: A1 and A2 80 %, A3 its largest."""
  return (('a1', 0.8), ('a2', 0.8), ('a3', a3_ratios(dataset)[-1]))


def table3_columns(dataset: str) -> tuple[Column, ...]:
  """The paper's Table 3 columns (FEMNIST: A1, A2 20/80 %, A3 10/20 %).

  A3 at the dataset's smallest and largest Table 1 ratio (Fashion-MNIST,
  absent from the paper's Table 3: 10 and 50 %).
  """
  ratios = a3_ratios(dataset)
  return (('a1', 0.2), ('a1', 0.8), ('a2', 0.2), ('a2', 0.8),
          ('a3', ratios[0]), ('a3', ratios[-1]))


def figure4_columns(dataset: str) -> tuple[Column, ...]:
  """Figure 4's panels: clean, A1 / A2 50 %, A3 at its middle ratio."""
  ratios = a3_ratios(dataset)
  return (CLEAN, ('a1', 0.5), ('a2', 0.5), ('a3', ratios[len(ratios) // 2]))


def is_strong_attack(attack: str, ratio: float) -> bool:
  """Devices' binary 'strong attack' decision used with lam_selection=auto.

  The paper leaves the rule to the devices; here: half or more of the
  devices malicious, or model replacement (A3) at 15 % or more. So of
  Table 1's A3 columns only 10 % is weak (FEMNIST: 15 and 20 % strong;
  Fashion-MNIST: 20 and 50 % strong).
  """
  return (attack != 'none' and ratio >= 0.5) or (attack == 'a3' and
                                                 ratio >= 0.15)


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run: a method on a dataset under one attack and aggregator.

  Attributes:
    dataset: `tff_ditto.data.load_dataset` name.
    method: `run_experiment.py --method` value.
    attack: 'none', 'a1', 'a2' or 'a3'.
    ratio: Fraction of all devices that are malicious.
    aggregator: Server aggregation rule.
    options: Extra `ExperimentConfig` fields, sorted (name, value) pairs.
  """

  dataset: str
  method: str
  attack: str = 'none'
  ratio: float = 0.0
  aggregator: str = 'mean'
  options: tuple[tuple[str, Any], ...] = ()

  @property
  def cell_id(self) -> str:
    """A directory name unique to the cell (dataset excluded)."""
    parts = [self.method, f'{self.attack}{int(round(100 * self.ratio)):02d}',
             self.aggregator]
    parts += [f'{name}-{_option_text(value)}' for name, value in self.options]
    return '_'.join(str(p) for p in parts)


def _option_text(value: Any) -> str:
  """An option value in a cell id: a tuple as its entries joined by '+'."""
  if isinstance(value, tuple):
    return '+'.join(str(entry) for entry in value)
  return str(value)


def _canonical(value: Any) -> Any:
  """Option values as in the cell id (1 and 1.0 are one cell).

  Sequences become tuples of canonical entries (hashable, as a cell must
  be).
  """
  if isinstance(value, (tuple, list)):
    return tuple(_canonical(entry) for entry in value)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return value
  return float(value)


_NO_DEFAULT = object()


def _default_option_value(dataset: str, name: str) -> Any:
  """What `name` is in a cell of `dataset` that does not set it.

  The dataset's preset value, else the `ExperimentConfig` default, else
  `_NO_DEFAULT` (not a config field: the cell cannot run, see
  `cell_config`).
  """
  from tff_ditto import experiment_defaults  # pylint: disable=g-import-not-at-top
  from tff_ditto import training_config  # pylint: disable=g-import-not-at-top
  preset = experiment_defaults.preset_for(dataset)
  if name in preset:
    return preset[name]
  fields = {f.name: f for f in
            dataclasses.fields(training_config.ExperimentConfig)}
  if name not in fields or fields[name].default is dataclasses.MISSING:
    return _NO_DEFAULT
  return fields[name].default


def make_cell(dataset: str, method: str, attack: str = 'none',
              ratio: float = 0.0, aggregator: str = 'mean',
              options: Optional[Mapping[str, Any]] = None) -> Cell:
  """The cell; options equal to what the cell runs with anyway are dropped.

  So Figure 6's 'joint lambda=1' is Table 1's Ditto cell (lambda 1 is every
  preset's), one run and one id, not two runs of one configuration.
  """
  kept = {name: _canonical(value) for name, value in (options or {}).items()
          if _canonical(value) != _canonical(
              _default_option_value(dataset, name))}
  return Cell(dataset, method, attack, float(ratio), aggregator,
              tuple(sorted(kept.items())))


# The paper's Ditto selects lambda per device on validation data (Section
# 4, "Setup"); a fixed-lambda Ditto row marks the paper's number with this.
PER_DEVICE_LAMBDA = 'per-device lambda'


@dataclasses.dataclass(frozen=True)
class Row:
  """A table row: a label and what runs it (options may depend on column).

  Attributes:
    label: The row's name in the report.
    method: `run_experiment.py --method` value.
    aggregator: Server aggregation rule.
    options: Extra `ExperimentConfig` fields.
    options_fn: (attack, ratio) -> more options, per column.
    paper_method: The method name under which `paper_tables.csv` lists the
      paper's number for this row (None: the paper prints none).
    paper_note: Shown beside the paper's number when the paper's method
      differs from what the row runs (e.g. `PER_DEVICE_LAMBDA`).
  """

  label: str
  method: str
  aggregator: str = 'mean'
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  options_fn: Optional[Callable[[str, float], Mapping[str, Any]]] = None
  paper_method: Optional[str] = None
  paper_note: str = ''

  def cell(self, dataset: str, attack: str, ratio: float) -> Cell:
    options = dict(self.options)
    if self.options_fn is not None:
      options.update(self.options_fn(attack, ratio))
    return make_cell(dataset, self.method, attack, ratio, self.aggregator,
                     options)


@dataclasses.dataclass(frozen=True)
class TableSpec:
  """A paper table: rows x columns (attack, ratio), columns per dataset."""

  key: str
  title: str
  rows: tuple[Row, ...]
  columns_fn: Callable[[str], tuple[Column, ...]]

  def columns(self, dataset: str) -> tuple[Column, ...]:
    """The table's (attack, ratio) columns for `dataset`."""
    return self.columns_fn(dataset)


def _fixed_columns(
    *columns: Column) -> Callable[[str], tuple[Column, ...]]:
  """A `TableSpec.columns_fn` giving every dataset the same columns."""
  return lambda dataset: columns


def _auto_lambda(attack: str, ratio: float) -> dict[str, Any]:
  return dict(lam_selection='auto',
              strong_attack=is_strong_attack(attack, ratio))


def _ditto_lambda_1() -> Row:
  """Ditto with the preset's fixed lambda = 1 beside the paper's Ditto."""
  return Row('Ditto (lambda=1)', 'ditto', paper_method='ditto',
             paper_note=PER_DEVICE_LAMBDA)


TABLE1 = TableSpec(
    'table1',
    'Table 1: robustness (benign devices) under A1 / A2 / A3',
    (Row('Global', 'global', paper_method='global'),
     Row('Local', 'local', paper_method='local'),
     Row('Fair (TERM, t=1)', 'term', options=dict(term_t=1.0),
         paper_method='term_t1'))
    + tuple(Row(f'Robust ({label})', 'global', aggregator)
            for label, aggregator in ROBUST_AGGREGATORS)
    + (_ditto_lambda_1(),
       Row('Ditto (lambda auto)', 'ditto', options_fn=_auto_lambda,
           paper_method='ditto')),
    attack_columns,
)
TABLE2 = TableSpec(
    'table2',
    'Table 2: Ditto vs personalization methods',
    (Row('Global', 'global', paper_method='global'),
     Row('Local', 'local', paper_method='local'),
     Row('Plain finetuning', 'finetune', paper_method='finetune'),
     Row('L2SGD', 'l2sgd', paper_method='l2sgd'),
     Row('EWC', 'ewc', paper_method='ewc'),
     Row('SKL', 'skl', paper_method='skl'),
     Row('Per-FedAvg', 'perfedavg', paper_method='perfedavg'),
     Row('APFL', 'apfl', paper_method='apfl'),
     Row('Mapper', 'mapper', paper_method='mapper'),
     _ditto_lambda_1()),
    _fixed_columns(CLEAN, ('a1', 0.5), ('a2', 0.5), ('a3', 0.2)),
)
# The paper's Table 3 (FEMNIST only) prints global, clipping, Ditto and
# Ditto + clipping; its other aggregators are in the appendix (not here).
PAPER_TABLE3_AGGREGATORS = ('norm_clip',)


def _table3_rows(label: str, aggregator: str) -> tuple[Row, Row]:
  """An aggregator's Table 3 rows: global and Ditto under it.

  The paper's names of the two are the aggregator's and 'ditto+' + it.
  """
  printed = aggregator in PAPER_TABLE3_AGGREGATORS
  return (Row(label, 'global', aggregator,
              paper_method=aggregator if printed else None),
          Row(f'Ditto + {label}', 'ditto', aggregator,
              paper_method=f'ditto+{aggregator}' if printed else None,
              paper_note=PER_DEVICE_LAMBDA if printed else ''))


TABLE3 = TableSpec(
    'table3',
    'Table 3: Ditto combined with robust aggregators',
    (Row('Global', 'global', paper_method='global'), _ditto_lambda_1())
    + tuple(row for label, aggregator in ROBUST_AGGREGATORS
            for row in _table3_rows(label, aggregator)),
    table3_columns,
)
# Figure 5: TERM's tilt t under A1; Figure 6: joint (Ditto) vs fine-tuning
# solver of the same objective under A3 20 %, per lambda. The paper plots
# them without numbers; the rows Table 1 has show Table 1's.
FIGURE5 = TableSpec(
    'figure5', 'Figure 5: fair method (TERM) under A1 as t grows',
    tuple(Row(f'TERM t={t}', 'term', options=dict(term_t=t),
              paper_method='term_t1' if t == 1.0 else None)
          for t in TERM_TILTS) + (_ditto_lambda_1(),),
    _fixed_columns(('a1', 0.2), ('a1', 0.5), ('a1', 0.8)),
)
FIGURE6 = TableSpec(
    'figure6', 'Figure 6: joint vs fine-tuning solver under A3 20%',
    tuple(Row(f'joint lambda={lam}', 'ditto', options=dict(lam=lam))
          for lam in SOLVER_LAMBDAS)
    + tuple(Row(f'finetune lambda={lam}', 'finetune',
                options=dict(finetune_lam=lam)) for lam in SOLVER_LAMBDAS),
    _fixed_columns(('a3', 0.2)),
)
PAPER_SPECS = (TABLE1, TABLE2, TABLE3, FIGURE5, FIGURE6)

# Every number of the paper's Tables 1-3 (package data; the file's first
# line names its source): table, dataset, method, column, mean, std.
PAPER_TABLES_CSV = 'paper_tables.csv'


@dataclasses.dataclass(frozen=True)
class PaperNumber:
  """One number of the paper's tables: mean (std) over benign devices.

  Attributes:
    mean: Mean per-device test accuracy.
    std: Its standard deviation across devices (None: not printed).
    table: The paper table printing it ('table1', 'table2', 'table3').
  """

  mean: float
  std: Optional[float]
  table: str


# (table, dataset, paper method, attack, ratio) -> the paper's number.
PaperKey = tuple[str, str, str, str, float]


def paper_column(text: str) -> Column:
  """A `paper_tables.csv` column ('clean', 'a3:0.15') as (attack, ratio)."""
  return CLEAN if text == 'clean' else parse_column(text)


def read_paper_tables() -> pd.DataFrame:
  """The package's copy of the paper's Tables 1-3, one row per number."""
  text = importlib.resources.files('tff_ditto').joinpath(
      PAPER_TABLES_CSV).read_text()
  return pd.read_csv(io.StringIO(text), comment='#')


@functools.lru_cache(maxsize=1)
def paper_numbers() -> Mapping[PaperKey, PaperNumber]:
  """Every number of the paper's Tables 1-3, by `PaperKey`."""
  numbers = {}
  for record in read_paper_tables().to_dict('records'):
    attack, ratio = paper_column(record['column'])
    std = None if pd.isna(record['std']) else float(record['std'])
    numbers[(record['table'], record['dataset'], record['method'], attack,
             ratio)] = PaperNumber(float(record['mean']), std,
                                   record['table'])
  return types.MappingProxyType(numbers)


def paper_cells(datasets: Sequence[str],
                specs: Sequence[TableSpec] = PAPER_SPECS) -> list[Cell]:
  """The union of all specs' cells for each dataset, in a stable order."""
  cells, seen = [], set()
  for dataset in datasets:
    for spec in specs:
      for attack, ratio in spec.columns(dataset):
        for row in spec.rows:
          cell = row.cell(dataset, attack, ratio)
          if cell not in seen:
            seen.add(cell)
            cells.append(cell)
  return cells


def spec_by_key(key: str) -> TableSpec:
  """The paper table or figure named `key` ('table1', ..., 'figure6').

  Raises:
    ValueError: for an unknown key (the message lists the known ones).
  """
  for spec in PAPER_SPECS:
    if spec.key == key:
      return spec
  raise ValueError(f'unknown table {key!r}; known: '
                   f'{", ".join(spec.key for spec in PAPER_SPECS)}')


def parse_column(text: str) -> tuple[str, float]:
  """'a1:0.5' or 'none' -> ('a1', 0.5) / ('none', 0.0).

  Raises:
    ValueError: when the text is not 'attack:ratio' with a number in [0, 1].
  """
  if text == 'none':
    return CLEAN
  attack, _, ratio = text.partition(':')
  try:
    value = float(ratio)
  except ValueError:
    value = -1.0
  if not attack or not 0.0 <= value <= 1.0:
    raise ValueError(f'column {text!r} is not attack:ratio (e.g. a1:0.5) '
                     'or none')
  return attack, value


def parse_rounds(
    entries: Sequence[str]) -> tuple[Optional[int], dict[str, int]]:
  """--rounds entries -> (rounds for every dataset, rounds per dataset).

  Args:
    entries: Each '300' (every dataset not named) or 'femnist:300'.

  Returns:
    (default, {dataset: rounds}); default None when no bare number is given
    (the dataset presets).

  Raises:
    ValueError: On an entry that is not a positive integer with an optional
      'dataset:' prefix, or a dataset or the default given twice.
  """
  default, per_dataset = None, {}
  for entry in entries:
    dataset, _, number = entry.rpartition(':')
    if not number.isdigit() or int(number) < 1:
      raise ValueError(f'rounds entry {entry!r} is not a positive integer '
                       'or dataset:integer (e.g. 300 or femnist:300)')
    if dataset in per_dataset or (not dataset and default is not None):
      raise ValueError(f'rounds given twice for '
                       f'{dataset or "every dataset"} ({entry!r})')
    if dataset:
      per_dataset[dataset] = int(number)
    else:
      default = int(number)
  return default, per_dataset


ColumnsFn = Callable[[str], Sequence[Column]]


def parse_columns(texts: Sequence[str]) -> ColumnsFn:
  """--columns entries -> each dataset's selected columns, in order.

  Args:
    texts: Each 'attack:ratio', 'none', or 'strongest': the dataset's
      `strongest_columns` (A1 80 %, A2 80 %, A3 at its largest ratio:
      50 % on Fashion-MNIST, 20 % elsewhere).

  Returns:
    dataset -> its (attack, ratio) columns, first occurrence first.

  Raises:
    ValueError: On an entry `parse_column` rejects.
  """
  parsed = [None if text == 'strongest' else parse_column(text)
            for text in texts]

  def columns_for(dataset: str) -> tuple[Column, ...]:
    expanded = []
    for column in parsed:
      expanded += (strongest_columns(dataset) if column is None
                   else [column])
    return tuple(dict.fromkeys(expanded))

  return columns_for


def select_cells(cells: Sequence[Cell], *,
                 methods: Optional[Sequence[str]] = None,
                 aggregators: Optional[Sequence[str]] = None,
                 columns: Optional[Sequence[Column] | ColumnsFn] = None,
                 plain_only: bool = False) -> list[Cell]:
  """The cells matching every given filter, ordered by `columns` if given.

  Args:
    cells: The grid, e.g. from `paper_cells`.
    methods: Keep these methods (None: all).
    aggregators: Keep these server aggregators (None: all).
    columns: Keep these (attack, ratio) columns, and run them in this order
      (the stable grid order within a column), e.g. strongest attacks first;
      or dataset -> its columns (`parse_columns`), ordered by position.
    plain_only: Drop cells with extra options (e.g. per-device lambda or
      TERM's tilt), keeping each method's default configuration.

  Returns:
    The selected cells.
  """
  if columns is None or callable(columns):
    columns_for = columns
  else:
    columns_for = lambda dataset: columns

  def position(cell: Cell) -> Optional[int]:
    """The cell's column's place in its dataset's selection (None: not)."""
    order = list(columns_for(cell.dataset))
    column = (cell.attack, cell.ratio)
    return order.index(column) if column in order else None

  def keep(cell: Cell) -> bool:
    return ((methods is None or cell.method in methods)
            and (aggregators is None or cell.aggregator in aggregators)
            and (columns_for is None or position(cell) is not None)
            and not (plain_only and cell.options))

  selected = [cell for cell in cells if keep(cell)]
  if columns_for is not None:
    selected.sort(key=position)
  return selected


# ------------------------------------------------------- data availability

NOT_RUN_DATASETS = {
    'celeba': 'LEAF CelebA needs the img_align_celeba images (not in the '
              'data directory)',
}


def available_datasets(data_dir: Optional[str]) -> tuple[list[str],
                                                         dict[str, str]]:
  """Which of the paper's datasets can run from `data_dir`.

  Returns:
    (datasets to run, {dataset: why not} for the others). Synthetic(1, 1)
    replaces the real data only when none of it is present.
  """
  present, absent = [], {}
  base = data_dir or ''
  femnist = os.path.join(base, 'femnist', 'train')
  if data_dir and os.path.isdir(femnist):
    present.append('femnist')
  else:
    absent['femnist'] = f'{femnist} not found'
  vehicle = os.path.join(base, 'vehicle', 'train')
  if data_dir and os.path.isdir(vehicle):
    present.append('vehicle')
  else:
    absent['vehicle'] = f'{vehicle} not found'
  fmnist_source = None
  if data_dir:
    from tff_ditto.data import fashion_mnist  # pylint: disable=g-import-not-at-top
    for folder in ('fmnist', 'fashion_mnist', 'fashion-mnist'):
      candidate = os.path.join(base, folder)
      if os.path.isdir(candidate):
        fmnist_source = fashion_mnist.detect_source(candidate)
        if fmnist_source:
          break
  if fmnist_source:
    present.append('fmnist')
  else:
    absent['fmnist'] = 'no Fashion-MNIST raw files (idx or npz) found'
  celeba_images = os.path.join(base, 'celeba', 'data', 'raw',
                               'img_align_celeba')
  if data_dir and os.path.isdir(celeba_images):
    present.append('celeba')
  else:
    absent['celeba'] = NOT_RUN_DATASETS['celeba']
  if not [d for d in present if d != 'celeba']:
    present.append('synthetic')
  return present, absent


# ----------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """How every cell runs.

  Attributes:
    data_dir: Root of the real data.
    runs_dir: Where cells write (`<runs_dir>/<dataset>/<cell id>/`).
    rounds: Rounds per cell (None: the dataset preset).
    dataset_rounds: Rounds per cell of the named datasets, over `rounds`
      (e.g. {'femnist': 300}; see `parse_rounds`).
    eval_every: Evaluation period (None: preset).
    max_clients: Keep only the first N clients (None: all).
    seed: Seed of every cell.
    keep_checkpoints: Keep checkpoints and client states of finished cells
      (they are large: one model per client).
    reuse_computations: Cells whose process or evaluation builders receive
      the same inputs share the built computations (one
      `training.ComputationCache` per grid); False builds them per cell.
    config_overrides: `ExperimentConfig` fields set in every cell (over the
      dataset preset, under the cell's own options), e.g.
      `QUICK_CONFIG_OVERRIDES`.
    derive_rows: Run one Ditto cell per Table 1 column
      (`derived_source_cell`: per-device lambda with report lambdas) instead
      of the column's Global, Local, Ditto (lambda=1) and Ditto (lambda auto)
      cells (and Figure 6's joint-solver cells in its column), and report
      those rows from it (`plan_derived_rows`). A cell whose folder already
      holds a run (finished or not) still runs and reports on its own.
  """

  def rounds_for(self, dataset: str) -> Optional[int]:
    """Rounds per cell of `dataset` (None: its preset)."""
    return self.dataset_rounds.get(dataset, self.rounds)

  def describe_rounds(self) -> str:
    """'300 rounds per cell', 'femnist 300, vehicle preset rounds', ..."""
    default = (f'{self.rounds} rounds per cell' if self.rounds is not None
               else 'preset rounds per dataset')
    if not self.dataset_rounds:
      return default
    named = ', '.join(f'{dataset} {rounds} rounds'
                      for dataset, rounds in self.dataset_rounds.items())
    return f'{named}; other datasets: {default}'

  data_dir: Optional[str]
  runs_dir: str
  rounds: Optional[int] = None
  dataset_rounds: Mapping[str, int] = dataclasses.field(default_factory=dict)
  eval_every: Optional[int] = None
  max_clients: Optional[int] = None
  seed: int = 0
  keep_checkpoints: bool = False
  reuse_computations: bool = True
  config_overrides: Mapping[str, Any] = dataclasses.field(
      default_factory=dict)
  derive_rows: bool = False


# What `scripts/reproduce.py --quick` changes besides rounds and clients: a
# smoke test of the pipeline needs every code path, not the full work per
# round (fewer clients per round, local and fine-tuning steps).
QUICK_CONFIG_OVERRIDES = dict(clients_per_round=5, local_steps=2,
                              finetune_steps=5)


def describe_overrides(overrides: Mapping[str, Any]) -> str:
  """'name=value, ...' of config overrides, for help texts and reports."""
  return ', '.join(f'{name}={value}' for name, value in overrides.items())


def _config_fields() -> set[str]:
  from tff_ditto import training_config  # pylint: disable=g-import-not-at-top
  return {f.name for f in dataclasses.fields(training_config.ExperimentConfig)}


def _available_methods() -> tuple[str, ...]:
  from tff_ditto import training_config  # pylint: disable=g-import-not-at-top
  return tuple(training_config.METHODS)


def cell_config(cell: Cell, settings: RunSettings):
  """The validated ExperimentConfig of a cell, or a reason it cannot run.

  Returns:
    (config, None) or (None, 'not run: ...').
  """
  from tff_ditto import experiment_defaults  # pylint: disable=g-import-not-at-top
  if cell.method not in _available_methods():
    return None, f'not run: method unavailable ({cell.method})'
  missing = [name for name, _ in cell.options if name not in _config_fields()]
  if missing:
    return None, f'not run: option unavailable ({", ".join(missing)})'
  rounds = settings.rounds_for(cell.dataset)
  overrides = dict(attack=cell.attack, attack_ratio=cell.ratio,
                   aggregator=cell.aggregator, seed=settings.seed,
                   rounds=rounds, eval_every=settings.eval_every)
  overrides.update(settings.config_overrides)
  overrides.update(dict(cell.options))
  if rounds is not None and settings.eval_every is None:
    overrides['eval_every'] = rounds
  try:
    (config,) = experiment_defaults.build_configs(cell.dataset, [cell.method],
                                                  overrides)
  except (ValueError, TypeError) as error:
    return None, f'not run: {error}'
  return config, None


# Fraction of each client's training data every cell holds out for
# validation (per-device lambda selection and tuning).
VALIDATION_FRACTION = 0.1


def dataset_settings(cell: Cell, settings: RunSettings) -> dict[str, Any]:
  """How a cell's dataset is loaded: `load_dataset` keyword arguments.

  Recorded in the cell's `cell.json` so that a finished cell can be loaded
  again (e.g. by `scripts/evaluate_run.py`) without the grid's flags.
  """
  return dict(
      name=cell.dataset,
      data_dir=(None if cell.dataset.startswith('synthetic')
                or settings.data_dir is None
                else os.path.realpath(settings.data_dir)),
      validation_fraction=VALIDATION_FRACTION, seed=settings.seed,
      max_clients=settings.max_clients)


def cell_dir(cell: Cell, settings: RunSettings) -> str:
  return os.path.join(settings.runs_dir, cell.dataset, cell.cell_id)


# Config fields a cell may change between invocations: asking for more
# rounds continues a finished cell (and the evaluation period follows them).
_RESUMABLE_CONFIG_FIELDS = ('rounds', 'eval_every')


def recorded_config_values(config) -> dict[str, Any]:
  """The JSON form of the config a cell runs with, as its files record it."""
  from tff_ditto import training_config  # pylint: disable=g-import-not-at-top
  return json.loads(json.dumps(dataclasses.asdict(
      training_config.effective_config(config))))


def _read_record(directory: str, name: str) -> dict[str, Any]:
  """A cell folder's JSON file (cell.json, summary.json), {} when absent."""
  path = os.path.join(directory, name)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _config_differences(recorded: Mapping[str, Any], config) -> list[str]:
  """'name recorded (now value)' for each config field that changed.

  A field missing from the record was added to `ExperimentConfig` after the
  cell ran; the cell ran with the behaviour of that time: the field's
  `training_config.VALUES_BEFORE_FIELD_EXISTED` entry, else its default (new
  fields usually keep the old behaviour by default), so it is compared as
  that.
  """
  from tff_ditto import training_config  # pylint: disable=g-import-not-at-top
  defaults = recorded_config_values(training_config.ExperimentConfig(
      method=config.method))
  defaults.update(training_config.VALUES_BEFORE_FIELD_EXISTED)
  differences = []
  for name, value in recorded_config_values(config).items():
    before = recorded.get(name, defaults[name])
    if name not in _RESUMABLE_CONFIG_FIELDS and before != value:
      differences.append(f'{name} {before!r} (now {value!r})')
  return differences


def recorded_settings_mismatch(directory: str, cell: Cell, config,
                               settings: RunSettings) -> Optional[str]:
  """Why the cell's folder holds a run of other settings, or None.

  A cell's id names its dataset, method, attack and options, not the grid's
  settings (clients kept, seed, `config_overrides` such as --quick's);
  reusing or resuming a cell run under other settings would mix them up.
  The data folder itself is not compared: it may move, or be reached by
  another path.

  Args:
    directory: The cell's folder (`cell_dir`).
    cell: The cell.
    config: The `ExperimentConfig` it would run with now.
    settings: The grid's settings now.

  Returns:
    None when nothing recorded contradicts the settings, else a
    'failed: ...' status naming the differences.
  """
  differences = []
  cell_record = _read_record(directory, 'cell.json')
  recorded = cell_record.get('dataset_settings')
  if recorded is not None:
    now = dataset_settings(cell, settings)
    differences += [f'{name} {recorded.get(name)!r} (now {value!r})'
                    for name, value in now.items()
                    if name != 'data_dir' and recorded.get(name) != value]
  # The summary's config, else the one cell.json records when the cell
  # starts (an unfinished cell; cells started by older code recorded only
  # the dataset settings, and then there is nothing to compare until the
  # summary).
  recorded_config = _read_record(directory, 'summary.json').get('config')
  if recorded_config is None:
    recorded_config = cell_record.get('config')
  if recorded_config is not None:
    differences += _config_differences(recorded_config, config)
  if not differences:
    return None
  return (f'failed: {directory} holds a run with other settings: '
          + ', '.join(differences) + '; move it away or use another '
          '--runs_dir')


def _finished_summary(directory: str, rounds: int) -> Optional[dict]:
  summary = _read_record(directory, 'summary.json')
  return summary if summary and summary.get('rounds') == rounds else None


def _result_row(cell: Cell, status: str, summary: Optional[dict] = None,
                seconds: float = float('nan'), source_cell: str = '',
                accuracy_column: str = 'accuracy') -> dict[str, Any]:
  """One row of the grid's results.

  Args:
    cell: The cell.
    status: 'done', 'skipped (finished)', `DERIVED_STATUS` or
      '<not run|pending|failed>: reason'.
    summary: Its summary.json (None: no results).
    seconds: Time it took here.
    source_cell: For a derived row, the id of the cell that ran it ('' for
      a cell run on its own).
    accuracy_column: The column of the running cell's client_metrics.csv
      with the row's per-client accuracy.

  Returns:
    The row.
  """
  row = dict(dataset=cell.dataset, method=cell.method, attack=cell.attack,
             ratio=cell.ratio, aggregator=cell.aggregator,
             options=json.dumps(dict(cell.options), sort_keys=True),
             cell_id=cell.cell_id, status=status, source_cell=source_cell,
             accuracy_column=accuracy_column)
  final = (summary or {}).get('final', {})
  for name in ('benign_mean_accuracy', 'benign_std_accuracy',
               'benign_pooled_accuracy', 'benign_worst10_accuracy'):
    row[name] = final.get(name, float('nan'))
  row['rounds'] = (summary or {}).get('rounds')
  row['seconds'] = seconds
  return row


# ------------------------------------------------------------ derived rows

# Status of a row read from its column's derived Ditto cell.
DERIVED_STATUS = 'derived'
# Statuses of rows with results.
FINISHED_STATUSES = ('done', 'skipped (finished)', DERIVED_STATUS)
# The report lambdas of a column's derived Ditto cell: Local's 0 and the
# fixed-lambda row's 1 (under a strong attack the candidates are {0.05, 0.1,
# 0.2}, without them); in Figure 6's column also its joint-solver lambdas.
DERIVED_REPORT_LAMBDAS = (0.0, 1.0)


def derived_source_cell(dataset: str, attack: str, ratio: float) -> Cell:
  """The one Ditto cell of a Table 1 column that its derivable rows read.

  Per-device lambda (as Table 1's Ditto (lambda auto) row) with report
  lambdas `DERIVED_REPORT_LAMBDAS`, plus `SOLVER_LAMBDAS` in Figure 6's
  column: its global model is the Global row, its lambda 0 and 1 models the
  Local and Ditto (lambda=1) rows, its selected models the Ditto (lambda
  auto) row (`training_config.derived_result`).

  Args:
    dataset: The dataset.
    attack: The column's attack.
    ratio: Its ratio.

  Returns:
    The cell.
  """
  lambdas = set(DERIVED_REPORT_LAMBDAS)
  if (attack, ratio) in FIGURE6.columns(dataset):
    lambdas |= set(SOLVER_LAMBDAS)
  return make_cell(dataset, 'ditto', attack, ratio,
                   options=dict(_auto_lambda(attack, ratio),
                                report_lambdas=tuple(sorted(lambdas))))


@dataclasses.dataclass(frozen=True)
class DerivedRow:
  """A cell whose results are read from another cell's run.

  Attributes:
    target: The cell reported.
    source: The cell that runs (`derived_source_cell`).
    summary_prefix: Where the target's summary is in the source's.
    accuracy_column: Where its per-client accuracy is in the source's
      client_metrics.csv.
  """

  target: Cell
  source: Cell
  summary_prefix: str
  accuracy_column: str


def _derivation(cell: Cell, settings: RunSettings) -> Optional[DerivedRow]:
  """How `cell` is read from its column's derived Ditto cell, or None.

  Only cells with the mean aggregator on a Table 1 column, whose config the
  source's run holds exactly (`training_config.derived_result`).
  """
  from tff_ditto import training_config  # pylint: disable=g-import-not-at-top
  if (cell.aggregator != 'mean'
      or (cell.attack, cell.ratio) not in attack_columns(cell.dataset)):
    return None
  source = derived_source_cell(cell.dataset, cell.attack, cell.ratio)
  if source == cell:
    return None
  target_config, _ = cell_config(cell, settings)
  source_config, _ = cell_config(source, settings)
  if target_config is None or source_config is None:
    return None
  where = training_config.derived_result(target_config, source_config)
  if where is None:
    return None
  return DerivedRow(cell, source, where.summary_prefix, where.accuracy_column)


def _has_own_run(cell: Cell, settings: RunSettings) -> bool:
  """Whether the cell's folder holds a run of its own (finished or not)."""
  directory = cell_dir(cell, settings)
  return os.path.isdir(directory) and bool(os.listdir(directory))


def plan_derived_rows(
    cells: Sequence[Cell], settings: RunSettings
) -> tuple[list[Cell], list[DerivedRow]]:
  """The cells to run, and the cells read from their column's Ditto cell.

  A derivable cell (`_derivation`) without a run of its own is replaced by
  its column's `derived_source_cell`, run once, where the first cell it
  serves was; every other cell runs (or is skipped, or resumed) as without
  derived rows, so grids holding separate cells keep reporting them.

  Args:
    cells: The grid.
    settings: How cells run.

  Returns:
    (cells to run, rows to derive after the run).
  """
  to_run, derived, seen = [], [], set()

  def add(cell: Cell) -> None:
    if cell not in seen:
      seen.add(cell)
      to_run.append(cell)

  for cell in cells:
    derivation = _derivation(cell, settings)
    if derivation is None or _has_own_run(cell, settings):
      add(cell)
    else:
      derived.append(derivation)
      add(derivation.source)
  return to_run, derived


def _derived_summary(source_summary: Mapping[str, Any],
                     prefix: str) -> dict[str, Any]:
  """The source's summary with the target's entries named 'benign_<name>'."""
  final = {f'benign_{key[len(prefix):]}': value
           for key, value in source_summary.get('final', {}).items()
           if key.startswith(prefix)}
  return dict(final=final, rounds=source_summary.get('rounds'))


def derived_result_row(row: DerivedRow, source_status: str,
                       settings: RunSettings) -> dict[str, Any]:
  """The result row of a derived cell, from its source cell's run.

  Args:
    row: The derivation.
    source_status: The source cell's status in this grid.
    settings: How cells ran.

  Returns:
    A `_result_row` with status `DERIVED_STATUS` and `source_cell` set, or,
    when the source has no results, the source's status kind with the
    reason (e.g. 'pending: from <source id>: not run yet').
  """
  source_id = row.source.cell_id
  summary = _read_record(cell_dir(row.source, settings), 'summary.json')
  if source_status in FINISHED_STATUSES and summary:
    return _result_row(row.target, DERIVED_STATUS,
                       _derived_summary(summary, row.summary_prefix),
                       source_cell=source_id,
                       accuracy_column=row.accuracy_column)
  kind, _, reason = source_status.partition(':')
  return _result_row(row.target,
                     f'{kind}: from {source_id}: {reason.strip() or kind}',
                     source_cell=source_id,
                     accuracy_column=row.accuracy_column)


class _GridResources:
  """What a grid's cells share: TFF runtime, datasets, model_fns and cache.

  One dataset and one model_fn per dataset name (the cache keys models by
  identity), and one `training.ComputationCache` unless
  `settings.reuse_computations` is False.
  """

  def __init__(self, settings: RunSettings):
    self.settings = settings
    self.cache = None
    self._started = False
    self._datasets: dict[str, Any] = {}
    self._model_fns: dict[str, Callable[[], Any]] = {}

  def start(self) -> None:
    """Starts the TFF runtime (once) and creates the cache."""
    if self._started:
      return
    from tff_ditto import runtime  # pylint: disable=g-import-not-at-top
    from tff_ditto import training  # pylint: disable=g-import-not-at-top
    runtime.set_quiet_logs(0)
    runtime.configure_local_execution(2)
    if self.settings.reuse_computations:
      self.cache = training.ComputationCache()
    self._started = True

  def runner(self, cell: Cell, config, directory: str, resume: bool):
    """The cell's `training.ExperimentRunner` (loads its dataset once).

    Args:
      cell: The cell.
      config: Its `ExperimentConfig` (`cell_config`).
      directory: Its output directory.
      resume: Continue from its checkpoints.

    Returns:
      The runner, built with the grid's cache and the dataset's model_fn.
    """
    from tff_ditto import models  # pylint: disable=g-import-not-at-top
    from tff_ditto import training  # pylint: disable=g-import-not-at-top
    from tff_ditto.data import load_dataset  # pylint: disable=g-import-not-at-top
    settings = self.settings
    if cell.dataset not in self._datasets:
      self._datasets[cell.dataset] = load_dataset(
          **dataset_settings(cell, settings))
      self._model_fns[cell.dataset] = models.get_model_spec(
          cell.dataset, seed=settings.seed).tff_model_fn()
    return training.ExperimentRunner(
        config, self._datasets[cell.dataset], self._model_fns[cell.dataset],
        directory, resume=resume, log_fn=None, computation_cache=self.cache)


def run_grid(cells: Sequence[Cell], settings: RunSettings,
             unavailable_datasets: Optional[Mapping[str, str]] = None,
             log_fn: Callable[[str], None] = print,
             run_missing: bool = True) -> pd.DataFrame:
  """Runs (or skips, or resumes) every cell; returns one result row per cell.

  Writes `<runs_dir>/cells.csv` after every cell. A cell whose run raises is
  recorded as 'failed: ...' and the grid goes on.

  Args:
    cells: The grid.
    settings: How cells run.
    unavailable_datasets: {dataset: reason}; their cells are 'not run'.
    log_fn: Progress lines.
    run_missing: False: only collect finished cells (the others are
      'pending: not run yet'), e.g. to report on a grid still running.

  Returns:
    DataFrame of results: status is 'done', 'skipped (finished)',
    'not run: ...' or 'failed: ...'; with `settings.derive_rows` also the
    derived cells (`plan_derived_rows`), after the others: status
    `DERIVED_STATUS` (or their source's status kind and reason) and
    `source_cell` naming the cell that ran them.
  """
  unavailable_datasets = dict(unavailable_datasets or {})
  os.makedirs(settings.runs_dir, exist_ok=True)
  derived = []
  if settings.derive_rows:
    cells, derived = plan_derived_rows(cells, settings)
  rows, resources = [], _GridResources(settings)
  csv_path = os.path.join(settings.runs_dir, 'cells.csv')
  for index, cell in enumerate(cells):
    prefix = f'[{index + 1}/{len(cells)}] {cell.dataset} {cell.cell_id}'
    if cell.dataset in unavailable_datasets:
      rows.append(_result_row(
          cell, f'not run: {unavailable_datasets[cell.dataset]}'))
      continue
    config, reason = cell_config(cell, settings)
    if config is None:
      log_fn(f'{prefix}: {reason}')
      rows.append(_result_row(cell, reason))
      pd.DataFrame(rows).to_csv(csv_path, index=False)
      continue
    directory = cell_dir(cell, settings)
    mismatch = recorded_settings_mismatch(directory, cell, config, settings)
    if mismatch is not None:
      log_fn(f'{prefix}: {mismatch}')
      rows.append(_result_row(cell, mismatch))
      continue
    summary = _finished_summary(directory, config.rounds)
    if summary is not None:
      log_fn(f'{prefix}: finished before; skipped')
      rows.append(_result_row(cell, 'skipped (finished)', summary,
                              summary.get('seconds', float('nan'))))
      continue
    if not run_missing:
      rows.append(_result_row(cell, 'pending: not run yet'))
      continue
    resources.start()
    start = time.monotonic()
    try:
      resume = os.path.isdir(directory) and bool(os.listdir(directory))
      log_fn(f'{prefix}: {"resuming" if resume else "running"} '
             f'{config.rounds} rounds')
      runner = resources.runner(cell, config, directory, resume)
      with open(os.path.join(directory, 'cell.json'), 'w') as f:
        json.dump(dict(dataclasses.asdict(cell),
                       dataset_settings=dataset_settings(cell, settings),
                       config=recorded_config_values(config)),
                  f, indent=2)
      summary = runner.run()
      del runner
      if not settings.keep_checkpoints:
        for name in ('checkpoints', 'client_states'):
          shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
      rows.append(_result_row(cell, 'done', summary,
                              time.monotonic() - start))
      final = summary['final']
      log_fn(f'{prefix}: benign mean {final["benign_mean_accuracy"]:.4f} '
             f'(std {final["benign_std_accuracy"]:.4f}), '
             f'{time.monotonic() - start:.0f} s')
    except Exception as error:  # pylint: disable=broad-except
      message = f'{type(error).__name__}: {error}'.splitlines()[0][:200]
      log_fn(f'{prefix}: failed: {message}')
      with open(os.path.join(settings.runs_dir, 'failures.log'), 'a') as f:
        f.write(f'{prefix}\n{traceback.format_exc()}\n')
      rows.append(_result_row(cell, f'failed: {message}', None,
                              time.monotonic() - start))
    pd.DataFrame(rows).to_csv(csv_path, index=False)
  if resources.cache is not None:
    log_fn(f'computation cache: {resources.cache.describe()}')
  statuses = {(row['dataset'], row['cell_id']): row['status'] for row in rows}
  rows += [derived_result_row(
      row, statuses.get((row.source.dataset, row.source.cell_id),
                        'pending: not in the grid'), settings)
           for row in derived]
  frame = pd.DataFrame(rows)
  frame.to_csv(csv_path, index=False)
  return frame


# ------------------------------------------------------------------ report


def _lookup(results: pd.DataFrame, cell: Cell) -> Optional[pd.Series]:
  match = results[(results['dataset'] == cell.dataset)
                  & (results['cell_id'] == cell.cell_id)]
  return None if match.empty else match.iloc[0]


def _has_accuracy(entry: Optional[pd.Series]) -> bool:
  return entry is not None and not pd.isna(entry['benign_mean_accuracy'])


def _column_label(attack: str, ratio: float) -> str:
  return 'clean' if attack == 'none' else (
      f'{attack.upper()} {int(round(100 * ratio))}%')


# Marks a result read from its column's one Ditto run (`derive_rows`).
DERIVED_MARKER = ' †'


def _ours(record: Mapping[str, Any], notes: dict[str, int]) -> str:
  """A `table_frame` record's result, or 'n/a [k]' with its status noted."""
  if not pd.isna(record['ours_mean']):
    source = record.get('source_cell')
    marker = DERIVED_MARKER if isinstance(source, str) and source else ''
    return f'{record["ours_mean"]:.3f} ({record["ours_std"]:.3f}){marker}'
  status = record['status']
  if status not in notes:
    notes[status] = len(notes) + 1
  return f'n/a [{notes[status]}]'


def paper_number(spec: TableSpec, dataset: str, row: Row, attack: str,
                 ratio: float) -> Optional[PaperNumber]:
  """The paper's number for a table cell, or None where it prints none.

  The table's own number, else (a column or row the table does not print)
  Table 1's number of the same paper method and column; its `table` says
  which.
  """
  if row.paper_method is None:
    return None
  numbers = paper_numbers()
  for table in dict.fromkeys((spec.key, TABLE1.key)):
    number = numbers.get((table, dataset, row.paper_method, attack, ratio))
    if number is not None:
      return number
  return None


def _table_name(key: str) -> str:
  """'table1' -> 'Table 1'."""
  return key.replace('table', 'Table ')


def _paper(spec: TableSpec, record: Mapping[str, Any]) -> str:
  """A `table_frame` record's paper number, or '-' where it prints none.

  Marked with the table it comes from when that is not `spec`.
  """
  mean, std = record['paper_mean'], record['paper_std']
  if pd.isna(mean):
    return '-'
  text = f'{mean:.3f}' + ('' if pd.isna(std) else f' ({std:.2f})')
  if record['paper_source'] != spec.key:
    text += f' ({_table_name(record["paper_source"])})'
  return text


def _row_label(row_records: Sequence[Mapping[str, Any]]) -> str:
  """A table row's label, with its paper note when it shows one."""
  notes = [record['paper_note'] for record in row_records
           if record['paper_note']]
  label = row_records[0]['method']
  return f"{label} [paper's: {notes[0]}]" if notes else label


def table_frame(spec: TableSpec, dataset: str,
                results: pd.DataFrame) -> pd.DataFrame:
  """One paper table for one dataset as rows of (method, column, ours, paper).

  Returns:
    Columns method, column, attack, ratio, cell_id, status, ours_mean,
    ours_std, paper_mean, paper_std, paper_source (the paper table the
    number comes from), paper_method (its method name there), paper_note
    and source_cell (for a row derived from its column's one Ditto run,
    that cell's id; '' for a cell run on its own): one row per table cell,
    row by row.
  """
  records = []
  for row in spec.rows:
    for attack, ratio in spec.columns(dataset):
      cell = row.cell(dataset, attack, ratio)
      entry = _lookup(results, cell)
      has_accuracy = _has_accuracy(entry)
      paper = paper_number(spec, dataset, row, attack, ratio)
      records.append(dict(
          method=row.label, column=_column_label(attack, ratio),
          attack=attack, ratio=ratio, cell_id=cell.cell_id,
          status='not run: not in grid' if entry is None else entry['status'],
          ours_mean=entry['benign_mean_accuracy'] if has_accuracy else None,
          ours_std=entry['benign_std_accuracy'] if has_accuracy else None,
          paper_mean=None if paper is None else paper.mean,
          paper_std=None if paper is None else paper.std,
          paper_source='' if paper is None else paper.table,
          paper_method='' if paper is None else row.paper_method,
          paper_note='' if paper is None else row.paper_note,
          source_cell=_source_cell(entry)))
  return pd.DataFrame(records)


def _source_cell(entry: Optional[pd.Series]) -> str:
  """The id of the cell that ran a derived result row ('' if its own)."""
  if entry is None:
    return ''
  value = entry.get('source_cell', '')
  return '' if pd.isna(value) else str(value)


def table_markdown(spec: TableSpec, frame: pd.DataFrame) -> str:
  """One paper table: 'ours / paper' per cell + notes.

  Args:
    spec: The table.
    frame: Its `table_frame` for one dataset (rows in the spec's order).

  Returns:
    The markdown table, with the reasons of cells not run below it.
  """
  notes: dict[str, int] = {}
  columns = list(dict.fromkeys(frame['column']))
  header = ['method'] + columns
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  records = frame.to_dict('records')
  width = len(columns)
  for start in range(0, len(records), width):
    row_records = records[start:start + width]
    entries = [f'{_ours(record, notes)} / {_paper(spec, record)}'
               for record in row_records]
    lines.append(f'| {_row_label(row_records)} | ' + ' | '.join(entries)
                 + ' |')
  if notes:
    lines.append('')
    lines += [f'[{number}] {status}' for status, number in notes.items()]
  return '\n'.join(lines)


def _accuracy(results, cell) -> float:
  entry = _lookup(results, cell)
  return float(entry['benign_mean_accuracy']) if _has_accuracy(
      entry) else float('nan')


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
  return min(1.0, 2 * tail / 2 ** total)


def paired_device_comparison(
    first_dir: str, second_dir: str, first_column: str = 'accuracy',
    second_column: str = 'accuracy') -> Optional[dict[str, Any]]:
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
  for directory, column in ((first_dir, first_column),
                            (second_dir, second_column)):
    path = os.path.join(directory, 'client_metrics.csv')
    if not os.path.exists(path):
      return None
    frame = pd.read_csv(path)
    if column not in frame:
      return None
    frames.append(frame[~frame['malicious'].astype(bool)]
                  .set_index('client_id')[column])
  first, second = frames[0].align(frames[1], join='inner')
  wins, losses = int((first > second).sum()), int((first < second).sum())
  return dict(wins=wins, losses=losses, ties=len(first) - wins - losses,
              p_value=sign_test_p_value(wins, losses))


def _device_accuracies(results: pd.DataFrame, runs_dir: str,
                       cell: Cell) -> tuple[str, str]:
  """Where a cell's per-device accuracies are: (cell folder, column).

  A derived row's are a column of its source cell's client_metrics.csv.
  """
  entry = _lookup(results, cell)
  source = _source_cell(entry)
  if not source:
    return os.path.join(runs_dir, cell.dataset, cell.cell_id), 'accuracy'
  return (os.path.join(runs_dir, cell.dataset, source),
          str(entry['accuracy_column']))


TABLE1_DITTO_ROWS = tuple(row for row in TABLE1.rows if row.method == 'ditto')


_COMPARISON_HEADER = (
    '| column | Ditto row | Ditto | {baseline} | difference | benign devices '
    'Ditto better / worse / tied (sign test p) | verdict |',
    '|---|---|---|---|---|---|---|')


def _comparison_line(dataset: str, results: pd.DataFrame,
                     runs_dir: Optional[str], column: str, label: str,
                     ditto_cell: Cell, global_cell: Cell) -> str:
  """One row of a Ditto-vs-global table: means, per-device sign test."""
  ditto_accuracy = _accuracy(results, ditto_cell)
  global_accuracy = _accuracy(results, global_cell)
  devices = ''
  if math.isnan(ditto_accuracy) or math.isnan(global_accuracy):
    verdict, difference = 'not both run', ''
  else:
    difference = f'{100 * (ditto_accuracy - global_accuracy):+.1f} pts'
    paired = None
    if runs_dir is not None:
      (ditto_dir, ditto_column), (global_dir, global_column) = (
          _device_accuracies(results, runs_dir, cell)
          for cell in (ditto_cell, global_cell))
      paired = paired_device_comparison(ditto_dir, global_dir, ditto_column,
                                        global_column)
    significant = True
    if paired is not None:
      devices = (f'{paired["wins"]} / {paired["losses"]} / '
                 f'{paired["ties"]} (p = {paired["p_value"]:.2g})')
      significant = paired['p_value'] < 0.05
    if ditto_accuracy <= global_accuracy:
      verdict = '**Ditto <= global**'
    elif significant:
      verdict = 'Ditto > global'
    else:
      verdict = 'Ditto > global, not significant'
  shown = ['-' if math.isnan(value) else f'{value:.3f}'
           for value in (ditto_accuracy, global_accuracy)]
  return (f'| {column} | {label} | {shown[0]} | {shown[1]} | {difference} | '
          f'{devices} | {verdict} |')


def ditto_vs_global(dataset: str, results: pd.DataFrame,
                    runs_dir: Optional[str] = None) -> list[str]:
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
  lines = [line.format(baseline='global') for line in _COMPARISON_HEADER]
  for attack, ratio in attack_columns(dataset):
    global_cell = make_cell(dataset, 'global', attack, ratio)
    for row in TABLE1_DITTO_ROWS:
      ditto_cell = row.cell(dataset, attack, ratio)
      if row.options_fn is not None and math.isnan(
          _accuracy(results, ditto_cell)):
        continue  # The optional lambda-selection row is listed once run.
      lines.append(_comparison_line(
          dataset, results, runs_dir, _column_label(attack, ratio),
          row.label, ditto_cell, global_cell))
  return lines


def ditto_vs_robust_global(dataset: str, results: pd.DataFrame,
                           runs_dir: Optional[str] = None) -> list[str]:
  """Table 3 pairs: Ditto + aggregator against the global model under it.

  Lists the (aggregator, column) pairs of which at least one cell ran.

  Args:
    dataset: The dataset.
    results: The grid's result rows.
    runs_dir: As for `ditto_vs_global`.

  Returns:
    Markdown table lines, or [] when no Table 3 cell ran.
  """
  lines = []
  for label, aggregator in ROBUST_AGGREGATORS:
    for attack, ratio in TABLE3.columns(dataset):
      ditto_cell = make_cell(dataset, 'ditto', attack, ratio, aggregator)
      global_cell = make_cell(dataset, 'global', attack, ratio, aggregator)
      if all(math.isnan(_accuracy(results, cell))
             for cell in (ditto_cell, global_cell)):
        continue
      lines.append(_comparison_line(
          dataset, results, runs_dir, _column_label(attack, ratio),
          f'Ditto + {label}', ditto_cell, global_cell))
  if not lines:
    return []
  return [line.format(baseline='global (same aggregator)')
          for line in _COMPARISON_HEADER] + lines


def plot_figures(dataset: str, results: pd.DataFrame,
                 output_dir: str) -> list[str]:
  """Figures 3-6 for one dataset; returns the PNG file names written."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

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
      values = [_accuracy(results, row.cell(dataset, 'none' if r == 0 else
                                            attack, r)) for r in ratios]
      if not all(math.isnan(v) for v in values):
        axis.plot([100 * r for r in ratios], values, 'o-', label=row.label,
                  lw=2.5 if row.method == 'ditto' else 1.2)
    axis.set_title(f'{attack.upper()}')
    axis.set_xlabel('malicious devices (%)')
  axes[0].set_ylabel('benign mean test accuracy')
  axes[-1].legend(fontsize=7)
  fig.suptitle(f'Figure 3 ({dataset}): robustness vs attack ratio')
  save(fig, f'figure3_{dataset}.png')

  # Figure 4: accuracy (x) vs std across benign devices (y).
  columns = figure4_columns(dataset)
  fig, axes = plt.subplots(1, len(columns), figsize=(16, 4))
  rows = TABLE1.rows + tuple(r for r in TABLE2.rows if r not in TABLE1.rows)
  for axis, (attack, ratio) in zip(axes, columns):
    for row in rows:
      entry = _lookup(results, row.cell(dataset, attack, ratio))
      if _has_accuracy(entry):
        is_ditto = row.method == 'ditto'
        axis.scatter(entry['benign_mean_accuracy'],
                     entry['benign_std_accuracy'],
                     marker='*' if is_ditto else 'o', s=160 if is_ditto else 40,
                     color='C3' if is_ditto else None)
        axis.annotate(row.label, (entry['benign_mean_accuracy'],
                                  entry['benign_std_accuracy']), fontsize=6)
    axis.set_title(_column_label(attack, ratio))
    axis.set_xlabel('benign mean accuracy')
  axes[0].set_ylabel('std of accuracy across benign devices')
  fig.suptitle(f'Figure 4 ({dataset}): accuracy vs fairness '
               '(better: lower right)')
  save(fig, f'figure4_{dataset}.png')

  # Figure 5: TERM under A1 as the tilt t grows; Ditto as reference.
  fig, axis = plt.subplots(figsize=(6, 4))
  plotted = False
  for (attack, ratio), color in zip(FIGURE5.columns(dataset),
                                     ('C0', 'C1', 'C2')):
    values = [_accuracy(results, make_cell(dataset, 'term', attack, ratio,
                                           options=dict(term_t=t)))
              for t in TERM_TILTS]
    if not all(math.isnan(v) for v in values):
      axis.plot(TERM_TILTS, values, 'o-', color=color,
                label=f'TERM, {_column_label(attack, ratio)}')
      plotted = True
    ditto = _accuracy(results, make_cell(dataset, 'ditto', attack, ratio))
    if not math.isnan(ditto):
      axis.axhline(ditto, color=color, ls='--',
                   label=f'Ditto, {_column_label(attack, ratio)}')
  if not plotted:
    axis.text(0.5, 0.5, 'TERM cells not run (see report)',
              transform=axis.transAxes, ha='center')
  axis.set_xscale('log')
  axis.set_xlabel('tilt t')
  axis.set_ylabel('benign mean accuracy')
  if axis.get_legend_handles_labels()[0]:
    axis.legend(fontsize=7)
  axis.set_title(f'Figure 5 ({dataset}): fair method under A1')
  save(fig, f'figure5_{dataset}.png')

  # Figure 6: joint (Ditto) vs fine-tuning solver, A3 20 %, per lambda.
  fig, axis = plt.subplots(figsize=(6, 4))
  for label, method, option, color in (
      ('joint (Ditto)', 'ditto', 'lam', 'C3'),
      ('fine-tuning', 'finetune', 'finetune_lam', 'C0')):
    values = [_accuracy(results, make_cell(dataset, method, 'a3', 0.2,
                                           options={option: lam}))
              for lam in SOLVER_LAMBDAS]
    axis.plot(SOLVER_LAMBDAS, values, 'o-', color=color, label=label)
  axis.set_xscale('log')
  axis.set_xlabel('lambda')
  axis.set_ylabel('benign mean accuracy')
  axis.set_ylim(bottom=0)
  axis.legend()
  axis.set_title(f'Figure 6 ({dataset}): solvers under A3 20%')
  save(fig, f'figure6_{dataset}.png')
  del np
  return written


def git_revision(repo_dir: str, ignore_dir: Optional[str] = None) -> str:
  """HEAD's hash, with '+uncommitted changes' when the tree is dirty.

  Args:
    repo_dir: The checkout.
    ignore_dir: Changes under this folder do not count (the report's own
      output folder, whose committed files a new report overwrites).
  """
  pathspec = ['.']
  if ignore_dir is not None:
    relative = os.path.relpath(os.path.realpath(ignore_dir),
                               os.path.realpath(repo_dir))
    if not relative.startswith('..'):
      pathspec.append(f':(exclude){relative}')
  try:
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=repo_dir,
                          capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain',
                            '--untracked-files=no', '--', *pathspec],
                           cwd=repo_dir, capture_output=True, text=True,
                           check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return 'unknown (not a git checkout)'
  return head + (' (+ uncommitted changes in the tree)' if dirty else '')


REPORT_LEGEND = (
    'Every entry is `ours / paper`: mean (std) of per-device test accuracy '
    'over benign devices (the paper\'s metric). The paper\'s numbers are '
    'all those of its Tables 1-3 (Table 1: Fashion-MNIST and FEMNIST; '
    'Table 2: FEMNIST and CelebA, clean and A1 50 %; Table 3: FEMNIST, '
    'means only), each table showing its own where two print the same cell '
    'differently; `-` = the paper prints no number for the cell (its '
    'figures, its robust aggregators other than clipping and its other '
    'datasets are plotted or in its appendix, not available here); '
    '`(Table 1)` marks Table 1\'s number for the same method and column '
    'where another table prints none; a row marked `[paper\'s: '
    'per-device lambda]` runs Ditto with lambda fixed at 1 beside the '
    'paper\'s Ditto, which selects lambda per device (Section 4, Setup); '
    '`n/a [k]` = not run, reason k below the table; `†` = read from the '
    'column\'s one Ditto run with report lambdas (its global model, its '
    'lambda = 0 and 1 personal models, its per-device selection: exactly '
    'what the separate run gives; the cell is in the table CSV\'s '
    '`source_cell`). Raw per-cell results: `cells.csv`.')


def _table_section(spec: TableSpec, dataset: str, results: pd.DataFrame,
                   output_dir: str) -> list[str]:
  """A table's markdown lines; writes its `<table>_<dataset>.csv`."""
  frame = table_frame(spec, dataset, results)
  name = f'{spec.key}_{dataset}.csv'
  frame.to_csv(os.path.join(output_dir, name), index=False)
  return [f'### {spec.title}', '', table_markdown(spec, frame), '',
          f'CSV: `{name}`', '']


def has_paper_numbers(spec: TableSpec, dataset: str) -> bool:
  """Whether the paper prints any number of `spec` for `dataset`."""
  return any(paper_number(spec, dataset, row, attack, ratio) is not None
             for row in spec.rows for attack, ratio in spec.columns(dataset))


def _paper_only_section(dataset: str, why: str, results: pd.DataFrame,
                        output_dir: str) -> list[str]:
  """A dataset not run here: the tables printing paper numbers for it.

  Returns:
    Markdown lines ([] when the paper prints no number for the dataset);
    writes those tables' CSVs.
  """
  specs = [spec for spec in PAPER_SPECS if has_paper_numbers(spec, dataset)]
  if not specs:
    return []
  lines = [f'## {dataset} (not run: the paper\'s numbers)', '',
           f'Not run here ({why}); the tables that print paper numbers for '
           'it:', '']
  for spec in specs:
    lines += _table_section(spec, dataset, results, output_dir)
  return lines


def write_report(results: pd.DataFrame, output_dir: str, *,
                 command: str, mode: str, repo_dir: str,
                 datasets: Sequence[str],
                 unavailable_datasets: Mapping[str, str],
                 elapsed_seconds: float,
                 theory_markdown: Optional[str] = None,
                 header_note: str = '',
                 runs_dir: Optional[str] = None,
                 discussions: Optional[Mapping[str, str]] = None) -> str:
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
  counts = results['status'].map(
      lambda s: s if s in FINISHED_STATUSES else
      s.split(':')[0]).value_counts().to_dict()
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
      '- Datasets run: ' + (', '.join(
          d for d in datasets if d not in unavailable_datasets) or 'none'),
  ]
  for name, why in sorted(unavailable_datasets.items()):
    lines.append(f'- Not run: {name} ({why})')
  lines += [
      '',
      REPORT_LEGEND,
      '',
  ]
  if theory_markdown:
    lines += ['## Theory (Section 3.3, Figures 1-2)', '', theory_markdown, '']
  for dataset in datasets:
    if dataset in unavailable_datasets:
      lines += _paper_only_section(dataset, unavailable_datasets[dataset],
                                   results, output_dir)
      continue
    lines += [f'## {dataset}', '']
    for spec in PAPER_SPECS:
      lines += _table_section(spec, dataset, results, output_dir)
    lines += ['### Ditto vs global under attack (Table 1)', '',
              *ditto_vs_global(dataset, results, runs_dir), '']
    robust_pairs = ditto_vs_robust_global(dataset, results, runs_dir)
    if robust_pairs:
      lines += ['### Ditto vs global with the same robust aggregator '
                '(Table 3)', '', *robust_pairs, '']
    if discussions and discussions.get(dataset):
      lines += [discussions[dataset].strip(), '']
    for name in plot_figures(dataset, results, output_dir):
      lines.append(f'![{name}]({name})')
    lines.append('')
  not_run = results[~results['status'].isin(FINISHED_STATUSES)]
  if not not_run.empty:
    lines += ['## Cells not run, and why', '',
              '| reason | cells | e.g. |', '|---|---|---|']
    for status, group in not_run.groupby('status', sort=False):
      examples = ', '.join(
          f'{d}/{c}' for d, c in zip(group['dataset'][:3],
                                     group['cell_id'][:3]))
      lines.append(f'| {status} | {len(group)} | {examples} |')
    lines.append('')
  path = os.path.join(output_dir, 'REPORT.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  results.to_csv(os.path.join(output_dir, 'cells.csv'), index=False)
  return path
