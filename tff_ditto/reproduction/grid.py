"""The Ditto paper's experiment grid as data: columns, cells, rows, tables.

A grid is a list of `Cell`s (dataset, method, attack, ratio, aggregator,
extra `ExperimentConfig` options). Paper tables and figures are `TableSpec`s:
rows (label, method, aggregator, options, the paper's name of the row)
crossed with each dataset's columns (attack, ratio; A3's ratios differ per
dataset, see `attack_columns`); `paper_cells` is the union of their cells
per dataset, `select_cells` a selection of them (the `--columns` and
`--rounds` entries of scripts/reproduce.py are parsed here too).

Imports no TensorFlow (tests/test_layering.py checks), so the grid can be
listed and selected without starting it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from tff_ditto import experiment_defaults
from tff_ditto import training_config

Column = tuple[str, float]


CLEAN: Column = ('none', 0.0)


# Table 1's A1 / A2 columns (every dataset): 20 / 50 / 80 % of devices.
A1_A2_COLUMNS: tuple[Column, ...] = (
    ('a1', 0.2),
    ('a1', 0.5),
    ('a1', 0.8),
    ('a2', 0.2),
    ('a2', 0.5),
    ('a2', 0.8),
)


# Table 1's A3 ratios: Fashion-MNIST 10 / 20 / 50 %, FEMNIST (and every
# other dataset here) 10 / 15 / 20 %.
DEFAULT_A3_RATIOS = (0.1, 0.15, 0.2)


A3_RATIOS: Mapping[str, tuple[float, ...]] = {'fmnist': (0.1, 0.2, 0.5)}


TERM_TILTS = (0.1, 1.0, 2.0, 5.0)


SOLVER_LAMBDAS = (0.1, 1.0, 2.0)


ROBUST_AGGREGATORS = (
    ('median', 'median'),
    ('Krum', 'krum'),
    ('Multi-Krum', 'multi_krum'),
    ('k-norm', 'k_norm'),
    ('clipping', 'norm_clip'),
)


def a3_ratios(dataset: str) -> tuple[float, ...]:
  """The A3 (model replacement) ratios of `dataset`'s Table 1, ascending."""
  return A3_RATIOS.get(dataset, DEFAULT_A3_RATIOS)


def attack_columns(dataset: str) -> tuple[Column, ...]:
  """Table 1's columns for `dataset`: clean, A1 / A2, then its A3 ratios."""
  return (
      (CLEAN,)
      + A1_A2_COLUMNS
      + tuple(('a3', ratio) for ratio in a3_ratios(dataset))
  )


def strongest_columns(dataset: str) -> tuple[Column, ...]:
  """The strongest column of each attack: A1 and A2 80 %, A3 its largest."""
  return (('a1', 0.8), ('a2', 0.8), ('a3', a3_ratios(dataset)[-1]))


def table3_columns(dataset: str) -> tuple[Column, ...]:
  """The paper's Table 3 columns (FEMNIST: A1, A2 20/80 %, A3 10/20 %).

  A3 at the dataset's smallest and largest Table 1 ratio (Fashion-MNIST,
  absent from the paper's Table 3: 10 and 50 %).
  """
  ratios = a3_ratios(dataset)
  return (
      ('a1', 0.2),
      ('a1', 0.8),
      ('a2', 0.2),
      ('a2', 0.8),
      ('a3', ratios[0]),
      ('a3', ratios[-1]),
  )


