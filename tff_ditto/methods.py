"""The methods a run can train, as the runner uses them, and their building.

A `Method` is everything method-specific the runner needs: its learning
process, what each sampled client's round data hold (a
`round_data.ClientDataFields`), whether its clients keep state files, and how
its models are evaluated on every client. Ditto's family (`ditto`, `local`,
`global`, `finetune`) is a `DittoFamilyMethod`: one Ditto process
(`ditto.build_ditto_process`, arguments in a `DittoProcessSpec`) with the
family's evaluations; the paper's baselines are the
`tff_ditto.baselines.BaselineMethod`s of their registry.

`build_method` builds a run's method, and `build_global_evaluation` the
evaluation of the global model every run reports, taking what earlier runs
built from the same inputs from a `ComputationCache`.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Optional, Protocol

import tensorflow_federated as tff

from tff_ditto import aggregator_specs
from tff_ditto import attacks
from tff_ditto import baselines
from tff_ditto import computation_cache
from tff_ditto import ditto
from tff_ditto import evaluation
from tff_ditto import optimization
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


@dataclasses.dataclass(frozen=True)
class PersonalModels:
  """The personal models each client of a run keeps, and their lambdas.

  Attributes:
    lambdas: The lambdas of the personal models: the selection lambdas, then
      the report-only ones (`training_config.personal_model_lambdas`).
    selection_lambdas: The candidates of the per-device selection, or the
      single fixed lambda (`training_config.selection_lambdas`).
    select_per_step: lam_selection 'per_step': a single personal model
      chooses among the lambdas at every step.
    fallback_lambda: The lambda of a client with too little validation data
      (`training_config.fallback_lambda`).
  """

  lambdas: tuple[float, ...]
  selection_lambdas: tuple[float, ...]
  select_per_step: bool
  fallback_lambda: float

  @classmethod
  def from_config(cls, config: ExperimentConfig) -> PersonalModels:
    """The personal models of a run with the (effective) `config`."""
    return cls(
        lambdas=training_config.personal_model_lambdas(config),
        selection_lambdas=training_config.selection_lambdas(config),
        select_per_step=config.lam_selection == 'per_step',
        fallback_lambda=training_config.fallback_lambda(config.strong_attack),
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
  needed = training_config.MIN_VALIDATION_EXAMPLES_FOR_SELECTION
  if dataset.num_clients and (
      dataset.num_validation_examples().max() < needed
  ):
    raise ValueError(
        f'lam_selection {config.lam_selection} chooses lambda by validation '
        f'loss, but no client of {dataset.name} has >= {needed} validation '
        'examples (hold some out: validation_fraction > 0)'
    )


@dataclasses.dataclass(frozen=True)
class DittoProcessSpec:
  """Every argument of `ditto.build_ditto_process` but model and aggregator.

  Hashable: with the model and the aggregator it keys the Ditto-family
  processes (ditto, local, global, finetune) of a `ComputationCache`.

  Attributes:
    client_lr: SGD learning rate of the local (and personal) steps.
    personal_lr: SGD learning rate of the personal steps if not `client_lr`
      (None).
    personal_lambdas: The lambda(s) of the personal model(s): the selection
      lambdas, then the report-only ones
      (`training_config.personal_model_lambdas`).
    local_steps: Mini-batch steps per client per round.
    server_optimizer: 'sgd' or 'adam'.
    server_lr: Its learning rate.
    global_proximal_strength: FedProx mu.
    client_weighting: A `tff.learning.ClientWeighting` or
      `ditto.LOSS_WEIGHTING`.
    personalize: Train personal models.
    simulate_attacks: Client data carry attack instructions.
    select_lambda_per_step: Per-step lambda selection.
    fallback_lambda: Its lambda for clients with too little validation data.
  """

  client_lr: float
  personal_lr: Optional[float]
  personal_lambdas: tuple[float, ...]
  local_steps: int
  server_optimizer: str
  server_lr: float
  global_proximal_strength: float
  client_weighting: Any
  personalize: bool
  simulate_attacks: bool
  select_lambda_per_step: bool
  fallback_lambda: Optional[float]

  def build(
      self, model_fn: ditto.ModelFn, model_aggregator
  ) -> tff.learning.templates.LearningProcess:
    """Returns `ditto.build_ditto_process` of these arguments.

    Args:
      model_fn: The model builder.
      model_aggregator: The `tff.aggregators` factory of the deltas.

    Returns:
      The learning process.
    """
    return ditto.build_ditto_process(
        model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(
            learning_rate=self.client_lr
        ),
        personal_lambda=self.personal_lambdas,
        local_steps=self.local_steps,
        model_aggregator=model_aggregator,
        server_optimizer=optimization.build_server_optimizer(
            self.server_optimizer, self.server_lr
        ),
        personal_optimizer=None
        if self.personal_lr is None
        else tff.learning.optimizers.build_sgdm(
            learning_rate=self.personal_lr
        ),
        global_proximal_strength=self.global_proximal_strength,
        client_weighting=self.client_weighting,
        personalize=self.personalize,
        simulate_attacks=self.simulate_attacks,
        select_lambda_per_step=self.select_lambda_per_step,
        fallback_lambda=self.fallback_lambda,
    )


def evaluate_global_model(
    global_evaluation: tff.Computation,
    model_weights: tff.learning.models.ModelWeights,
    split: str,
    inputs: round_data.RoundDataBuilder,
) -> list:
  """Per-client metrics of the global model on `split`.

  Args:
    global_evaluation: `build_global_evaluation`'s computation.
    model_weights: The global model.
    split: 'test' or 'validation'.
    inputs: The run's builder of client inputs.

  Returns:
    One record (loss_sum, num_correct, num_examples) per client.
  """
  return split_evaluation.per_client(
      global_evaluation(model_weights, inputs.client_split(split).as_argument())
  )


@dataclasses.dataclass
class DittoFamilyMethod:
  """`ditto`, `local`, `global` or `finetune`: a Ditto process.

  `global` trains the global model alone (FedAvg/FedProx) and evaluates it;
  `finetune` trains the same and evaluates each client's fine-tuned global
  model; `ditto` and `local` (lambda = 0) also train personal models, which
  they evaluate.

  Attributes:
    name: The method.
    process: The Ditto process.
    client_data_fields: What each sampled client's round data hold.
    stateful: The clients keep their personal models in state files (ditto,
      local).
    global_evaluation: The split evaluation of the global model.
    personalized_evaluation: The split evaluation of every client's personal
      models (ditto, local), or None.
    finetune_evaluation: The fine-tuning evaluation (finetune), or None.
  """

  name: str
  process: tff.learning.templates.LearningProcess
  client_data_fields: round_data.ClientDataFields
  stateful: bool
  global_evaluation: tff.Computation
  personalized_evaluation: Optional[tff.Computation] = None
  finetune_evaluation: Optional[tff.Computation] = None

  def evaluate_clients(
      self,
      model_weights: tff.learning.models.ModelWeights,
      split: str,
      inputs: round_data.RoundDataBuilder,
  ) -> list:
    """Per-client metrics of the method's models; see `Method`."""
    if self.personalized_evaluation is not None:
      read_paths = inputs.state_read_paths()
      return split_evaluation.per_client(self.personalized_evaluation(
          inputs.client_split(split).as_argument(), read_paths
      ))
    if self.finetune_evaluation is not None:
      steps = inputs.config.finetune_steps
      return self.finetune_evaluation(model_weights, [
          collections.OrderedDict(
              train=inputs.finetune_batches(index, steps),
              test=inputs.split_batches(index, split),
          )
          for index in range(inputs.dataset.num_clients)
      ])
    return evaluate_global_model(
        self.global_evaluation, model_weights, split, inputs
    )


