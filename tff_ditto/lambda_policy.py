"""Ditto's lambdas: which a run trains, selects among and falls back to.

The paper's per-device lambda selection (Section 5, "selecting lambda"): each
device chooses among `lambda_candidates` by its validation loss, and a device
with fewer than `MIN_VALIDATION_EXAMPLES_FOR_SELECTION` validation examples
uses `fallback_lambda`. A run (`tff_ditto.training_config.ExperimentConfig`)
evaluates a personal model of its `selection_lambdas` and trains one of each
of its `personal_model_lambdas`. No TensorFlow import.
"""

from __future__ import annotations

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
