"""The baselines as methods of `tff_ditto.training.ExperimentRunner`.

`build_method(config, model_fn, ...)` returns a `BaselineMethod` (a
`tff_ditto.methods.Method`): the method's `LearningProcess`, whether it
keeps per-client state (the runner then keeps a `FileClientStateStore` and
commits it every round), what a round's client data hold (a
`round_data.ClientDataFields`) and how clients are evaluated. Everything
shared with Ditto stays the runner's: sampling, the round data and the
evaluations' inputs (`round_data.RoundDataBuilder`: training streams with
the same seeds, so `term` with t = 0 is `global` bit for bit, and the
malicious set's attack instructions), checkpoints and the metrics.

Methods: term, l2sgd, apfl, ewc, skl, perfedavg, mapper, finetune_es (see
the modules of `tff_ditto.baselines`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Hashable, Sequence

import tensorflow_federated as tff

from tff_ditto import client_data_schema
from tff_ditto import ditto
from tff_ditto import evaluation
from tff_ditto import optimization
from tff_ditto import round_data
from tff_ditto.baselines import apfl
from tff_ditto.baselines import finetuning
from tff_ditto.baselines import l2sgd
from tff_ditto.baselines import mapper
from tff_ditto.baselines import perfedavg
from tff_ditto.baselines import term
from tff_ditto.names import BASELINE_METHODS

STATEFUL_METHODS = ('l2sgd', 'apfl', 'mapper')
# FedAvg training, then a fine-tuning variant at evaluation.
_FEDAVG_FINETUNE_KINDS = {
    'ewc': 'ewc',
    'skl': 'skl',
    'finetune_es': 'early_stopping',
}


# `ExperimentConfig` fields that `build_method` never reads (the runner's
# driver uses them: schedule, batches, seeds, the malicious set and data
# poisoning; the aggregator's own parameters come as `model_aggregator`).
# tests/test_training.py checks that build_method reads none of them.
UNREAD_CONFIG_FIELDS = (
    'rounds',
    'batch_size',
    'lam_selection',
    'strong_attack',
    'finetune_steps',
    'eval_every',
    'eval_batch_size',
    'sampling',
    'weighted_aggregation',
    'seed',
    'checkpoint_every',
    'eval_split',
    'attack',
    'attack_ratio',
    'attack_poison_labels',
    'cclip_tau',
    'personal_lr',
    'batch_stream',
)


def build_key(config, num_clients: int) -> Hashable:
  """What `build_method` reads besides its model, aggregator and attacks flag.

  Args:
    config: As for `build_method`.
    num_clients: As for `build_method`.

  Returns:
    A hashable key: (name, value) of every config field but
    UNREAD_CONFIG_FIELDS, and num_clients. Equal keys (with the same model,
    aggregator and simulate_attacks) give interchangeable methods.
  """
  fields = tuple(
      (field.name, getattr(config, field.name))
      for field in dataclasses.fields(config)
      if field.name not in UNREAD_CONFIG_FIELDS
  )
  return fields, num_clients


@dataclasses.dataclass
class BaselineMethod:
  """One baseline, as `ExperimentRunner` uses it (a `tff_ditto.methods.Method`).

  Attributes:
    name: The method name.
    process: Its `tff.learning.templates.LearningProcess`.
    client_data_fields: What each sampled client's round data hold: the
      batches (`batches_per_round` of them, what its `reference` batch
      stream advances by), then the state handle (stateful methods), the
      attack instruction and the whole training set, as the method needs;
      the FedAvg-trained methods take Ditto's global-only round data.
    stateful: Keeps per-client state files (runner's store).
    evaluation_kind: 'global', 'interpolated' or a fine-tuning kind.
    evaluation: The evaluation computation.
  """

  name: str
  process: tff.learning.templates.LearningProcess
  client_data_fields: round_data.ClientDataFields
  stateful: bool
  evaluation_kind: str
  evaluation: tff.Computation

  def evaluate_clients(
      self,
      model_weights: tff.learning.models.ModelWeights,
      split: str,
      inputs: round_data.RoundDataBuilder,
  ) -> list:
    """Per-client metrics (loss_sum, num_correct, num_examples) on `split`.

    Args:
      model_weights: The global model.
      split: 'test' or 'validation'.
      inputs: The run's builder of client inputs (batches, fine-tuning
        batches, state handles).

    Returns:
      One record per client.
    """
    clients = range(inputs.dataset.num_clients)
    if self.evaluation_kind == 'global':
      return self.evaluation(
          model_weights, [inputs.split_batches(i, split) for i in clients]
      )
    if self.evaluation_kind == 'interpolated':
      return self.evaluation(
          model_weights,
          [
              collections.OrderedDict(
                  batches=inputs.split_batches(i, split),
                  personal_state=inputs.evaluation_state_handle(i),
              )
              for i in clients
          ],
      )
    steps = inputs.config.finetune_steps
    if self.evaluation_kind == 'ewc':
      steps += finetuning.FISHER_BATCHES
    client_inputs = []
    for i in clients:
      available = collections.OrderedDict(
          train=inputs.finetune_batches(i, steps),
          full_train=lambda i=i: inputs.split_batches(i, 'train'),
          personal_state=lambda i=i: inputs.evaluation_state_handle(i),
          validation=lambda i=i: inputs.split_batches(i, 'validation'),
      )
      data = collections.OrderedDict()
      for key in finetuning.finetune_data_keys(self.evaluation_kind):
        value = available[key]
        data[key] = value() if callable(value) else value
      data[finetuning.TEST_KEY] = inputs.split_batches(i, split)
      client_inputs.append(data)
    return self.evaluation(model_weights, client_inputs)

  def evaluate_clients_on_splits(
      self,
      model_weights: tff.learning.models.ModelWeights,
      splits: Sequence[str],
      inputs: round_data.RoundDataBuilder,
  ) -> dict[str, list]:
    """`evaluate_clients` on each of `splits`, one after the other."""
    return {
        split: self.evaluate_clients(model_weights, split, inputs)
        for split in splits
    }


def build_method(
    config,
    model_fn: client_data_schema.ModelFn,
    *,
    num_clients: int,
    model_aggregator,
    simulate_attacks: bool,
) -> BaselineMethod:
  """The baseline named by `config.method`.

  Args:
    config: A `tff_ditto.training_config.ExperimentConfig` whose method is
      in BASELINE_METHODS.
    model_fn: No-arg `VariableModel` builder.
    num_clients: N (L2SGD's server step is scaled by clients_per_round / N).
    model_aggregator: The runner's `tff.aggregators` factory.
    simulate_attacks: Whether malicious clients get attack instructions.

  Returns:
    A `BaselineMethod`.

  Raises:
    ValueError: On an unknown method, or TERM with a robust aggregator.
  """
  method = config.method
  if method not in BASELINE_METHODS:
    raise ValueError(
        f'method must be one of {BASELINE_METHODS}, got {method!r}.'
    )
  client_optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=config.client_lr
  )
  server_optimizer = optimization.build_server_optimizer(
      config.server_optimizer, config.server_lr
  )
  common_arguments = dict(
      model_aggregator=model_aggregator,
      server_optimizer=server_optimizer,
      simulate_attacks=simulate_attacks,
  )
  fedavg_data = False
  full_train = False
  batches_per_round = config.local_steps
  if method == 'term':
    if config.aggregator != 'mean' or config.bucketing_size:
      raise ValueError(
          'term weights updates by exp(t * loss) and needs --aggregator=mean '
          'without bucketing (the reference ignores robust rules with q != 0)'
      )
    common_arguments['model_aggregator'] = tff.aggregators.MeanFactory()
    process = term.build_term_process(
        model_fn,
        client_optimizer=client_optimizer,
        tilt=config.term_t,
        local_steps=config.local_steps,
        **common_arguments,
    )
    full_train = True
    kind = 'global'
    evaluation_computation = evaluation.build_global_evaluation(model_fn)
  elif method == 'l2sgd':
    common_arguments['server_optimizer'] = optimization.build_server_optimizer(
        config.server_optimizer,
        l2sgd.server_learning_rate(
            config.server_lr, config.clients_per_round, num_clients
        ),
    )
    process = l2sgd.build_l2sgd_process(
        model_fn,
        client_optimizer=client_optimizer,
        mean_regularization=config.lam,
        local_steps=config.local_steps,
        **common_arguments,
    )
    kind = 'interpolated'
    evaluation_computation = finetuning.build_interpolated_evaluation(
        model_fn, alpha=1.0
    )
  elif method == 'apfl':
    process = apfl.build_apfl_process(
        model_fn,
        client_optimizer=client_optimizer,
        alpha=config.apfl_alpha,
        local_steps=config.local_steps,
        **common_arguments,
    )
    kind = 'interpolated'
    evaluation_computation = finetuning.build_interpolated_evaluation(
        model_fn, alpha=config.apfl_alpha
    )
  elif method == 'perfedavg':
    inner_learning_rate = (
        config.client_lr
        if config.perfedavg_alpha is None
        else config.perfedavg_alpha
    )
    process = perfedavg.build_perfedavg_process(
        model_fn,
        learning_rate=inner_learning_rate,
        local_steps=config.local_steps,
        **common_arguments,
    )
    batches_per_round = perfedavg.BATCHES_PER_ITERATION * config.local_steps
    kind = 'plain'
    evaluation_computation = finetuning.build_finetune_family_evaluation(
        model_fn, 'plain', client_optimizer
    )
  elif method == 'mapper':
    process = mapper.build_mapper_process(
        model_fn,
        learning_rate=config.client_lr,
        local_steps=config.local_steps,
        **common_arguments,
    )
    batches_per_round = mapper.batches_per_round(config.local_steps)
    full_train = True
    kind = 'mapper'
    evaluation_computation = finetuning.build_finetune_family_evaluation(
        model_fn, 'mapper', client_optimizer
    )
  else:  # FedAvg, then a fine-tuning variant.
    kind = _FEDAVG_FINETUNE_KINDS[method]
    fedavg_data = True
    process = ditto.build_ditto_process(
        model_fn,
        client_optimizer=client_optimizer,
        personal_lambda=0.0,
        local_steps=config.local_steps,
        global_proximal_strength=config.fedprox_mu,
        personalize=False,
        **common_arguments,
    )
    strength = {
        'ewc': config.ewc_lam,
        'skl': config.skl_lam,
        'early_stopping': config.finetune_lam,
    }[kind]
    evaluation_computation = finetuning.build_finetune_family_evaluation(
        model_fn,
        kind,
        client_optimizer,
        strength=strength,
        patience=config.finetune_patience,
    )
  stateful = method in STATEFUL_METHODS
  if fedavg_data:  # Ditto's round data, global model only.
    fields = round_data.ClientDataFields(
        batches_per_round=batches_per_round, attack=simulate_attacks
    )
  else:
    fields = round_data.ClientDataFields(
        batches_per_round=batches_per_round,
        personal_state=stateful,
        attack=simulate_attacks,
        full_train=full_train,
        always_struct=True,
    )
  return BaselineMethod(
      name=method,
      process=process,
      client_data_fields=fields,
      stateful=stateful,
      evaluation_kind=kind,
      evaluation=evaluation_computation,
  )
