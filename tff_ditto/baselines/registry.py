"""The baselines as methods of `tff_ditto.training.ExperimentRunner`.

`build_method(config, model_fn, ...)` returns a `BaselineMethod`: the
method's `LearningProcess`, whether it keeps per-client state (the runner then
keeps a `FileClientStateStore` and commits it every round), how a round's
client data is built and how clients are evaluated. Everything shared with
Ditto stays the runner's: sampling, training streams (same seeds, so `term`
with t = 0 is `global` bit for bit), the malicious set and attack
instructions, checkpoints and the metrics.

Methods: term, l2sgd, apfl, ewc, skl, perfedavg, mapper, finetune_es (see
the modules of `tff_ditto.baselines`).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Hashable, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import client_data_schema
from tff_ditto import ditto
from tff_ditto import evaluation
from tff_ditto import optimization
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
    'ewc': 'ewc', 'skl': 'skl', 'finetune_es': 'early_stopping',
}


# `ExperimentConfig` fields that `build_method` never reads (the runner's
# driver uses them: schedule, batches, seeds, the malicious set and data
# poisoning; the aggregator's own parameters come as `model_aggregator`).
# tests/test_training.py checks that build_method reads none of them.
UNREAD_CONFIG_FIELDS = (
    'rounds', 'batch_size', 'lam_selection', 'strong_attack',
    'finetune_steps', 'eval_every', 'eval_batch_size', 'sampling',
    'weighted_aggregation', 'seed', 'checkpoint_every', 'eval_split',
    'attack', 'attack_ratio', 'attack_poison_labels', 'cclip_tau',
    'personal_lr', 'batch_stream',
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
  """One baseline, as `ExperimentRunner` uses it.

  Attributes:
    name: The method name.
    process: Its `tff.learning.templates.LearningProcess`.
    stateful: Keeps per-client state files (runner's store).
    full_train: The round's client data includes `full_train`.
    fedavg_data: The process is `ditto.build_ditto_process(personalize=False)`
      and takes the runner's own round data.
    evaluation_kind: 'global', 'interpolated' or a fine-tuning kind.
    batches_per_round: Training batches a sampled client takes per round
      (what its `reference` batch stream advances by).
    evaluation: The evaluation computation.
  """

  name: str
  process: tff.learning.templates.LearningProcess
  stateful: bool
  full_train: bool
  fedavg_data: bool
  evaluation_kind: str
  evaluation: tff.Computation
  batches_per_round: int

  def round_client_data(self, runner, round_num: int,
                        client_indices: Sequence[int]) -> list:
    """The per-client data of one round, from the runner's streams."""
    if self.fedavg_data:
      return runner._round_client_data(round_num, client_indices)  # pylint: disable=protected-access
    from tff_ditto import training  # pylint: disable=g-import-not-at-top

    config = runner.config
    client_ids = runner.dataset.client_ids
    handles = (
        runner.store.handles(client_indices, round_num)
        if self.stateful else [None] * len(client_indices)
    )
    client_data = []
    for index, handle in zip(client_indices, handles):
      arrays = runner.dataset.train[client_ids[index]]
      data = collections.OrderedDict(
          batches=runner.batch_streams.round_batches(
              round_num, int(index), arrays, self.batches_per_round))
      if self.stateful:
        data[client_data_schema.STATE_KEY] = training.state_handle_dataset(
            handle)
      if runner.simulate_attacks:
        data[client_data_schema.ATTACK_KEY] = runner._attack_instruction(  # pylint: disable=protected-access
            round_num, int(index))
      if self.full_train:
        data[client_data_schema.FULL_TRAIN_KEY] = training.eval_batches(
            arrays, config.eval_batch_size)
      client_data.append(data)
    return client_data

  def evaluate_clients(self, runner, model_weights,
                       test_batches: Sequence[tf.data.Dataset]) -> list:
    """Per-client metrics (loss_sum, num_correct, num_examples)."""
    from tff_ditto import client_states  # pylint: disable=g-import-not-at-top
    from tff_ditto import training  # pylint: disable=g-import-not-at-top

    if self.evaluation_kind == 'global':
      return self.evaluation(model_weights, list(test_batches))
    config = runner.config
    client_ids = runner.dataset.client_ids

    def handle(i):
      return training.state_handle_dataset(
          client_states.ClientStateHandle(runner.store.read_path(i), ''))

    if self.evaluation_kind == 'interpolated':
      return self.evaluation(model_weights, [
          collections.OrderedDict(batches=batches, personal_state=handle(i))
          for i, batches in enumerate(test_batches)
      ])
    steps = config.finetune_steps
    if self.evaluation_kind == 'ewc':
      steps += finetuning.FISHER_BATCHES
    inputs = []
    for i, (client_id, batches) in enumerate(zip(client_ids, test_batches)):
      arrays = runner.dataset.train[client_id]
      available = collections.OrderedDict(
          train=runner.batch_streams.finetune_batches(i, arrays, steps),
          full_train=lambda arrays=arrays: training.eval_batches(
              arrays, config.eval_batch_size),
          personal_state=lambda i=i: handle(i),
          validation=lambda client_id=client_id: training.eval_batches(
              runner.dataset.validation[client_id], config.eval_batch_size),
      )
      data = collections.OrderedDict()
      for key in finetuning.finetune_data_keys(self.evaluation_kind):
        value = available[key]
        data[key] = value() if callable(value) else value
      data[finetuning.TEST_KEY] = batches
      inputs.append(data)
    return self.evaluation(model_weights, inputs)


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
    raise ValueError(f'method must be one of {BASELINE_METHODS}, got {method!r}.')
  client_optimizer = tff.learning.optimizers.build_sgdm(
      learning_rate=config.client_lr)
  server_optimizer = optimization.build_server_optimizer(
      config.server_optimizer, config.server_lr)
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
          'without bucketing (the reference ignores robust rules with q != 0)')
    common_arguments['model_aggregator'] = tff.aggregators.MeanFactory()
    process = term.build_term_process(
        model_fn, client_optimizer=client_optimizer, tilt=config.term_t,
        local_steps=config.local_steps, **common_arguments)
    full_train = True
    kind = 'global'
    evaluation_computation = evaluation.build_global_evaluation(model_fn)
  elif method == 'l2sgd':
    common_arguments['server_optimizer'] = optimization.build_server_optimizer(
        config.server_optimizer, l2sgd.server_learning_rate(
            config.server_lr, config.clients_per_round, num_clients))
    process = l2sgd.build_l2sgd_process(
        model_fn, client_optimizer=client_optimizer,
        mean_regularization=config.lam, local_steps=config.local_steps,
        **common_arguments)
    kind = 'interpolated'
    evaluation_computation = finetuning.build_interpolated_evaluation(
        model_fn, alpha=1.0)
  elif method == 'apfl':
    process = apfl.build_apfl_process(
        model_fn, client_optimizer=client_optimizer, alpha=config.apfl_alpha,
        local_steps=config.local_steps, **common_arguments)
    kind = 'interpolated'
    evaluation_computation = finetuning.build_interpolated_evaluation(
        model_fn, alpha=config.apfl_alpha)
  elif method == 'perfedavg':
    inner_learning_rate = (
        config.client_lr if config.perfedavg_alpha is None
        else config.perfedavg_alpha)
    process = perfedavg.build_perfedavg_process(
        model_fn, learning_rate=inner_learning_rate,
        local_steps=config.local_steps, **common_arguments)
    batches_per_round = perfedavg.BATCHES_PER_ITERATION * config.local_steps
    kind = 'plain'
    evaluation_computation = finetuning.build_finetune_family_evaluation(
        model_fn, 'plain', client_optimizer)
  elif method == 'mapper':
    process = mapper.build_mapper_process(
        model_fn, learning_rate=config.client_lr,
        local_steps=config.local_steps, **common_arguments)
    batches_per_round = mapper.batches_per_round(config.local_steps)
    full_train = True
    kind = 'mapper'
    evaluation_computation = finetuning.build_finetune_family_evaluation(
        model_fn, 'mapper', client_optimizer)
  else:  # FedAvg, then a fine-tuning variant.
    kind = _FEDAVG_FINETUNE_KINDS[method]
    fedavg_data = True
    process = ditto.build_ditto_process(
        model_fn, client_optimizer=client_optimizer,
        personal_lambda=0.0, local_steps=config.local_steps,
        global_proximal_strength=config.fedprox_mu, personalize=False,
        **common_arguments)
    strength = {
        'ewc': config.ewc_lam, 'skl': config.skl_lam,
        'early_stopping': config.finetune_lam,
    }[kind]
    evaluation_computation = finetuning.build_finetune_family_evaluation(
        model_fn, kind, client_optimizer, strength=strength,
        patience=config.finetune_patience)
  return BaselineMethod(
      name=method,
      process=process,
      stateful=method in STATEFUL_METHODS,
      full_train=full_train,
      fedavg_data=fedavg_data,
      evaluation_kind=kind,
      evaluation=evaluation_computation,
      batches_per_round=batches_per_round,
  )
