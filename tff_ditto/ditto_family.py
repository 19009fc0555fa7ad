"""Ditto's family of methods (ditto, local, global, finetune) for the runner.

All four train one Ditto process (`ditto.build_ditto_process`, its
arguments but model and aggregator in a `DittoProcessSpec`) and differ in
what they evaluate (`DittoFamilyMethod`); `tff_ditto.methods.build_method`
builds them, as it builds the baselines' `BaselineMethod`s.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
import dataclasses
from typing import Any, Optional

import tensorflow_federated as tff

from tff_ditto import client_data_schema
from tff_ditto import ditto
from tff_ditto import optimization
from tff_ditto import round_data
from tff_ditto import split_evaluation


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
      `tff_ditto.ditto_client.LOSS_WEIGHTING`.
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
      self, model_fn: client_data_schema.ModelFn, model_aggregator
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
        else tff.learning.optimizers.build_sgdm(learning_rate=self.personal_lr),
        global_proximal_strength=self.global_proximal_strength,
        client_weighting=self.client_weighting,
        personalize=self.personalize,
        simulate_attacks=self.simulate_attacks,
        select_lambda_per_step=self.select_lambda_per_step,
        fallback_lambda=self.fallback_lambda,
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
    build_personalized_evaluation: Builds (or gets from the run's
      `ComputationCache`) the split evaluation of every client's personal
      models for a number of splits (ditto, local), or None
      (`split_evaluation.build_personalized_split_evaluation`).
    finetune_evaluation: The fine-tuning evaluation (finetune), or None.
  """

  name: str
  process: tff.learning.templates.LearningProcess
  client_data_fields: round_data.ClientDataFields
  stateful: bool
  global_evaluation: tff.Computation
  build_personalized_evaluation: Optional[Callable[[int], tff.Computation]] = (
      None
  )
  finetune_evaluation: Optional[tff.Computation] = None
  _personalized_evaluations: dict[int, tff.Computation] = dataclasses.field(
      default_factory=dict, init=False, repr=False
  )

  def personalized_evaluation(self, num_splits: int) -> tff.Computation:
    """The split evaluation of the personal models on `num_splits` splits.

    Built at its first use (`build_personalized_evaluation`), then kept.

    Args:
      num_splits: Splits per call.

    Returns:
      The computation.

    Raises:
      ValueError: If the method has no personal models.
    """
    if self.build_personalized_evaluation is None:
      raise ValueError(f'{self.name} has no personal models to evaluate.')
    if num_splits not in self._personalized_evaluations:
      self._personalized_evaluations[num_splits] = (
          self.build_personalized_evaluation(num_splits)
      )
    return self._personalized_evaluations[num_splits]

  def evaluate_clients_on_splits(
      self,
      model_weights: tff.learning.models.ModelWeights,
      splits: Sequence[str],
      inputs: round_data.RoundDataBuilder,
  ) -> dict[str, list]:
    """`evaluate_clients` on each of `splits`, each state file read once.

    Args:
      model_weights: The global model.
      splits: Distinct splits ('test', 'validation').
      inputs: The run's builder of client inputs.

    Returns:
      Per split, `evaluate_clients`' records.
    """
    if self.build_personalized_evaluation is None:
      return {
          split: self.evaluate_clients(model_weights, split, inputs)
          for split in splits
      }
    metrics = self.personalized_evaluation(len(splits))(
        tuple(inputs.client_split(split).as_argument() for split in splits),
        inputs.state_read_paths(),
    )
    return {
        split: split_evaluation.per_client(split_metrics)
        for split, split_metrics in zip(splits, metrics)
    }

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
      One record (loss_sum, num_correct, num_examples) per client: of the
      personal models (ditto, local; vectors over them, in state order, with
      several per client), the fine-tuned global models (finetune) or the
      global model (global).
    """
    if self.build_personalized_evaluation is not None:
      return self.evaluate_clients_on_splits(model_weights, [split], inputs)[
          split
      ]
    if self.finetune_evaluation is not None:
      steps = inputs.config.finetune_steps
      return self.finetune_evaluation(
          model_weights,
          [
              collections.OrderedDict(
                  train=inputs.finetune_batches(index, steps),
                  test=inputs.split_batches(index, split),
              )
              for index in range(inputs.dataset.num_clients)
          ],
      )
    return split_evaluation.per_client(
        self.global_evaluation(
            model_weights, inputs.client_split(split).as_argument()
        )
    )
