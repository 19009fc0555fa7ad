"""Which runs compute the same results: effective configs and derived results.

`effective_config` normalizes a config to what its run actually uses (and
records). `derived_result` says where, in the output of one multi-lambda
Ditto run, the results of another run are, exactly: such a run trains, on the
same batches, FedAvg's global model and one personal model per lambda
(`tff_ditto.reproduction.derived_rows` reads them). No TensorFlow import.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from tff_ditto import lambda_policy
from tff_ditto import training_config

# Fields only one method reads, so a dataset preset may set them for every
# method; every other method records the field's default instead.
_METHOD_ONLY_FIELDS = {
    'perfedavg_alpha': 'perfedavg',
    'skl_lam': 'skl',
    'ewc_lam': 'ewc',
}


def effective_config(
    config: training_config.ExperimentConfig,
) -> training_config.ExperimentConfig:
  """The config a run actually uses (and records in its summary).

  `local` is Ditto with lambda = 0, and only Ditto selects lambda per device;
  every other method runs with a fixed lambda. A field only one method reads
  (`perfedavg_alpha`, `skl_lam`, `ewc_lam`) is reset to its default for the
  other methods, so a preset for one method leaves the others' records as
  they were.

  Args:
    config: A config as given.

  Returns:
    The same config with those fields normalized.
  """
  if config.method == 'local':
    config = dataclasses.replace(config, lam=0.0)
  if config.method != 'ditto':
    config = dataclasses.replace(config, lam_selection='fixed')
  unused = {
      field.name: field.default
      for field in dataclasses.fields(training_config.ExperimentConfig)
      if _METHOD_ONLY_FIELDS.get(field.name, config.method) != config.method
  }
  return dataclasses.replace(config, **unused)


@dataclasses.dataclass(frozen=True)
class DerivedResult:
  """Where one run's results sit in the output of a multi-lambda Ditto run.

  Attributes:
    summary_prefix: The prefix, in the Ditto run's summary, of the keys that
      the run itself reports as 'benign_<name>' (`evaluation.summarize`
      names).
    accuracy_column: The column of the Ditto run's client_metrics.csv that
      holds the run's per-client accuracy (its own 'accuracy').
  """

  summary_prefix: str
  accuracy_column: str


# Fields that change neither training nor the final evaluation.
_FIELDS_NOT_CHANGING_RESULTS = ('eval_every', 'checkpoint_every', 'curve_split')
# Fields that change no number computed over benign devices or from the
# global model (every number the reproduction reports), only the malicious
# devices' personal models and the personal train loss
# (tests/test_malicious_personal_training.py).
FIELDS_NOT_CHANGING_REPORTED_RESULTS = ('malicious_personal_training',)
# Fields in which the runs a multi-lambda Ditto run serves differ from it.
_LAMBDA_FIELDS = (
    'method',
    'lam',
    'lam_selection',
    'strong_attack',
    'report_lambdas',
)


def _same_training(
    target: training_config.ExperimentConfig,
    source: training_config.ExperimentConfig,
) -> bool:
  """Whether the two effective configs agree in every field that matters.

  The lambda fields aside; a `global` run trains no personal model, so its
  `personal_lr` does not matter either.
  """
  ignored = set(
      _FIELDS_NOT_CHANGING_RESULTS
      + FIELDS_NOT_CHANGING_REPORTED_RESULTS
      + _LAMBDA_FIELDS
  )
  if target.method == 'global':
    ignored.add('personal_lr')
  return all(
      getattr(target, field.name) == getattr(source, field.name)
      for field in dataclasses.fields(training_config.ExperimentConfig)
      if field.name not in ignored
  )


def derived_result(
    target: training_config.ExperimentConfig,
    source: training_config.ExperimentConfig,
) -> Optional[DerivedResult]:
  """Where `target`'s results are in `source`'s output, if they are there.

  A `ditto` run with report lambdas (`source`) trains, on the batches of
  every other run of its settings, the global model of a `global` run with
  its server aggregator bit for bit (the server aggregates only the
  clients' global-model updates and never sees the personal models) and
  one personal model per lambda of `lambda_policy.personal_model_lambdas`.
  So it holds, exactly, the results of a `global` run (its global model), a
  `local` run (lambda 0 among its lambdas), a fixed-lambda `ditto` run
  (that lambda among its lambdas) and, if it selects lambda per device
  itself, a `ditto` run with the same selection and no report lambdas, each
  with the same aggregator (tests/test_report_lambdas.py checks all four
  with the mean, tests/test_report_lambdas_robust.py the first, third and
  fourth with the robust aggregators of the paper's tables under attack).

  Args:
    target: The run whose results are wanted.
    source: The multi-lambda Ditto run.

  Returns:
    Where the results are, or None when `source` does not hold them (other
    settings, a lambda it did not train, a source with one personal model).
  """
  target, source = effective_config(target), effective_config(source)
  if (
      source.method != 'ditto'
      or source.lam_selection == 'per_step'
      or not source.report_lambdas
      or len(lambda_policy.personal_model_lambdas(source)) < 2
      or target.report_lambdas
      or not _same_training(target, source)
  ):
    return None
  if target.method == 'global':
    return DerivedResult('global_model_benign_', 'global_model_accuracy')
  if target.method not in ('ditto', 'local'):
    return None
  if (
      target.lam_selection == 'fixed'
      and target.lam in lambda_policy.personal_model_lambdas(source)
  ):
    return DerivedResult(
        f'benign_lam_{target.lam:g}_', f'lam_{target.lam:g}_accuracy'
    )
  if (
      target.lam_selection == 'auto'
      and source.lam_selection == 'auto'
      and target.strong_attack == source.strong_attack
  ):
    return DerivedResult('benign_', 'accuracy')
  return None
