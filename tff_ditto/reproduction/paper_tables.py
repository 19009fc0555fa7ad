"""The paper's numbers: every number of its Tables 1-3, per table cell.

From the package's `paper_tables.csv` (its first line names the source):
`paper_numbers` by (table, dataset, paper method, attack, ratio), and
`paper_number` for a cell of a `grid.TableSpec`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import io
import types
from collections.abc import Mapping
from typing import Optional

import pandas as pd

from tff_ditto.reproduction.grid import CLEAN
from tff_ditto.reproduction.grid import TABLE1
from tff_ditto.reproduction.grid import Column
from tff_ditto.reproduction.grid import Row
from tff_ditto.reproduction.grid import TableSpec
from tff_ditto.reproduction.grid import parse_column

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
  text = (
      importlib.resources.files('tff_ditto')
      .joinpath(PAPER_TABLES_CSV)
      .read_text()
  )
  return pd.read_csv(io.StringIO(text), comment='#')


@functools.lru_cache(maxsize=1)
def paper_numbers() -> Mapping[PaperKey, PaperNumber]:
  """Every number of the paper's Tables 1-3, by `PaperKey`."""
  numbers = {}
  for record in read_paper_tables().to_dict('records'):
    attack, ratio = paper_column(record['column'])
    std = None if pd.isna(record['std']) else float(record['std'])
    numbers[
        (record['table'], record['dataset'], record['method'], attack, ratio)
    ] = PaperNumber(float(record['mean']), std, record['table'])
  return types.MappingProxyType(numbers)


def paper_number(
    spec: TableSpec, dataset: str, row: Row, attack: str, ratio: float
) -> Optional[PaperNumber]:
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


def has_paper_numbers(spec: TableSpec, dataset: str) -> bool:
  """Whether the paper prints any number of `spec` for `dataset`."""
  return any(
      paper_number(spec, dataset, row, attack, ratio) is not None
      for row in spec.rows
      for attack, ratio in spec.columns(dataset)
  )
