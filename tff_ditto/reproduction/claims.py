"""The paper's claims, each with a verdict read from the grid's results.

A claim is checked by pairs of cells (`Check`): in each column (and, where
the claim is about a family of rows, for each lambda, tilt or aggregator),
the cell the paper says is better against the other, by their benign means
and stds and a per-device sign test (`comparisons.compare_cells`). A check
whose cells have not both run is pending; a claim's verdict sums its
checks (`claim_verdict`).

The claims (Section 4 of the paper, and Table 1's caption):
  * Ditto (per-device lambda) is more robust than the global model, in each
    attacked column of Table 1;
  * it is fairer than the global model (lower std of per-device accuracy)
    at similar or better accuracy, in each column of Table 1;
  * it is more accurate than the fair method, TERM with t = 1;
  * it is at least as robust as the global model under each robust
    aggregator (Table 1's robust rows);
  * TERM is less robust as its tilt t grows (Figure 4, A1);
  * Ditto + clipping is above Ditto (Table 3);
  * the joint solver is above fine-tuning, for each lambda (Figure 6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Optional

import pandas as pd

from tff_ditto.reproduction.comparisons import SIGNIFICANCE_LEVEL
from tff_ditto.reproduction.comparisons import CellComparison
from tff_ditto.reproduction.comparisons import compare_cells
from tff_ditto.reproduction.comparisons import devices_text
from tff_ditto.reproduction.grid import FIGURE4
from tff_ditto.reproduction.grid import FIGURE6
from tff_ditto.reproduction.grid import ROBUST_AGGREGATORS
from tff_ditto.reproduction.grid import SOLVER_LAMBDAS
from tff_ditto.reproduction.grid import TABLE1
from tff_ditto.reproduction.grid import TABLE3
from tff_ditto.reproduction.grid import TERM_TILTS
from tff_ditto.reproduction.grid import Cell
from tff_ditto.reproduction.grid import Row
from tff_ditto.reproduction.grid import TableSpec
from tff_ditto.reproduction.grid import column_label
from tff_ditto.reproduction.result_rows import lookup

# What a check asks of its first cell against its second.
MORE_ACCURATE = 'more accurate'
AS_ACCURATE = 'similar or better accuracy'
FAIRER = 'lower std, similar or better accuracy'

# A check's verdicts.
REPRODUCED = 'reproduced'
NOT_SIGNIFICANT = 'not significant'
NOT_REPRODUCED = 'not reproduced'
PENDING = 'pending'
# A check one of whose cells cannot run here (the report says why).
CANNOT_RUN = 'cannot run'

# A claim's verdict when some of its checks reproduce and others do not.
MIXED = 'mixed'


@dataclasses.dataclass(frozen=True)
class Check:
  """One comparison a claim makes: `first` should beat `second`.

  Attributes:
    where: The column, with the lambda, tilt or aggregator where the claim
      has several rows (e.g. 'A1 50%, clipping').
    first: The cell the paper says is better.
    second: The cell it is compared with.
    test: `MORE_ACCURATE`, `AS_ACCURATE` or `FAIRER`.
  """

  where: str
  first: Cell
  second: Cell
  test: str


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim of the paper and the checks that test it on a dataset.

  Attributes:
    statement: The claim, in a few words.
    source: Where the paper makes it (a table or figure).
    checks_fn: dataset -> the claim's checks on it.
  """

  statement: str
  source: str
  checks_fn: Callable[[str], tuple[Check, ...]]


def row_by_label(spec: TableSpec, label: str) -> Row:
  """The row of `spec` labelled `label`.

  Raises:
    KeyError: `spec` has no such row.
  """
  for row in spec.rows:
    if row.label == label:
      return row
  raise KeyError(f'{spec.key} has no row {label!r}')


def _column_checks(
    spec: TableSpec,
    first_label: str,
    second_label: str,
    test: str,
    *,
    attacked_only: bool = False,
    where_suffix: str = '',
) -> Callable[[str], tuple[Check, ...]]:
  """Checks of one row against another in each of `spec`'s columns."""
  first_row = row_by_label(spec, first_label)
  second_row = row_by_label(spec, second_label)

  def checks(dataset: str) -> tuple[Check, ...]:
    return tuple(
        Check(
            column_label(attack, ratio) + where_suffix,
            first_row.cell(dataset, attack, ratio),
            second_row.cell(dataset, attack, ratio),
            test,
        )
        for attack, ratio in spec.columns(dataset)
        if not (attacked_only and attack == 'none')
    )

  return checks


def _joined(
    *checks_fns: Callable[[str], tuple[Check, ...]],
) -> Callable[[str], tuple[Check, ...]]:
  """The checks of several `checks_fn`s, in order."""
  return lambda dataset: tuple(
      check for checks_fn in checks_fns for check in checks_fn(dataset)
  )


DITTO = 'Ditto (lambda auto)'

# TERM's tilts that Figure 4 compares (the paper's t = 1, 2, 5).
FIGURE4_TILTS = tuple(t for t in TERM_TILTS if t >= 1.0)


