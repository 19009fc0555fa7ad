"""Presets and derived aggregator parameters follow the reference code."""

import pytest

from tff_ditto import aggregator_specs
from tff_ditto import experiment_defaults
from tff_ditto import training_config


def test_fashion_mnist_preset_is_the_reference_scripts():
  # run_fashion_*.sh: 5,000 rounds, lr 0.05, batch 16, 2 local iterations,
  # 10 clients per round, lambda 1, 40 fine-tuning iterations.
  preset = experiment_defaults.DATASET_PRESETS['fmnist']
  assert {
      key: preset[key]
      for key in (
          'rounds',
          'client_lr',
          'batch_size',
          'local_steps',
          'clients_per_round',
          'lam',
          'finetune_steps',
      )
  } == dict(
      rounds=5000,
      client_lr=0.05,
      batch_size=16,
      local_steps=2,
      clients_per_round=10,
      lam=1.0,
      finetune_steps=40,
  )


def test_vehicle_preset_is_the_reference_scripts():
  preset = experiment_defaults.DATASET_PRESETS['vehicle']
  assert (
      preset['rounds'],
      preset['client_lr'],
      preset['batch_size'],
      preset['local_steps'],
  ) == (600, 0.01, 32, 1)


@pytest.mark.parametrize('num_malicious, expected_b', [(0, 0), (6, 3), (2, 1)])
def test_trimmed_mean_trims_the_expected_attackers_per_round(
    num_malicious, expected_b
):
  # b = E = int(clients_per_round * malicious / N), as TM(b=f): no trimming
  # without attackers.
  config = training_config.ExperimentConfig(
      aggregator='trimmed_mean', clients_per_round=10
  )
  spec = aggregator_specs.model_aggregator_spec(config, 20, num_malicious)
  assert dict(spec.parameters) == {'b': expected_b}