def figure5_columns(dataset: str) -> tuple[Column, ...]:
  """Figure 5's panels: clean, A1 / A2 50 %, A3 at its middle ratio."""
  ratios = a3_ratios(dataset)
  return (CLEAN, ('a1', 0.5), ('a2', 0.5), ('a3', ratios[len(ratios) // 2]))


def is_strong_attack(attack: str, ratio: float) -> bool:
  """Devices' binary 'strong attack' decision used with lam_selection=auto.

  The paper leaves the rule to the devices; here: half or more of the
  devices malicious, or model replacement (A3) at 15 % or more. So of
  Table 1's A3 columns only 10 % is weak (FEMNIST: 15 and 20 % strong;
  Fashion-MNIST: 20 and 50 % strong).
  """
  return (attack != 'none' and ratio >= 0.5) or (
      attack == 'a3' and ratio >= 0.15
  )


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
    parts = [
        self.method,
        f'{self.attack}{int(round(100 * self.ratio)):02d}',
        self.aggregator,
    ]
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
  `run_settings.cell_config`).
  """
  preset = experiment_defaults.preset_for(dataset)
  if name in preset:
    return preset[name]
  fields = {
      f.name: f for f in dataclasses.fields(training_config.ExperimentConfig)
  }
  if name not in fields or fields[name].default is dataclasses.MISSING:
    return _NO_DEFAULT
  return fields[name].default


def make_cell(
    dataset: str,
    method: str,
    attack: str = 'none',
    ratio: float = 0.0,
    aggregator: str = 'mean',
    options: Optional[Mapping[str, Any]] = None,
) -> Cell:
  """The cell; options equal to what the cell runs with anyway are dropped.

  So Figure 6's 'joint lambda=1' is Table 1's Ditto cell (lambda 1 is every
  preset's), one run and one id, not two runs of one configuration.
  """
  kept = {
      name: _canonical(value)
      for name, value in (options or {}).items()
      if _canonical(value) != _canonical(_default_option_value(dataset, name))
  }
  return Cell(
      dataset,
      method,
      attack,
      float(ratio),
      aggregator,
      tuple(sorted(kept.items())),
  )


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
    return make_cell(
        dataset, self.method, attack, ratio, self.aggregator, options
    )


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


def _fixed_columns(*columns: Column) -> Callable[[str], tuple[Column, ...]]:
  """A `TableSpec.columns_fn` giving every dataset the same columns."""
  return lambda dataset: columns


def auto_lambda(attack: str, ratio: float) -> dict[str, Any]:
  """The options of per-device lambda in a column (`is_strong_attack`)."""
  return dict(
      lam_selection='auto', strong_attack=is_strong_attack(attack, ratio)
  )


def _ditto_lambda_1() -> Row:
  """Ditto with the preset's fixed lambda = 1 beside the paper's Ditto."""
  return Row(
      'Ditto (lambda=1)',
      'ditto',
      paper_method='ditto',
      paper_note=PER_DEVICE_LAMBDA,
  )


def _ditto_lambda_auto() -> Row:
  """Ditto with per-device lambda: the paper's protocol, beside its Ditto."""
  return Row(
      'Ditto (lambda auto)',
      'ditto',
      options_fn=auto_lambda,
      paper_method='ditto',
  )


TABLE1 = TableSpec(
    'table1',
    'Table 1: robustness (benign devices) under A1 / A2 / A3',
    (
        Row('Global', 'global', paper_method='global'),
        Row('Local', 'local', paper_method='local'),
        Row(
            'Fair (TERM, t=1)',
            'term',
            options=dict(term_t=1.0),
            paper_method='term_t1',
        ),
    )
    + tuple(
        Row(f'Robust ({label})', 'global', aggregator)
        for label, aggregator in ROBUST_AGGREGATORS
    )
    + (
        _ditto_lambda_1(),
        _ditto_lambda_auto(),
    ),
    attack_columns,
)


TABLE2 = TableSpec(
    'table2',
    'Table 2: Ditto vs personalization methods',
    (
        Row('Global', 'global', paper_method='global'),
        Row('Local', 'local', paper_method='local'),
        Row('Plain finetuning', 'finetune', paper_method='finetune'),
        Row('L2SGD', 'l2sgd', paper_method='l2sgd'),
        Row('EWC', 'ewc', paper_method='ewc'),
        Row('SKL', 'skl', paper_method='skl'),
        Row('Per-FedAvg', 'perfedavg', paper_method='perfedavg'),
        Row('APFL', 'apfl', paper_method='apfl'),
        Row('Mapper', 'mapper', paper_method='mapper'),
        _ditto_lambda_1(),
    ),
    _fixed_columns(CLEAN, ('a1', 0.5), ('a2', 0.5), ('a3', 0.2)),
)


# The paper's Table 3 (FEMNIST only) prints global, clipping, Ditto and
# Ditto + clipping; its other aggregators are in the appendix (not here).
PAPER_TABLE3_AGGREGATORS = ('norm_clip',)


def _table3_rows(label: str, aggregator: str) -> tuple[Row, Row, Row]:
  """An aggregator's Table 3 rows: global, and Ditto as in Table 1, under it.

  Ditto with lambda = 1 and with per-device lambda (the paper's protocol),
  as Table 1's 'Ditto (lambda=1)' and 'Ditto (lambda auto)' rows. The
  paper's names of the rows are the aggregator's and 'ditto+' + it; its
  Ditto + aggregator number stands beside both Ditto rows, marked
  `PER_DEVICE_LAMBDA` beside the lambda = 1 one.

  Args:
    label: The aggregator's name in the report.
    aggregator: Its `run_experiment.py --aggregator` value.

  Returns:
    (global, Ditto lambda = 1, Ditto per-device lambda) rows.
  """
  printed = aggregator in PAPER_TABLE3_AGGREGATORS
  ditto_paper_method = f'ditto+{aggregator}' if printed else None
  return (
      Row(
          label,
          'global',
          aggregator,
          paper_method=aggregator if printed else None,
      ),
      Row(
          f'Ditto + {label} (lambda=1)',
          'ditto',
          aggregator,
          paper_method=ditto_paper_method,
          paper_note=PER_DEVICE_LAMBDA if printed else '',
      ),
      Row(
          f'Ditto + {label} (lambda auto)',
          'ditto',
          aggregator,
          options_fn=auto_lambda,
          paper_method=ditto_paper_method,
      ),
  )


TABLE3 = TableSpec(
    'table3',
    'Table 3: Ditto combined with robust aggregators',
    (
        Row('Global', 'global', paper_method='global'),
        _ditto_lambda_1(),
        _ditto_lambda_auto(),
    )
    + tuple(
        row
        for label, aggregator in ROBUST_AGGREGATORS
        for row in _table3_rows(label, aggregator)
    ),
    table3_columns,
)


# Figure 4: TERM's tilt t under A1; Figure 6: joint (Ditto) vs fine-tuning
# solver of the same objective under A3 20 %, per lambda. The paper plots
# them without numbers; the rows Table 1 has show Table 1's.
FIGURE4 = TableSpec(
    'figure4',
    'Figure 4: fair method (TERM) under A1 as t grows',
    tuple(
        Row(
            f'TERM t={t}',
            'term',
            options=dict(term_t=t),
            paper_method='term_t1' if t == 1.0 else None,
        )
        for t in TERM_TILTS
    )
    + (_ditto_lambda_1(),),
    _fixed_columns(('a1', 0.2), ('a1', 0.5), ('a1', 0.8)),
)


FIGURE6 = TableSpec(
    'figure6',
    'Figure 6: joint vs fine-tuning solver under A3 20%',
    tuple(
        Row(f'joint lambda={lam}', 'ditto', options=dict(lam=lam))
        for lam in SOLVER_LAMBDAS
    )
    + tuple(
        Row(
            f'finetune lambda={lam}', 'finetune', options=dict(finetune_lam=lam)
        )
        for lam in SOLVER_LAMBDAS
    ),
    _fixed_columns(('a3', 0.2)),
)


PAPER_SPECS = (TABLE1, TABLE2, TABLE3, FIGURE4, FIGURE6)


def paper_cells(
    datasets: Sequence[str], specs: Sequence[TableSpec] = PAPER_SPECS
) -> list[Cell]:
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
  raise ValueError(
      f'unknown table {key!r}; known: '
      f'{", ".join(spec.key for spec in PAPER_SPECS)}'
  )


def column_label(attack: str, ratio: float) -> str:
  return (
      'clean'
      if attack == 'none'
      else (f'{attack.upper()} {int(round(100 * ratio))}%')
  )


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
    raise ValueError(
        f'column {text!r} is not attack:ratio (e.g. a1:0.5) or none'
    )
  return attack, value


ColumnRounds = Mapping[tuple[str, Column], int]


def parse_rounds(
    entries: Sequence[str],
) -> tuple[Optional[int], dict[str, int], dict[tuple[str, Column], int]]:
  """--rounds entries -> rounds for every dataset, per dataset, per column.

  Args:
    entries: Each '300' (every dataset not named), 'femnist:300' (every
      column of a dataset not named by column) or 'fmnist/none:5000',
      'fmnist/a3:0.5:2750' (the cells of one column of a dataset).

  Returns:
    (default, {dataset: rounds}, {(dataset, column): rounds}); default None
    when no bare number is given (the dataset presets).

  Raises:
    ValueError: On an entry that is not a positive integer with an optional
      'dataset:' or 'dataset/column:' prefix, a column `parse_column`
      rejects, or a dataset, column or the default given twice.
  """
  default, per_dataset, per_column = None, {}, {}
  for entry in entries:
    target, _, number = entry.rpartition(':')
    if not number.isdigit() or int(number) < 1:
      raise ValueError(
          f'rounds entry {entry!r} is not a positive integer, '
          'dataset:integer or dataset/column:integer (e.g. 300, femnist:300 '
          'or fmnist/a3:0.5:2750)'
      )
    dataset, _, column_text = target.partition('/')
    if column_text:
      key = (dataset, parse_column(column_text))
      given = per_column
    else:
      key = dataset
      given = per_dataset
    if key in given or (not target and default is not None):
      raise ValueError(
          f'rounds given twice for {target or "every dataset"} ({entry!r})'
      )
    if target:
      given[key] = int(number)
    else:
      default = int(number)
  return default, per_dataset, per_column


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
  parsed = [
      None if text == 'strongest' else parse_column(text) for text in texts
  ]

  def columns_for(dataset: str) -> tuple[Column, ...]:
    expanded = []
    for column in parsed:
      expanded += strongest_columns(dataset) if column is None else [column]
    return tuple(dict.fromkeys(expanded))

  return columns_for


def select_cells(
    cells: Sequence[Cell],
    *,
    methods: Optional[Sequence[str]] = None,
    aggregators: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[Column] | ColumnsFn] = None,
    plain_only: bool = False,
) -> list[Cell]:
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
    return (
        (methods is None or cell.method in methods)
        and (aggregators is None or cell.aggregator in aggregators)
        and (columns_for is None or position(cell) is not None)
        and not (plain_only and cell.options)
    )

  selected = [cell for cell in cells if keep(cell)]
  if columns_for is not None:
    selected.sort(key=position)
  return selected