CLAIMS = (
    Claim(
        'Ditto more robust than global',
        'Table 1',
        _column_checks(
            TABLE1, DITTO, 'Global', MORE_ACCURATE, attacked_only=True
        ),
    ),
    Claim(
        'Ditto fairer than global at similar or better accuracy',
        'Table 1',
        _column_checks(TABLE1, DITTO, 'Global', FAIRER),
    ),
    Claim(
        'Ditto more accurate than TERM (t = 1)',
        'Table 1',
        _column_checks(TABLE1, DITTO, 'Fair (TERM, t=1)', MORE_ACCURATE),
    ),
    Claim(
        'Ditto at least as robust as robust aggregators',
        'Table 1',
        _joined(*(
            _column_checks(
                TABLE1,
                DITTO,
                f'Robust ({label})',
                AS_ACCURATE,
                attacked_only=True,
                where_suffix=f', {label}',
            )
            for label, _ in ROBUST_AGGREGATORS
        )),
    ),
    Claim(
        'TERM less robust as t grows',
        'Figure 4',
        _joined(*(
            _column_checks(
                FIGURE4,
                f'TERM t={smaller}',
                f'TERM t={larger}',
                MORE_ACCURATE,
                where_suffix=f', t={smaller:g} vs t={larger:g}',
            )
            for smaller, larger in zip(FIGURE4_TILTS, FIGURE4_TILTS[1:])
        )),
    ),
    Claim(
        'Ditto + clipping above Ditto',
        'Table 3',
        _column_checks(
            TABLE3, 'Ditto + clipping (lambda auto)', DITTO, MORE_ACCURATE
        ),
    ),
    Claim(
        'joint solver above fine-tuning',
        'Figure 6',
        _joined(*(
            _column_checks(
                FIGURE6,
                f'joint lambda={lam}',
                f'finetune lambda={lam}',
                MORE_ACCURATE,
                where_suffix=f', lambda={lam:g}',
            )
            for lam in SOLVER_LAMBDAS
        )),
    ),
)


def _significantly_worse(comparison: CellComparison) -> bool:
  """Whether the first cell is worse: by the sign test, else the means."""
  paired = comparison.paired
  if paired is None:
    return comparison.first_mean < comparison.second_mean
  return (
      paired['losses'] > paired['wins']
      and paired['p_value'] < SIGNIFICANCE_LEVEL
  )


def check_verdict(test: str, comparison: Optional[CellComparison]) -> str:
  """A check's verdict from its comparison (None: not both run).

  `MORE_ACCURATE`: reproduced when the first mean is higher and the first
  cell wins on significantly more devices (without per-device metrics, the
  higher mean alone); not significant when only the mean is higher.
  `AS_ACCURATE`: reproduced unless the first cell is significantly worse.
  `FAIRER`: reproduced when the first std is lower and the first cell is not
  significantly less accurate.

  Args:
    test: What the check asks.
    comparison: Its two cells compared.

  Returns:
    `REPRODUCED`, `NOT_SIGNIFICANT`, `NOT_REPRODUCED` or `PENDING`.

  Raises:
    ValueError: An unknown test.
  """
  if comparison is None:
    return PENDING
  if test == MORE_ACCURATE:
    if comparison.first_mean <= comparison.second_mean:
      return NOT_REPRODUCED
    paired = comparison.paired
    if paired is None or (
        paired['wins'] > paired['losses']
        and paired['p_value'] < SIGNIFICANCE_LEVEL
    ):
      return REPRODUCED
    return NOT_SIGNIFICANT
  if test == AS_ACCURATE:
    return NOT_REPRODUCED if _significantly_worse(comparison) else REPRODUCED
  if test == FAIRER:
    fairer = comparison.first_std < comparison.second_std
    return (
        REPRODUCED
        if fairer and not _significantly_worse(comparison)
        else NOT_REPRODUCED
    )
  raise ValueError(f'unknown test {test!r}')


def claim_verdict(verdicts: Sequence[str]) -> str:
  """A claim's verdict from its checks'.

  Args:
    verdicts: Its checks' verdicts.

  Returns:
    `CANNOT_RUN` when no check can run here, else `PENDING` when none ran;
    otherwise `REPRODUCED` when every check that ran reproduced,
    `NOT_REPRODUCED` when none did, else `MIXED`; with ', more pending' when
    some checks that can run have not.
  """
  runnable = [verdict for verdict in verdicts if verdict != CANNOT_RUN]
  if verdicts and not runnable:
    return CANNOT_RUN
  run = [verdict for verdict in runnable if verdict != PENDING]
  if not run:
    return PENDING
  reproduced = sum(verdict == REPRODUCED for verdict in run)
  if reproduced == len(run):
    verdict = REPRODUCED
  elif reproduced == 0:
    verdict = NOT_REPRODUCED
  else:
    verdict = MIXED
  return verdict + (', more pending' if len(run) < len(runnable) else '')


