"""The methods a run can train, as the runner uses them, and their building.

A `Method` is everything method-specific the runner needs: its learning
process, what each sampled client's round data hold (a
`round_data.ClientDataFields`), whether its clients keep state files, and how
its models are evaluated on every client. Ditto's family (`ditto`, `local`,
`global`, `finetune`) are `tff_ditto.ditto_family.DittoFamilyMethod`s, the
paper's baselines the `tff_ditto.baselines.BaselineMethod`s of their
registry. `PersonalModels` are the lambdas of a run's personal models.

`build_method` builds a run's method, and `build_global_evaluation` the
evaluation of the global model every run reports, taking what earlier runs
built from the same inputs from a `ComputationCache`.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Optional, Protocol

import tensorflow_federated as tff

from tff_ditto import aggregator_specs
from tff_ditto import attacks
from tff_ditto import baselines
from tff_ditto import client_data_schema
from tff_ditto import computation_cache
from tff_ditto import ditto_client
from tff_ditto import ditto_family
from tff_ditto import evaluation
from tff_ditto import lambda_policy
from tff_ditto import round_data
from tff_ditto import runtime
from tff_ditto import split_evaluation
from tff_ditto import training_config
from tff_ditto.data import FederatedDataset
from tff_ditto.training_config import ExperimentConfig


class Method(Protocol):
  """One method as the runner runs it.

  Attributes:
    name: The method (`ExperimentConfig.method`).
    process: Its `tff.learning.templates.LearningProcess`.
    client_data_fields: What each sampled client's round data hold.
    stateful: Its clients keep state files (the runner's
      `FileClientStateStore`, committed every round).
  """

  name: str
  process: tff.learning.templates.LearningProcess
  client_data_fields: round_data.ClientDataFields
  stateful: bool

  def evaluate_clients(
      self,
      model_weights: tff.learning.models.ModelWeights,
      split: str,
      inputs: round_data.RoundDataBuilder,
  ) -> list:
    """Per-client metrics of the method's models on `split`.

    Args:
      model_weights: The global model.
      split: 'test' or 'validation'.
      inputs: The run's builder of client inputs.

    Returns:
      One record (loss_sum, num_correct, num_examples) per client; with
      several personal models per client, each entry is a vector over them
      (in state order).
    """

  def evaluate_clients_on_splits(
      self,
      model_weights: tff.learning.models.ModelWeights,
      splits: Sequence[str],
      inputs: round_data.RoundDataBuilder,
  ) -> dict[str, list]:
    """`evaluate_clients` on each of `splits` (distinct), by split.

    A method whose clients keep their models in state files reads each file
    once for all the splits.
    """


@dataclasses.dataclass(frozen=True)
class PersonalModels:
  """The personal models each client of a run keeps, and their lambdas.

  Attributes:
    lambdas: The lambdas of the personal models: the selection lambdas, then
      the report-only ones (`lambda_policy.personal_model_lambdas`).
    selection_lambdas: The candidates of the per-device selection, or the
      single fixed lambda (`lambda_policy.selection_lambdas`).
    select_per_step: lam_selection 'per_step': a single personal model
      chooses among the lambdas at every step.
    fallback_lambda: The lambda of a client with too little validation data
      (`lambda_policy.fallback_lambda`).
  """

  lambdas: tuple[float, ...]
  selection_lambdas: tuple[float, ...]
  select_per_step: bool
  fallback_lambda: float

  @classmethod
  def from_config(cls, config: ExperimentConfig) -> PersonalModels:
    """The personal models of a run with the (effective) `config`."""
    return cls(
        lambdas=lambda_policy.personal_model_lambdas(config),
        selection_lambdas=lambda_policy.selection_lambdas(config),
        select_per_step=config.lam_selection == 'per_step',
        fallback_lambda=lambda_policy.fallback_lambda(config.strong_attack),
    )

  @property
  def count(self) -> int:
    """Personal models per client: one per lambda, or one ('per_step')."""
    return 1 if self.select_per_step else len(self.lambdas)


def check_validation_data(
    config: ExperimentConfig, dataset: FederatedDataset
) -> None:
  """Lambda selection by validation loss needs some client's validation data.

  Args:
    config: The run's config.
    dataset: Its dataset.

  Raises:
    ValueError: If `config` selects lambda ('auto' or 'per_step', method
      `ditto`) and no client has `MIN_VALIDATION_EXAMPLES_FOR_SELECTION`
      validation examples (every client would use the fallback lambda).
  """
  if config.method != 'ditto' or config.lam_selection == 'fixed':
    return
  needed = lambda_policy.MIN_VALIDATION_EXAMPLES_FOR_SELECTION
  if dataset.num_clients and (dataset.num_validation_examples().max() < needed):
    raise ValueError(
        f'lam_selection {config.lam_selection} chooses lambda by validation '
        f'loss, but no client of {dataset.name} has >= {needed} validation '
        'examples (hold some out: validation_fraction > 0)'
    )


def build_global_evaluation(
    model_fn: client_data_schema.ModelFn,
    cache: Optional[computation_cache.ComputationCache] = None,
) -> tff.Computation:
  """The split evaluation of the global model (`split_evaluation`).

  Args:
    model_fn: The model builder.
    cache: Where earlier runs left it, or None to build it.

  Returns:
    The computation.
  """
  return computation_cache.get_or_build(
      cache,
      'global_evaluation',
      computation_cache.ByIdentity(model_fn),
      lambda: split_evaluation.build_global_split_evaluation(model_fn),
  )


def build_method(
    config: ExperimentConfig,
    model_fn: client_data_schema.ModelFn,
    global_evaluation: tff.Computation,
    *,
    num_clients: int,
    num_malicious: int,
    personal_models: PersonalModels,
    model_aggregator=None,
    cache: Optional[computation_cache.ComputationCache] = None,
) -> Method:
  """Builds (or takes from `cache`) the method `config` names.

  Every computation is cached under exactly what its builder receives: the
  model (by identity), the aggregator (its `AggregatorSpec`, or a given
  factory by identity), whether the execution context merges partial
  aggregates (the aggregators' gather is chosen at build time), and the
  builder's own arguments.

  Args:
    config: The run's (effective) config.
    model_fn: The model builder.
    global_evaluation: `build_global_evaluation`'s computation (the `global`
      method's evaluation).
    num_clients: N, the clients of the dataset.
    num_malicious: The malicious clients among them.
    personal_models: The run's personal models.
    model_aggregator: A `tff.aggregators` factory, or None for the one of
      `config.aggregator` (`aggregator_specs.model_aggregator_spec`).
    cache: The cache, or None to build everything.

  Returns:
    The method.
  """
  model = computation_cache.ByIdentity(model_fn)
  if model_aggregator is None:
    aggregator_key = aggregator_specs.model_aggregator_spec(
        config, num_clients, num_malicious
    )
    make_aggregator = aggregator_key.build
  else:
    aggregator_key = computation_cache.ByIdentity(model_aggregator)
    make_aggregator = lambda: model_aggregator
  process_inputs = (model, aggregator_key, runtime.merges_partial_aggregates())
  simulate_attacks = (
      attacks.update_attack_code(attacks.canonical_attack_name(config.attack))
      != 0
  )
  if config.method in baselines.BASELINE_METHODS:
    return computation_cache.get_or_build(
        cache,
        'baseline',
        (
            process_inputs,
            baselines.build_key(config, num_clients),
            simulate_attacks,
        ),
        lambda: baselines.build_method(
            config,
            model_fn,
            num_clients=num_clients,
            model_aggregator=make_aggregator(),
            simulate_attacks=simulate_attacks,
        ),
    )
  personalize = config.method in training_config.PERSONALIZED_METHODS
  weighting = aggregator_specs.client_weighting(config)
  spec = ditto_family.DittoProcessSpec(
      client_lr=config.client_lr,
      personal_lr=config.personal_lr if personalize else None,
      personal_lambdas=tuple(personal_models.lambdas),
      local_steps=config.local_steps,
      server_optimizer=config.server_optimizer,
      server_lr=config.server_lr,
      global_proximal_strength=config.fedprox_mu,
      client_weighting=weighting,
      personalize=personalize,
      simulate_attacks=simulate_attacks,
      select_lambda_per_step=personal_models.select_per_step,
      fallback_lambda=(
          personal_models.fallback_lambda
          if personal_models.select_per_step
          else None
      ),
  )
  process = computation_cache.get_or_build(
      cache,
      'ditto_process',
      (process_inputs, spec),
      lambda: spec.build(model_fn, make_aggregator()),
  )
  method = ditto_family.DittoFamilyMethod(
      name=config.method,
      process=process,
      client_data_fields=round_data.ClientDataFields(
          batches_per_round=config.local_steps,
          personal_state=personalize,
          attack=simulate_attacks,
          validation=personal_models.select_per_step,
          full_train=weighting == ditto_client.LOSS_WEIGHTING,
          num_train_examples=(
              weighting == ditto_client.NUM_TRAIN_EXAMPLES_WEIGHTING
          ),
          malicious_personal_training=config.malicious_personal_training,
      ),
      stateful=personalize,
      global_evaluation=global_evaluation,
  )
  if personalize:

    def build_personalized_evaluation(num_splits: int) -> tff.Computation:
      return computation_cache.get_or_build(
          cache,
          'personalized_evaluation',
          (model, personal_models.count, num_splits),
          lambda: split_evaluation.build_personalized_split_evaluation(
              model_fn,
              num_personal_models=personal_models.count,
              num_splits=num_splits,
          ),
      )

    method.build_personalized_evaluation = build_personalized_evaluation
  if config.method == 'finetune':
    method.finetune_evaluation = computation_cache.get_or_build(
        cache,
        'finetune_evaluation',
        (model, config.client_lr, config.finetune_lam),
        lambda: evaluation.build_finetune_evaluation(
            model_fn,
            tff.learning.optimizers.build_sgdm(learning_rate=config.client_lr),
            proximal_strength=config.finetune_lam,
        ),
    )
  return method
