"""Per-dataset hyper-parameter presets and config validation (no TF import).

Kept free of TensorFlow so that `run_experiment.py` can reject bad flags in
well under a second, before any TF/TFF work starts. Presets follow the Ditto
reference scripts where they exist (Vehicle, Fashion-MNIST:
../shared/reference/reference_implementations.md A.8); FEMNIST's learning rate
was chosen on validation data (see docs/results.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tff_ditto import names
from tff_ditto import training_config

DATASET_PRESETS: dict[str, dict[str, Any]] = {
    'synthetic': dict(
        rounds=100,
        clients_per_round=10,
        local_steps=10,
        batch_size=10,
        client_lr=0.05,
        lam=1.0,
        eval_every=10,
        finetune_steps=20,
        skl_lam=0.01,
    ),
    # client_lr from {0.03, 0.1, 0.3} on validation (docs/results.md, 'Real
    # FEMNIST, clean'); Per-FedAvg's alpha from {0.1, 0.03, 0.01, 0.003} on
    # validation (docs/results.md, 'FEMNIST: Table 2'; alpha = 0.1
    # diverges); SKL's strength from {0.01, 0.001} on validation (0.01
    # collapses 36 writers).
    'femnist': dict(
        rounds=500,
        clients_per_round=10,
        local_steps=10,
        batch_size=10,
        client_lr=0.1,
        lam=1.0,
        eval_every=50,
        finetune_steps=50,
        perfedavg_alpha=0.01,
        skl_lam=0.001,
    ),
    'emnist': dict(
        rounds=300,
        clients_per_round=10,
        local_steps=10,
        batch_size=10,
        client_lr=0.05,
        lam=1.0,
        eval_every=20,
        finetune_steps=50,
        skl_lam=0.01,
    ),
    # The reference's run_fashion_*.sh: 5,000 rounds, lr 0.05, batch 16,
    # 2 local steps, 10 clients per round, 40 fine-tuning iterations (they
    # evaluate every 10 rounds; 50 here, as evaluating 500 devices costs
    # more than 10 rounds).
    'fmnist': dict(
        rounds=5000,
        clients_per_round=10,
        local_steps=2,
        batch_size=16,
        client_lr=0.05,
        lam=1.0,
        eval_every=50,
        finetune_steps=40,
        skl_lam=0.01,
    ),
    'vehicle': dict(
        rounds=600,
        clients_per_round=10,
        local_steps=1,
        batch_size=32,
        client_lr=0.01,
        lam=1.0,
        eval_every=10,
        finetune_steps=40,
        skl_lam=0.01,
    ),
    'celeba': dict(
        rounds=300,
        clients_per_round=10,
        local_steps=10,
        batch_size=10,
        client_lr=0.05,
        lam=1.0,
        eval_every=20,
        finetune_steps=40,
        skl_lam=0.01,
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
  unknown = [m for m in methods if m not in names.METHODS]
  if unknown:
    raise ValueError(f'unknown --method {unknown}; choose from {names.METHODS}')
  if len(set(methods)) != len(methods):
    raise ValueError(f'--method lists a method twice: {list(methods)}')
  values = preset_for(dataset_name)
  values.update({k: v for k, v in overrides.items() if v is not None})
  field_names = {
      f.name for f in dataclasses.fields(training_config.ExperimentConfig)
  }
  values = {k: v for k, v in values.items() if k in field_names}
  configs = []
  for method in methods:
    config = training_config.ExperimentConfig(**{**values, 'method': method})
    config.validate()
    configs.append(config)
  return configs


# What `run_experiment.py` records in <output_dir>/flags.json.
FLAGS_FILE = 'flags.json'


def recorded_settings(
    output_dir: str,
    explicit_flags: Mapping[str, Any],
    rounds: Optional[int] = None,
) -> dict[str, Any]:
  """The settings of the run recorded in `output_dir`, for --resume.

  Args:
    output_dir: The run's directory (holds flags.json).
    explicit_flags: Flags given on the resuming command line (other than
      those that may change); each must equal the recorded value.
    rounds: If given, every method continues to this many rounds.

  Returns:
    Keyword arguments for `tff_ditto.experiment.run_comparison`.

  Raises:
    ValueError: No recorded run, or a flag contradicting it.
  """
  path = os.path.join(output_dir, FLAGS_FILE)
  if not os.path.exists(path):
    raise ValueError(f'--resume: {path} not found; no run recorded there')
  with open(path) as f:
    recorded = json.load(f)
  recorded_flags = recorded.get('flags', {})
  for name, value in explicit_flags.items():
    if name in recorded_flags and recorded_flags[name] != value:
      raise ValueError(
          f'--{name}={value} differs from the recorded run '
          f'({recorded_flags[name]!r}); --resume continues the recorded '
          'settings (only --rounds may change)'
      )
  configs = []
  for values in recorded['configs']:
    if rounds is not None:
      values = {**values, 'rounds': rounds}
    config = training_config.ExperimentConfig(**values)
    config.validate()
    configs.append(config)
  return dict(
      dataset_name=recorded['dataset'],
      data_dir=recorded['data_dir'],
      configs=configs,
      validation_fraction=recorded['validation_fraction'],
      max_clients=recorded['max_clients'],
  )
