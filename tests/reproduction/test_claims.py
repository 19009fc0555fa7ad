"""The paper's claims and their verdicts, on hand-made grid results."""

import cell_files
import pandas as pd
import pytest

from tff_ditto.reproduction import claims
from tff_ditto.reproduction import grid
from tff_ditto.reproduction.comparisons import CellComparison


def _comparison(
    first_mean, second_mean, first_std=0.1, second_std=0.1, paired=None
):
  return CellComparison(
      first_mean=first_mean,
      second_mean=second_mean,
      first_std=first_std,
      second_std=second_std,
      paired=paired,
  )


def _paired(wins, losses, p_value):
  return dict(wins=wins, losses=losses, ties=0, p_value=p_value)


@pytest.mark.parametrize(
    'test, comparison, verdict',
    [
        (claims.MORE_ACCURATE, None, claims.PENDING),
        (claims.MORE_ACCURATE, _comparison(0.8, 0.7), claims.REPRODUCED),
        (claims.MORE_ACCURATE, _comparison(0.7, 0.7), claims.NOT_REPRODUCED),
        (
            claims.MORE_ACCURATE,
            _comparison(0.8, 0.7, paired=_paired(20, 2, 1e-4)),
            claims.REPRODUCED,
        ),
        (
            claims.MORE_ACCURATE,
            _comparison(0.8, 0.7, paired=_paired(5, 3, 0.7)),
            claims.NOT_SIGNIFICANT,
        ),
        # A higher mean with significantly more devices worse.
        (
            claims.MORE_ACCURATE,
            _comparison(0.8, 0.7, paired=_paired(2, 20, 1e-4)),
            claims.NOT_SIGNIFICANT,
        ),
        (
            claims.MORE_ACCURATE,
            _comparison(0.6, 0.7, paired=_paired(20, 2, 1e-4)),
            claims.NOT_REPRODUCED,
        ),
        (
            claims.AS_ACCURATE,
            _comparison(0.69, 0.7, paired=_paired(4, 6, 0.75)),
            claims.REPRODUCED,
        ),
        (
            claims.AS_ACCURATE,
            _comparison(0.6, 0.7, paired=_paired(2, 20, 1e-4)),
            claims.NOT_REPRODUCED,
        ),
        (claims.AS_ACCURATE, _comparison(0.69, 0.7), claims.NOT_REPRODUCED),
        (
            claims.FAIRER,
            _comparison(0.7, 0.7, 0.1, 0.2, _paired(5, 5, 1.0)),
            claims.REPRODUCED,
        ),
        (
            claims.FAIRER,
            _comparison(0.7, 0.7, 0.2, 0.1, _paired(5, 5, 1.0)),
            claims.NOT_REPRODUCED,
        ),
        # Fairer, but significantly less accurate.
        (
            claims.FAIRER,
            _comparison(0.5, 0.7, 0.1, 0.2, _paired(2, 20, 1e-4)),
            claims.NOT_REPRODUCED,
        ),
    ],
)
def test_check_verdict(test, comparison, verdict):
  assert claims.check_verdict(test, comparison) == verdict


def test_unknown_test_is_named():
  with pytest.raises(ValueError, match='bigger'):
    claims.check_verdict('bigger', _comparison(0.8, 0.7))


def test_claim_verdict():
  reproduced, pending = claims.REPRODUCED, claims.PENDING
  assert claims.claim_verdict([]) == pending
  assert claims.claim_verdict([pending, pending]) == pending
  assert claims.claim_verdict([reproduced, reproduced]) == reproduced
  assert claims.claim_verdict([reproduced, pending]) == (
      'reproduced, more pending'
  )
  assert claims.claim_verdict([claims.NOT_SIGNIFICANT]) == (
      claims.NOT_REPRODUCED
  )
  assert claims.claim_verdict([reproduced, claims.NOT_REPRODUCED]) == (
      claims.MIXED
  )
  # Checks that cannot run here count neither as run nor as pending.
  assert claims.claim_verdict([reproduced, claims.CANNOT_RUN]) == reproduced
  assert claims.claim_verdict([claims.CANNOT_RUN]) == claims.CANNOT_RUN


@pytest.mark.parametrize('dataset', ['femnist', 'fmnist', 'vehicle'])
def test_every_check_compares_two_cells_of_the_paper_grid(dataset):
  cells = {cell.cell_id for cell in grid.paper_cells([dataset])}
  for claim in claims.CLAIMS:
    checks = claim.checks_fn(dataset)
    assert checks, claim.statement
    for check in checks:
      assert check.first.cell_id in cells, (claim.statement, check.where)
      assert check.second.cell_id in cells, (claim.statement, check.where)
      assert check.first != check.second


