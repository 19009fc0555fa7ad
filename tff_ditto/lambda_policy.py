"""Ditto's lambdas: which a run trains, selects among and falls back to.

The paper's per-device lambda selection (Section 5, "selecting lambda"): each
device chooses among `lambda_candidates` by its validation loss, and a device
with fewer than `MIN_VALIDATION_EXAMPLES_FOR_SELECTION` validation examples
uses `fallback_lambda`. A run (`tff_ditto.training_config.ExperimentConfig`)
evaluates a personal model of its `selection_lambdas` and trains one of each
of its `personal_model_lambdas`. `personal_lambdas` and
`per_step_fallback_index` check the lambda arguments of
`tff_ditto.ditto.build_ditto_process`. No TensorFlow import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy as np

from tff_ditto import training_config

# Validation examples a device needs to select its lambda itself.
MIN_VALIDATION_EXAMPLES_FOR_SELECTION = 4


def lambda_candidates(strong_attack: bool) -> tuple[float, ...]:
  """The lambdas a device chooses from: {0.05, 0.1, 0.2} or {0.1, 1, 2}."""
  return (0.05, 0.1, 0.2) if strong_attack else (0.1, 1.0, 2.0)


def fallback_lambda(strong_attack: bool) -> float:
  """Lambda of a device with fewer than 4 validation examples: 0.1 or 1."""
  return 0.1 if strong_attack else 1.0


def selection_lambdas(
    config: training_config.ExperimentConfig,
) -> tuple[float, ...]:
  """The lambdas a run's evaluated personal model comes from.

  Args:
    config: An effective config
      (`tff_ditto.config_equivalence.effective_config`).

  Returns:
    The candidates of `lambda_candidates(config.strong_attack)` with
    lam_selection 'auto' or 'per_step', else `(config.lam,)`.
  """
  if config.lam_selection in ('auto', 'per_step'):
    return lambda_candidates(config.strong_attack)
  return (float(config.lam),)


def personal_model_lambdas(
    config: training_config.ExperimentConfig,
) -> tuple[float, ...]:
  """The lambdas a run trains: selection lambdas, then the report-only ones.

  The report lambdas that are not selection lambdas follow in ascending
  order, so the same set of lambdas always trains the same models in the
  same state order (and builds the same process).

  Args:
    config: An effective config
      (`tff_ditto.config_equivalence.effective_config`).

  Returns:
    `selection_lambdas(config)` followed by the other `report_lambdas`.
  """
  selection = selection_lambdas(config)
  extras = sorted(set(config.report_lambdas) - set(selection))
  return selection + tuple(extras)


def personal_lambdas(
    personal_lambda: Union[float, Sequence[float]],
) -> tuple[float, ...]:
  """The lambda of each personal model: one value, or a tuple of candidates.

  Args:
    personal_lambda: A lambda >= 0 (`tff_ditto.ditto.build_ditto_process`),
      or a sequence of them.

  Returns:
    The lambdas as a tuple of floats.

  Raises:
    ValueError: On an empty sequence or a negative lambda.
  """
  if isinstance(personal_lambda, (int, float, np.floating, np.integer)):
    lambdas = (float(personal_lambda),)
  else:
    lambdas = tuple(float(value) for value in personal_lambda)
  if not lambdas:
    raise ValueError('personal_lambda must not be an empty sequence.')
  if any(value < 0 for value in lambdas):
    raise ValueError(f'personal_lambda must be >= 0, got {personal_lambda}.')
  return lambdas


def per_step_fallback_index(
    lambdas: Sequence[float],
    fallback_lambda: Optional[float],
    personalize: bool,
    min_validation_examples: int,
) -> int:
  """Checks a per-step lambda selection; returns the fallback's index.

  Args:
    lambdas: The candidates (from `personal_lambdas`).
    fallback_lambda: The lambda of clients with too little validation data;
      None is allowed with a single candidate (then that one).
    personalize: Must be True (the selection trains the personal model).
    min_validation_examples: Validation examples needed to select, >= 1.

  Returns:
    The index of the fallback lambda in `lambdas`.

  Raises:
    ValueError: On personalize False, a fallback that is not a candidate or
      min_validation_examples < 1.
  """
  if not personalize:
    raise ValueError('select_lambda_per_step needs personalize=True.')
  if min_validation_examples < 1:
    raise ValueError(
        f'min_validation_examples must be >= 1, got {min_validation_examples}.'
    )
  if fallback_lambda is None and len(lambdas) == 1:
    return 0
  if fallback_lambda not in lambdas:
    raise ValueError(
        f'fallback_lambda {fallback_lambda} must be one of the candidate '
        f'lambdas {lambdas}.'
    )
  return list(lambdas).index(fallback_lambda)
