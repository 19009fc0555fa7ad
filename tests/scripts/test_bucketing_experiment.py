"""scripts/bucketing_experiment.py: cell names and the one-batch round data."""

import importlib.util
import os

import numpy as np
import pytest

import repo_paths
from tff_ditto import models
from tff_ditto import training
from tff_ditto import training_config
from tff_ditto.data import load_dataset

_SCRIPT = os.path.join(repo_paths.SCRIPTS, 'bucketing_experiment.py')
_spec = importlib.util.spec_from_file_location('bucketing_experiment', _SCRIPT)
bucketing_experiment = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bucketing_experiment)


def test_parse_cell():
  assert bucketing_experiment.parse_cell('rfa_s2_ipm') == ('rfa', 2, 'ipm')
  assert bucketing_experiment.parse_cell('mean_s0_none') == ('mean', 0, 'none')
  for bad in ('rfa_2_ipm', 'rfa_s2_lf', 'rfa_s2', 'rfa_sx_ipm'):
    with pytest.raises(ValueError):
      bucketing_experiment.parse_cell(bad)


def test_default_cells_cover_the_grid():
  cells = bucketing_experiment.default_cells()
  assert len(cells) == 16 and len(set(cells)) == 16
  for aggregator in ('median', 'rfa'):
    for attack in ('alie', 'ipm', 'mimic'):
      assert f'{aggregator}_s0_{attack}' in cells
      assert f'{aggregator}_s2_{attack}' in cells


def test_one_batch_round_data_sends_one_batch_of_own_examples(tmp_path):
  full = load_dataset('synthetic')
  dataset = full.subset(full.client_ids[:6])
  config = training_config.ExperimentConfig(
      method='global',
      rounds=2,
      clients_per_round=6,
      local_steps=1,
      batch_size=4,
      eval_every=2,
      sampling='uniform',
      attack='ipm',
      attack_ratio=2 / 6,
      attack_poison_labels=False,
      aggregator='median',
      bucketing_size=2,
  )
  runner = training.ExperimentRunner(
      config,
      dataset,
      models.get_model_spec('synthetic', seed=0).tff_model_fn(),
      str(tmp_path / 'run'),
      malicious_client_indices=[4, 5],
      log_fn=None,
      round_data_class=bucketing_experiment.one_batch_round_data_class(),
  )
  clients = np.arange(6)
  fields = runner.method.client_data_fields
  data = runner.round_data.client_data(0, clients, fields)
  again = runner.round_data.client_data(0, clients, fields)
  for index, (client, repeat) in enumerate(zip(data, again)):
    batches = list(client['batches'].as_numpy_iterator())
    assert len(batches) == 1
    x = batches[0]['x']
    assert x.shape[0] == 4
    assert len({row.tobytes() for row in x}) == 4  # distinct examples
    own = {
        row.tobytes() for row in dataset.train[dataset.client_ids[index]]['x']
    }
    assert all(row.tobytes() in own for row in x)
    np.testing.assert_array_equal(
        x, list(repeat['batches'].as_numpy_iterator())[0]['x']
    )
    code = list(client['attack'].as_numpy_iterator())[0]['code']
    assert (code != 0) == (index >= 4)
  summary = runner.run()
  assert summary['num_malicious'] == 2
  weights = runner.process.get_model_weights(runner.state)
  assert all(np.all(np.isfinite(w)) for w in weights.trainable)