@dataclasses.dataclass(frozen=True)
class CheckResult:
  """A check, its two cells compared and its verdict."""

  check: Check
  comparison: Optional[CellComparison]
  verdict: str


def check_claim(
    claim: Claim,
    dataset: str,
    results: pd.DataFrame,
    runs_dir: Optional[str] = None,
) -> tuple[CheckResult, ...]:
  """Runs a claim's checks on one dataset's results.

  Args:
    claim: The claim.
    dataset: The dataset.
    results: The grid's result rows.
    runs_dir: Where the cells ran (None: no per-device sign tests).

  Returns:
    Each check with its comparison and verdict.
  """
  found = []
  for check in claim.checks_fn(dataset):
    comparison = compare_cells(results, runs_dir, check.first, check.second)
    verdict = check_verdict(check.test, comparison)
    if verdict == PENDING and any(
        _cannot_run(results, cell) for cell in (check.first, check.second)
    ):
      verdict = CANNOT_RUN
    found.append(CheckResult(check, comparison, verdict))
  return tuple(found)


def _cannot_run(results: pd.DataFrame, cell: Cell) -> bool:
  """Whether the grid lists `cell` as not runnable here ('not run: ...')."""
  entry = lookup(results, cell)
  return entry is not None and str(entry['status']).startswith('not run')


CLAIMS_LEGEND = (
    'Each claim is checked where both of its cells ran: in each column (and'
    ' for each aggregator, tilt or lambda where the claim covers several'
    ' rows), the cell the paper says is better against the other, on the'
    " benign devices. Ditto is the per-device lambda row (the paper's"
    ' protocol). *More accurate*: reproduced when its mean is higher and it'
    ' is better on significantly more devices (two-sided sign test, p <'
    f' {SIGNIFICANCE_LEVEL}); a higher mean without that is *not'
    ' significant*. *Similar or better accuracy*: reproduced unless it is'
    " worse on significantly more devices. *Fairer* (the paper's"
    ' Definition 2): a lower std of per-device accuracy (point estimates)'
    ' at similar or better accuracy. A check whose cells have not both run'
    ' is pending, or cannot run where the grid lists one of them as not'
    ' runnable here (the cells not run, and why, are at the end).'
)


def _counts_text(verdicts: Sequence[str]) -> str:
  counted = (REPRODUCED, NOT_SIGNIFICANT, NOT_REPRODUCED, PENDING, CANNOT_RUN)
  return ' / '.join(str(sum(v == name for v in verdicts)) for name in counted)


def claims_summary(
    datasets: Sequence[str],
    results: pd.DataFrame,
    runs_dir: Optional[str] = None,
) -> list[str]:
  """One line per claim and dataset: its verdict and where it fails.

  Args:
    datasets: The datasets run.
    results: The grid's result rows.
    runs_dir: As for `check_claim`.

  Returns:
    Markdown table lines.
  """
  lines = [
      (
          '| claim | paper | dataset | verdict | checks reproduced / not'
          ' significant / not reproduced / pending / cannot run | not'
          ' reproduced at'
          ' (*: not significant) |'
      ),
      '|---|---|---|---|---|---|',
  ]
  for claim in CLAIMS:
    for dataset in datasets:
      checked = check_claim(claim, dataset, results, runs_dir)
      verdicts = [found.verdict for found in checked]
      failed = ', '.join(
          found.check.where + ('*' if found.verdict == NOT_SIGNIFICANT else '')
          for found in checked
          if found.verdict in (NOT_REPRODUCED, NOT_SIGNIFICANT)
      )
      lines.append(
          f'| {claim.statement} | {claim.source} | {dataset} | '
          f'{claim_verdict(verdicts)} | {_counts_text(verdicts)} | {failed} |'
      )
  return lines


def _mean_std_text(mean: float, std: float) -> str:
  return f'{mean:.3f} ({std:.3f})'


def claims_details(
    dataset: str, results: pd.DataFrame, runs_dir: Optional[str] = None
) -> list[str]:
  """Every check of every claim on `dataset` whose cells both ran.

  Args:
    dataset: The dataset.
    results: The grid's result rows.
    runs_dir: As for `check_claim`.

  Returns:
    Markdown table lines, or [] when no check ran.
  """
  lines = []
  for claim in CLAIMS:
    for found in check_claim(claim, dataset, results, runs_dir):
      comparison = found.comparison
      if comparison is None:
        continue
      lines.append(
          f'| {claim.statement} | {found.check.where} | {found.check.test} | '
          + _mean_std_text(comparison.first_mean, comparison.first_std)
          + ' vs '
          + _mean_std_text(comparison.second_mean, comparison.second_std)
          + f' | {devices_text(comparison.paired)} | {found.verdict} |'
      )
  if not lines:
    return []
  return [
      (
          "| claim | where | test | mean (std): paper's better vs other |"
          ' benign devices better / worse / tied (sign test p) | verdict |'
      ),
      '|---|---|---|---|---|---|',
  ] + lines
