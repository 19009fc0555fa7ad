"""Malicious clients that train no personal model change no reported number.

With `malicious_personal_training=False` a sampled malicious client of Ditto
trains only its copy of the global model and leaves its state file as it was.
Every benign device's personal models, the global model, and so every
reported number (benign devices only) must be the same bits as when it also
trains its personal models, as the reference does; only the malicious
devices' personal models (the `malicious_*` metrics) and the personal train
loss (over benign clients only) differ. Real TFF computations on the first clients of the embedded
Synthetic(1, 1) data, under a label attack (A1) and an update attack (A3),
with per-device lambda and report lambdas as the paper-budget cells run, and
with the reference's per-step lambda selection.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest

import toy

from tff_ditto import client_states
from tff_ditto import computation_cache
from tff_ditto import training
from tff_ditto.data import load_dataset

NUM_CLIENTS = 8
SETTINGS = dict(
    a1_auto=dict(
        attack='a1',
        attack_ratio=0.5,
        strong_attack=True,
        lam_selection='auto',
        report_lambdas=(0.0, 1.0),
    ),
    a3_auto=dict(
        attack='a3',
        attack_ratio=0.25,
        lam_selection='auto',
        report_lambdas=(0.0, 1.0),
    ),
    a1_per_step=dict(attack='a1', attack_ratio=0.5, lam_selection='per_step'),
)


@pytest.fixture(scope='module')
def runs(tmp_path_factory, synthetic_model_fn):
  """{setting: {trains: runner}}, each run 4 rounds of 4 clients."""
  full = load_dataset('synthetic', validation_fraction=0.2)
  dataset = full.subset(full.client_ids[:NUM_CLIENTS])
  root = tmp_path_factory.mktemp('malicious_personal_training')
  cache = computation_cache.ComputationCache()
  results = {}
  for name, setting in SETTINGS.items():
    results[name] = {}
    for trains in (True, False):
      config = toy.tiny_ditto_config(
          rounds=4,
          clients_per_round=4,
          eval_every=2,
          malicious_personal_training=trains,
          **setting,
      )
      runner = training.ExperimentRunner(
          config,
          dataset,
          synthetic_model_fn,
          str(root / name / str(trains)),
          log_fn=None,
          computation_cache=cache,
      )
      runner.run()
      results[name][trains] = runner
  return results


def _read(runner, name) -> pd.DataFrame:
  return pd.read_csv(os.path.join(runner.output_dir, name))


def _summary(runner) -> dict:
  with open(os.path.join(runner.output_dir, 'summary.json')) as f:
    return json.load(f)


def _reported(summary: dict) -> str:
  """Every final number computed over benign devices or the global model."""
  return json.dumps({
      key: value
      for key, value in summary['final'].items()
      if 'benign' in key or key.startswith('global_model')
  })


@pytest.mark.parametrize('setting', list(SETTINGS))
def test_reported_numbers_and_global_model_are_the_same_bits(runs, setting):
  trains, frozen = runs[setting][True], runs[setting][False]
  malicious = frozen.malicious
  # The runs sampled malicious clients: the setting tests something.
  sampled = _read(frozen, 'metrics.csv')['sampled_malicious']
  assert sampled.sum() > 0
  for a, b in zip(
      toy.global_weights(trains.process, trains.state),
      toy.global_weights(frozen.process, frozen.state),
  ):
    np.testing.assert_array_equal(a, b)
  assert _reported(_summary(trains)) == _reported(_summary(frozen))
  metrics = [_read(runner, 'metrics.csv') for runner in (trains, frozen)]
  for column in ('global_train_loss', 'max_update_norm'):
    np.testing.assert_array_equal(metrics[0][column], metrics[1][column])
  benign_rows = [
      _read(runner, 'client_metrics.csv')[~malicious]
      for runner in (trains, frozen)
  ]
  pd.testing.assert_frame_equal(benign_rows[0], benign_rows[1])
  for index in np.flatnonzero(~malicious):
    for a, b in zip(
        trains.personalized_weights(index), frozen.personalized_weights(index)
    ):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('setting', list(SETTINGS))
def test_malicious_state_files_are_left_alone(runs, setting):
  trains, frozen = runs[setting][True], runs[setting][False]
  malicious = frozen.malicious
  trained_malicious = malicious & (
      trains.store.versions != client_states.INITIAL_VERSION
  )
  # Sampled malicious clients wrote states only where they train.
  assert trained_malicious.any()
  assert (
      frozen.store.versions[malicious] == client_states.INITIAL_VERSION
  ).all()
  np.testing.assert_array_equal(
      trains.store.versions[~malicious], frozen.store.versions[~malicious]
  )


def test_personal_train_loss_is_over_benign_clients_when_frozen(runs):
  # A round whose clients were all benign reports the same personal loss;
  # one with malicious clients differs (theirs are left out).
  trains, frozen = runs['a1_auto'][True], runs['a1_auto'][False]
  metrics = [_read(runner, 'metrics.csv') for runner in (trains, frozen)]
  clean = metrics[1]['sampled_malicious'] == 0
  np.testing.assert_array_equal(
      metrics[0]['personal_train_loss'][clean],
      metrics[1]['personal_train_loss'][clean],
  )
  attacked = ~clean & (metrics[1]['sampled_malicious'] < 4)
  assert attacked.any()
  assert (
      metrics[0]['personal_train_loss'][attacked]
      != metrics[1]['personal_train_loss'][attacked]
  ).all()