def build_global_evaluation(
    model_fn: ditto.ModelFn,
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
      cache, 'global_evaluation', computation_cache.ByIdentity(model_fn),
      lambda: split_evaluation.build_global_split_evaluation(model_fn),
  )


def build_method(
    config: ExperimentConfig,
    model_fn: ditto.ModelFn,
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
  simulate_attacks = attacks.update_attack_code(
      attacks.canonical_attack_name(config.attack)
  ) != 0
  if config.method in baselines.BASELINE_METHODS:
    return computation_cache.get_or_build(
        cache, 'baseline',
        (process_inputs, baselines.build_key(config, num_clients),
         simulate_attacks),
        lambda: baselines.build_method(
            config, model_fn, num_clients=num_clients,
            model_aggregator=make_aggregator(),
            simulate_attacks=simulate_attacks,
        ),
    )
  personalize = config.method in training_config.PERSONALIZED_METHODS
  weighting = aggregator_specs.client_weighting(config)
  spec = DittoProcessSpec(
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
      fallback_lambda=(personal_models.fallback_lambda
                       if personal_models.select_per_step else None),
  )
  process = computation_cache.get_or_build(
      cache, 'ditto_process', (process_inputs, spec),
      lambda: spec.build(model_fn, make_aggregator()),
  )
  method = DittoFamilyMethod(
      name=config.method,
      process=process,
      client_data_fields=round_data.ClientDataFields(
          batches_per_round=config.local_steps,
          personal_state=personalize,
          attack=simulate_attacks,
          validation=personal_models.select_per_step,
          full_train=weighting == ditto.LOSS_WEIGHTING,
          num_train_examples=(
              weighting == ditto.NUM_TRAIN_EXAMPLES_WEIGHTING
          ),
      ),
      stateful=personalize,
      global_evaluation=global_evaluation,
  )
  if personalize:
    method.personalized_evaluation = computation_cache.get_or_build(
        cache, 'personalized_evaluation', (model, personal_models.count),
        lambda: split_evaluation.build_personalized_split_evaluation(
            model_fn, num_personal_models=personal_models.count
        ),
    )
  if config.method == 'finetune':
    method.finetune_evaluation = computation_cache.get_or_build(
        cache, 'finetune_evaluation',
        (model, config.client_lr, config.finetune_lam),
        lambda: evaluation.build_finetune_evaluation(
            model_fn,
            tff.learning.optimizers.build_sgdm(
                learning_rate=config.client_lr
            ),
            proximal_strength=config.finetune_lam,
        ),
    )
  return method
