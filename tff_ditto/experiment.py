"""Runs several methods on one dataset and compares them (run_experiment.py)."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import pandas as pd

from tff_ditto import checkpoints
from tff_ditto import experiment_defaults
from tff_ditto import models
from tff_ditto import training
from tff_ditto import training_config
from tff_ditto.data import DataError
from tff_ditto.data import load_dataset

COMPARISON_COLUMNS = (
    'method',
    'benign_mean_accuracy',
    'benign_std_accuracy',
    'benign_pooled_accuracy',
    'benign_worst10_accuracy',
    'benign_pooled_loss',
    'rounds',
    'seconds',
)


class ExperimentError(RuntimeError):
  """A run cannot start: bad data, or an output directory in the way."""


def markdown_table(frame: pd.DataFrame, float_format: str = '{:.4f}') -> str:
  """A GitHub markdown table of a DataFrame (no extra dependency)."""

  def cell(value):
    if isinstance(value, float):
      return float_format.format(value)
    return str(value)

  lines = [
      '| ' + ' | '.join(str(c) for c in frame.columns) + ' |',
      '|' + '---|' * len(frame.columns),
  ]
  for row in frame.itertuples(index=False):
    lines.append('| ' + ' | '.join(cell(v) for v in row) + ' |')
  return '\n'.join(lines)


def run_comparison(
    *,
    dataset_name: str,
    data_dir: Optional[str],
    configs: Sequence[training_config.ExperimentConfig],
    output_dir: str,
    validation_fraction: float = 0.1,
    max_clients: Optional[int] = None,
    resume: bool = False,
    overwrite: bool = False,
    flag_values: Optional[Mapping[str, Any]] = None,
    log_fn=print,
) -> pd.DataFrame:
  """Runs each config (one per method) and returns the comparison table.

  Args:
    dataset_name: Name for `tff_ditto.data.load_dataset`.
    data_dir: Its data directory.
    configs: One `ExperimentConfig` per method, same seed.
    output_dir: Root; each method writes to `<output_dir>/<method>/`.
    validation_fraction: Held-out fraction of each client's train data.
    max_clients: Keep only the first N clients.
    resume: Continue each method from its latest checkpoint.
    overwrite: Replace existing results.
    flag_values: Recorded in `<output_dir>/flags.json`.
    log_fn: Progress output.

  Returns:
    DataFrame with COMPARISON_COLUMNS, one row per method.

  Raises:
    ExperimentError: Bad data or an output directory in the way.
  """
  if os.path.isdir(output_dir) and os.listdir(output_dir) and not resume:
    if not overwrite:
      raise ExperimentError(
          f'{output_dir} already holds results; pass --resume to continue '
          'that run or --overwrite to replace it.'
      )
    shutil.rmtree(output_dir)
  seed = configs[0].seed
  try:
    dataset = load_dataset(
        dataset_name,
        data_dir,
        validation_fraction=validation_fraction,
        seed=seed,
        max_clients=max_clients,
    )
  except DataError as error:
    raise ExperimentError(str(error)) from error
  log_fn(dataset.summary())
  spec = models.get_model_spec(dataset_name, seed=seed)
  os.makedirs(output_dir, exist_ok=True)
  if not resume:
    with open(
        os.path.join(output_dir, experiment_defaults.FLAGS_FILE), 'w'
    ) as f:
      json.dump(
          collections.OrderedDict(
              dataset=dataset_name,
              data_dir=data_dir,
              validation_fraction=validation_fraction,
              max_clients=max_clients,
              configs=[dataclasses.asdict(c) for c in configs],
              flags=dict(flag_values or {}),
          ),
          f,
          indent=2,
          default=str,
      )
  rows = []
  for config in configs:
    try:
      runner = training.ExperimentRunner(
          config,
          dataset,
          spec.tff_model_fn(),
          os.path.join(output_dir, config.method),
          resume=resume,
          log_fn=log_fn,
      )
    except checkpoints.OutputDirectoryError as error:
      raise ExperimentError(str(error)) from error
    summary = runner.run()
    row = collections.OrderedDict(method=config.method)
    row.update(summary['final'])
    row['rounds'] = config.rounds
    row['seconds'] = summary['seconds']
    rows.append(row)
  comparison = pd.DataFrame(rows)
  comparison = comparison[[c for c in COMPARISON_COLUMNS if c in comparison]]
  comparison.to_csv(os.path.join(output_dir, 'comparison.csv'), index=False)
  with open(os.path.join(output_dir, 'comparison.md'), 'w') as f:
    f.write(markdown_table(comparison) + '\n')
  return comparison
