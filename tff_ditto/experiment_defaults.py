"""Per-dataset hyper-parameter presets and config validation (no TF import).

Kept free of TensorFlow so that `run_experiment.py` can reject bad flags in
well under a second, before any TF/TFF work starts. Presets follow the Ditto
reference scripts where they exist (Vehicle, Fashion-MNIST:
../shared/reference/reference_implementations.md A.8); FEMNIST's learning rate
was chosen on validation data (see README).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tff_ditto import training_config

DATASET_PRESETS: dict[str, dict[str, Any]] = {
    'synthetic': dict(
        rounds=100, clients_per_round=10, local_steps=10, batch_size=10,
        client_lr=0.05, lam=1.0, eval_every=10, finetune_steps=20,
    ),
    'femnist': dict(
        rounds=300, clients_per_round=10, local_steps=10, batch_size=10,
        client_lr=0.05, lam=1.0, eval_every=20, finetune_steps=50,
    ),
    'emnist': dict(
        rounds=300, clients_per_round=10, local_steps=10, batch_size=10,
        client_lr=0.05, lam=1.0, eval_every=20, finetune_steps=50,
    ),
    'fmnist': dict(
        rounds=500, clients_per_round=10, local_steps=2, batch_size=16,
        client_lr=0.05, lam=1.0, eval_every=10, finetune_steps=40,
    ),
    'vehicle': dict(
        rounds=600, clients_per_round=10, local_steps=1, batch_size=32,
        client_lr=0.01, lam=1.0, eval_every=10, finetune_steps=40,
    ),
    'celeba': dict(
        rounds=300, clients_per_round=10, local_steps=10, batch_size=10,
        client_lr=0.05, lam=1.0, eval_every=20, finetune_steps=40,
    ),
}


def preset_for(dataset_name: str) -> dict[str, Any]:
  name = dataset_name.lower()
  if name.startswith('synthetic') or name == 'leaf_synthetic':
    return dict(DATASET_PRESETS['synthetic'])
  if name == 'tff_celeba':
    name = 'celeba'
  return dict(DATASET_PRESETS.get(name, DATASET_PRESETS['femnist']))


def build_configs(
    dataset_name: str,
    methods: Sequence[str],
    overrides: Mapping[str, Any],
) -> list[training_config.ExperimentConfig]:
  """One validated config per method: preset, then non-None overrides.

  Raises:
    ValueError: One line naming the bad value.
  """
  if not methods:
    raise ValueError('--method is empty')
  unknown = [m for m in methods if m not in training_config.METHODS]
  if unknown:
    raise ValueError(
        f'unknown --method {unknown}; choose from {training_config.METHODS}'
    )
  if len(set(methods)) != len(methods):
    raise ValueError(f'--method lists a method twice: {list(methods)}')
  values = preset_for(dataset_name)
  values.update({k: v for k, v in overrides.items() if v is not None})
  field_names = {f.name for f in dataclasses.fields(training_config.ExperimentConfig)}
  values = {k: v for k, v in values.items() if k in field_names}
  configs = []
  for method in methods:
    config = training_config.ExperimentConfig(**{**values, 'method': method})
    config.validate()
    configs.append(config)
  return configs