def test_claims_cover_each_tables_columns():
  by_statement = {claim.statement: claim for claim in claims.CLAIMS}
  robust = by_statement['Ditto more robust than global'].checks_fn('fmnist')
  assert [check.where for check in robust] == [
      'A1 20%',
      'A1 50%',
      'A1 80%',
      'A2 20%',
      'A2 50%',
      'A2 80%',
      'A3 10%',
      'A3 20%',
      'A3 50%',
  ]
  fairer = by_statement[
      'Ditto fairer than global at similar or better accuracy'
  ].checks_fn('femnist')
  assert fairer[0].where == 'clean' and len(fairer) == 10
  tilts = by_statement['TERM less robust as t grows'].checks_fn('femnist')
  assert [check.where for check in tilts[:2]] == [
      'A1 20%, t=1 vs t=2',
      'A1 50%, t=1 vs t=2',
  ]
  assert (tilts[0].first, tilts[0].second) == tuple(
      grid.make_cell('femnist', 'term', 'a1', 0.2, options=dict(term_t=t))
      for t in (1.0, 2.0)
  )
  joint = by_statement['joint solver above fine-tuning'].checks_fn('femnist')
  assert [(check.first.method, check.second.method) for check in joint] == [
      ('ditto', 'finetune')
  ] * 3
  robust_rules = by_statement[
      'Ditto at least as robust as robust aggregators'
  ].checks_fn('femnist')
  assert {check.second.aggregator for check in robust_rules} == {
      aggregator for _, aggregator in grid.ROBUST_AGGREGATORS
  }


def test_summary_and_details_read_the_cells_and_their_devices(tmp_path):
  ditto = grid.make_cell(
      'femnist', 'ditto', 'a1', 0.5, options=grid.auto_lambda('a1', 0.5)
  )
  global_cell = grid.make_cell('femnist', 'global', 'a1', 0.5)
  results = pd.DataFrame([
      dict(
          dataset='femnist',
          cell_id=cell.cell_id,
          status='done',
          benign_mean_accuracy=mean,
          benign_std_accuracy=std,
      )
      for cell, mean, std in ((ditto, 0.7, 0.15), (global_cell, 0.1, 0.05))
  ])
  for cell, benign in ((ditto, [0.7] * 6), (global_cell, [0.1] * 6)):
    cell_files.write_client_metrics(
        tmp_path / 'femnist' / cell.cell_id,
        benign + [0.9],
        [False] * 6 + [True],
    )
  summary = claims.claims_summary(['femnist'], results, str(tmp_path))
  assert summary[2] == (
      '| Ditto more robust than global | Table 1 | femnist | '
      'reproduced, more pending | 1 / 0 / 0 / 8 / 0 |  |'
  )
  # The global model is the fairer by the std (Definition 2).
  assert summary[3] == (
      '| Ditto fairer than global at similar or better accuracy | Table 1 | '
      'femnist | not reproduced, more pending | 0 / 0 / 1 / 9 / 0 | A1 50% |'
  )
  assert all('| pending | 0 / 0 / 0 / ' in line for line in summary[4:])
  details = claims.claims_details('femnist', results, str(tmp_path))
  assert details[2:] == [
      (
          '| Ditto more robust than global | A1 50% | more accurate | '
          '0.700 (0.150) vs 0.100 (0.050) | 6 / 0 / 0 (p = 0.031) | '
          'reproduced |'
      ),
      (
          '| Ditto fairer than global at similar or better accuracy | A1 50% | '
          'lower std, similar or better accuracy | '
          '0.700 (0.150) vs 0.100 (0.050) | 6 / 0 / 0 (p = 0.031) | '
          'not reproduced |'
      ),
  ]
  assert claims.claims_details('femnist', results.iloc[:1]) == []


def test_a_check_with_a_cell_that_cannot_run_is_not_pending():
  ditto = grid.make_cell(
      'femnist', 'ditto', 'a1', 0.8, options=grid.auto_lambda('a1', 0.8)
  )
  krum = grid.make_cell('femnist', 'global', 'a1', 0.8, 'krum')
  median = grid.make_cell('femnist', 'global', 'a1', 0.8, 'median')
  results = pd.DataFrame([
      dict(
          dataset='femnist',
          cell_id=ditto.cell_id,
          status='done',
          benign_mean_accuracy=0.7,
          benign_std_accuracy=0.15,
      ),
      dict(
          dataset='femnist',
          cell_id=krum.cell_id,
          status='not run: aggregator krum needs clients_per_round - f - 2',
          benign_mean_accuracy=float('nan'),
          benign_std_accuracy=float('nan'),
      ),
      dict(
          dataset='femnist',
          cell_id=median.cell_id,
          status='pending: not run yet',
          benign_mean_accuracy=float('nan'),
          benign_std_accuracy=float('nan'),
      ),
  ])
  claim = next(
      claim
      for claim in claims.CLAIMS
      if claim.statement == 'Ditto at least as robust as robust aggregators'
  )
  verdicts = {
      found.check.where: found.verdict
      for found in claims.check_claim(claim, 'femnist', results)
  }
  assert verdicts['A1 80%, Krum'] == claims.CANNOT_RUN
  assert verdicts['A1 80%, median'] == claims.PENDING
  (line,) = [
      line
      for line in claims.claims_summary(['femnist'], results)
      if line.startswith(f'| {claim.statement} |')
  ]
  # 45 checks: the Krum one cannot run, the rest are pending.
  assert '| pending | 0 / 0 / 0 / 44 / 1 |' in line
