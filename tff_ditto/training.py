"""Python orchestration of a federated experiment: sampling, rounds, evaluation.

`ExperimentRunner` runs one method (`ditto`, `local`, `global`, `finetune`) on
one `FederatedDataset` with one model, sharing the client sampling, batch
order, initial model, evaluation and output format between methods, so their
numbers are comparable. All training and evaluation runs in TFF computations
(`tff_ditto.ditto`, `tff_ditto.evaluation`); this module only decides which
clients take part, builds their `tf.data` pipelines, keeps the client state
store and writes results:

* `<output_dir>/metrics.csv`: one row per round (a `tff.program`
  `CSVFileReleaseManager`, which also truncates rows past a resumed round);
  with lam_selection 'per_step' it includes the share of the round's personal
  steps that kept each candidate lambda (`step_share_lam_<value>`) or took
  the fallback lambda (`step_share_fallback`); with `curve_split`, that
  split's summary too (keys prefixed '<split>_');
* `<output_dir>/client_metrics.csv`: per-client test results at the last
  evaluation (a `ditto` run adds the global model's per-client accuracy,
  `global_model_accuracy`, and, with report lambdas, each personal model's,
  `lam_<value>_accuracy`);
* `<output_dir>/summary.json`: the final summary and the configuration;
* `<output_dir>/checkpoints/`: server state, round, client-state versions
  and batch stream positions (`tff_ditto.checkpoints`);
* `<output_dir>/client_states/`: versioned personalized models.

Runners given one `ComputationCache` share the computations built from the
same inputs (`tff_ditto.computation_cache`); a grid of short runs then
traces each distinct process and evaluation once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import aggregator_specs
from tff_ditto import attacks
from tff_ditto import batch_streams
from tff_ditto import baselines
from tff_ditto import checkpoints
from tff_ditto import client_states
from tff_ditto import computation_cache as computation_cache_lib
from tff_ditto import crash_safety
from tff_ditto import ditto
from tff_ditto import evaluation
from tff_ditto import initial_weights
from tff_ditto import optimization
from tff_ditto import sampling
from tff_ditto import split_evaluation
from tff_ditto import training_config
from tff_ditto.data import FederatedDataset

METHODS = training_config.METHODS
PERSONALIZED_METHODS = training_config.PERSONALIZED_METHODS
ExperimentConfig = training_config.ExperimentConfig
ComputationCache = computation_cache_lib.ComputationCache


def eval_batches(arrays: collections.OrderedDict, batch_size: int):
  return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)


def state_handle_dataset(handle: client_states.ClientStateHandle):
  return tf.data.Dataset.from_tensors(
      collections.OrderedDict(
          read_path=handle.read_path, write_path=handle.write_path
      )
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


def _check_validation_data(
    config: ExperimentConfig, dataset: FederatedDataset
) -> None:
  """Lambda selection by validation loss needs some client's validation data.

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


# Raised by the runner and its checkpoints (`tff_ditto.checkpoints`).
OutputDirectoryError = checkpoints.OutputDirectoryError


class ExperimentRunner:
  """Runs one method on one dataset; see the module docstring."""

  def __init__(
      self,
      config: ExperimentConfig,
      dataset: FederatedDataset,
      model_fn: ditto.ModelFn,
      output_dir: str,
      *,
      model_aggregator=None,
      malicious_client_indices: Optional[Sequence[int]] = None,
      resume: bool = False,
      overwrite: bool = False,
      log_fn: Optional[Callable[[str], None]] = print,
      computation_cache: Optional[computation_cache_lib.ComputationCache] = None,
  ):
    """Builds the TFF computations and prepares the output directory.

    Args:
      config: The run's hyper-parameters (validated here).
      dataset: The federated dataset.
      model_fn: No-arg callable returning a `tff.learning.models.VariableModel`.
      output_dir: Where results, checkpoints and client states go.
      model_aggregator: A `tff.aggregators` factory (default: the one
        `config.aggregator` names,
        `aggregator_specs.model_aggregator_spec`).
      malicious_client_indices: The malicious clients; default: the fixed
        set `attacks.choose_malicious_clients` draws from `config` (empty
        without an attack). They are reported apart from the benign ones.
      resume: Continue from the latest checkpoint in `output_dir`.
      overwrite: Delete an existing `output_dir` first.
      log_fn: Receives one progress line per round; None for silence.
      computation_cache: Reuse the process and evaluation computations that
        earlier runners built into this cache from the same inputs (see
        `tff_ditto.computation_cache`); None builds them all. Reuse needs the
        same `model_fn` object (and `model_aggregator` object, if given).
        Runners sharing a cache must run one after the other.

    Raises:
      ValueError: On an invalid config, or a lambda selection on a dataset
        where no client has enough validation data.
      OutputDirectoryError: If `output_dir` holds results and neither
        `resume` nor `overwrite` is set.
    """
    config.validate()
    config = training_config.effective_config(config)
    self.config = config
    self.model_fn = model_fn
    self.output_dir = output_dir
    self.log_fn = log_fn or (lambda _: None)
    attack = attacks.canonical_attack_name(config.attack)
    if malicious_client_indices is None:
      malicious_client_indices = attacks.choose_malicious_clients(
          dataset.num_clients, config.attack_ratio, config.seed
      )
    self.malicious = np.zeros([dataset.num_clients], bool)
    self.malicious[np.asarray(malicious_client_indices, np.int64)] = True
    malicious_indices = np.flatnonzero(self.malicious)
    if attack in attacks.DATA_ATTACKS:
      dataset = attacks.poison_training_labels(
          dataset, malicious_indices, attack, config.seed
      )
    elif attack != attacks.NO_ATTACK and config.attack_poison_labels:
      dataset = attacks.poison_training_labels(
          dataset, malicious_indices, 'label_poison', config.seed
      )
    self.dataset = dataset
    self._malicious_code = attacks.update_attack_code(attack)
    self.simulate_attacks = self._malicious_code != 0
    self._num_train_examples = dataset.num_train_examples()
    self.sends_train_size = (
        aggregator_specs.client_weighting(config)
        == ditto.NUM_TRAIN_EXAMPLES_WEIGHTING
    )
    _check_validation_data(config, dataset)
    self._prepare_output_dir(resume, overwrite)
    self._resume = resume

    personalize = config.method in PERSONALIZED_METHODS
    self.personalize = personalize
    # The lambdas: the candidates of the per-device selection, or the single
    # fixed lambda (`selection_lambdas`), then the report-only lambdas
    # (`config.report_lambdas`). 'auto' and 'fixed' keep one personal model
    # per lambda; 'per_step' chooses among them at every step of a single
    # personal model.
    self.select_lambda_per_step = config.lam_selection == 'per_step'
    self.selection_lambdas = training_config.selection_lambdas(config)
    self.personal_lambdas = training_config.personal_model_lambdas(config)
    self.num_personal_models = (
        1 if self.select_lambda_per_step else len(self.personal_lambdas)
    )
    per_step_fallback = None
    if self.select_lambda_per_step:
      per_step_fallback = training_config.fallback_lambda(config.strong_attack)
    self._build_computations(
        model_fn, model_aggregator, per_step_fallback, computation_cache
    )
    initial = initial_weights.initial_model_weights(model_fn, config.seed)
    self.state = self.process.set_model_weights(
        self.process.initialize(), initial
    )
    self.store = None
    if personalize:
      self.store = client_states.FileClientStateStore(
          os.path.join(output_dir, 'client_states'),
          dataset.num_clients,
          (list(initial.trainable) + list(initial.non_trainable))
          * self.num_personal_models,
      )
    self.batch_streams = batch_streams.ClientBatchStreams(
        config.batch_stream, dataset.num_clients, config.batch_size,
        config.seed,
    )
    self.next_round = 0
    self.checkpoints = checkpoints.RunCheckpoints(
        output_dir,
        self.state,
        dataset.num_clients,
        self.log_fn,
        checkpoint_every=config.checkpoint_every,
        store=self.store,
    )
    self.metrics_manager = tff.program.CSVFileReleaseManager(
        os.path.join(output_dir, 'metrics.csv'), key_fieldname='round'
    )
    self._client_splits: dict[str, split_evaluation.ClientSplit] = {}
    self.history: list[collections.OrderedDict] = []
    self.last_evaluation: Optional[collections.OrderedDict] = None
    if resume:
      self._restore_latest_checkpoint()

  # ----------------------------------------------------------------- set-up

  def _ditto_process_spec(
      self, fallback_lambda: Optional[float]
  ) -> DittoProcessSpec:
    """The arguments of this run's Ditto-family process."""
    config = self.config
    return DittoProcessSpec(
        client_lr=config.client_lr,
        personal_lr=config.personal_lr if self.personalize else None,
        personal_lambdas=tuple(self.personal_lambdas),
        local_steps=config.local_steps,
        server_optimizer=config.server_optimizer,
        server_lr=config.server_lr,
        global_proximal_strength=config.fedprox_mu,
        client_weighting=aggregator_specs.client_weighting(config),
        personalize=self.personalize,
        simulate_attacks=self.simulate_attacks,
        select_lambda_per_step=self.select_lambda_per_step,
        fallback_lambda=fallback_lambda,
    )

  def _build_computations(
      self,
      model_fn: ditto.ModelFn,
      model_aggregator,
      fallback_lambda: Optional[float],
      cache: Optional[computation_cache_lib.ComputationCache],
  ) -> None:
    """Builds (or takes from `cache`) the process and the evaluations.

    Every computation is cached under exactly what its builder receives: the
    model (by identity), the aggregator (its
    `aggregator_specs.AggregatorSpec`, or a given
    factory by identity), whether the execution context merges partial
    aggregates (the aggregators' gather is chosen at build time), and the
    builder's own arguments.

    Args:
      model_fn: The model builder.
      model_aggregator: A given aggregation factory, or None for the one of
        `config.aggregator`.
      fallback_lambda: Per-step lambda selection's fallback (or None).
      cache: The cache, or None to build everything.
    """
    from tff_ditto import runtime  # pylint: disable=g-import-not-at-top

    config = self.config
    model = computation_cache_lib.ByIdentity(model_fn)
    if model_aggregator is None:
      aggregator_key = aggregator_specs.model_aggregator_spec(
          config, self.dataset.num_clients, int(self.malicious.sum())
      )
      make_aggregator = aggregator_key.build
    else:
      aggregator_key = computation_cache_lib.ByIdentity(model_aggregator)
      make_aggregator = lambda: model_aggregator
    process_inputs = (
        model, aggregator_key, runtime.merges_partial_aggregates()
    )
    # The paper's baselines bring their own process, round data and
    # evaluation (tff_ditto.baselines.registry); Ditto's family is built here.
    self.baseline = None
    if config.method in baselines.BASELINE_METHODS:
      baseline_key = baselines.build_key(config, self.dataset.num_clients)
      self.baseline = computation_cache_lib.get_or_build(
          cache, 'baseline',
          (process_inputs, baseline_key, self.simulate_attacks),
          lambda: baselines.build_method(
              config, model_fn, num_clients=self.dataset.num_clients,
              model_aggregator=make_aggregator(),
              simulate_attacks=self.simulate_attacks,
          ),
      )
      self.process = self.baseline.process
    else:
      spec = self._ditto_process_spec(fallback_lambda)
      self.process = computation_cache_lib.get_or_build(
          cache, 'ditto_process', (process_inputs, spec),
          lambda: spec.build(model_fn, make_aggregator()),
      )
    self.global_evaluation = computation_cache_lib.get_or_build(
        cache, 'global_evaluation', model,
        lambda: split_evaluation.build_global_split_evaluation(model_fn),
    )
    if self.personalize:
      self.personalized_evaluation = computation_cache_lib.get_or_build(
          cache, 'personalized_evaluation',
          (model, self.num_personal_models),
          lambda: split_evaluation.build_personalized_split_evaluation(
              model_fn, num_personal_models=self.num_personal_models
          ),
      )
    if config.method == 'finetune':
      self.finetune_evaluation = computation_cache_lib.get_or_build(
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

  def _prepare_output_dir(self, resume: bool, overwrite: bool) -> None:
    if os.path.isdir(self.output_dir) and os.listdir(self.output_dir):
      if overwrite and not resume:
        shutil.rmtree(self.output_dir)
      elif not resume:
        raise OutputDirectoryError(
            f'{self.output_dir} already holds results; pass --resume to '
            'continue that run or --overwrite to replace it.'
        )
    os.makedirs(self.output_dir, exist_ok=True)

  # ------------------------------------------------------------ checkpoints

  def _restore_latest_checkpoint(self) -> None:
    """Continues from the latest usable checkpoint, if there is one.

    Raises:
      OutputDirectoryError: If the checkpoints are all unusable
        (`RunCheckpoints.restore_latest`).
    """
    restored = self.checkpoints.restore_latest()
    if restored is None:
      return
    self.state = restored.state
    self.next_round = restored.round_num + 1
    self.batch_streams.positions = restored.batch_stream_positions

  def save_checkpoint(self, round_num: int) -> None:
    """Checkpoints the run after `round_num` (`RunCheckpoints.save`).

    Args:
      round_num: The round just trained.
    """
    self.checkpoints.save(round_num, self.state, self.batch_streams.positions)

  # ------------------------------------------------------------- one round

  def _attack_instruction(self, round_num: int, client_index: int):
    code = self._malicious_code if self.malicious[client_index] else 0
    return tf.data.Dataset.from_tensors(
        collections.OrderedDict(
            code=np.int32(code),
            scale=np.float32(self.config.clients_per_round),
            seed=np.array(
                [sampling.client_seed(
                    self.config.seed, sampling.ATTACK_STREAM, round_num),
                 client_index],
                np.int64,
            ),
        )
    )

  def _round_client_data(self, round_num: int, client_indices):
    """The clients' data of a round; moves their batch streams on."""
    client_ids = self.dataset.client_ids
    datasets = [
        self.batch_streams.round_batches(
            round_num, int(i), self.dataset.train[client_ids[i]],
            self.config.local_steps,
        )
        for i in client_indices
    ]
    sends_loss = (
        aggregator_specs.client_weighting(self.config) == ditto.LOSS_WEIGHTING
    )
    if not (
        self.personalize
        or self.simulate_attacks
        or self.select_lambda_per_step
        or sends_loss
        or self.sends_train_size
    ):
      return datasets
    client_data = [
        collections.OrderedDict(batches=batches) for batches in datasets
    ]
    if self.personalize:
      handles = self.store.handles(client_indices, round_num)
      for data, handle in zip(client_data, handles):
        data['personal_state'] = state_handle_dataset(handle)
    if self.simulate_attacks:
      for data, index in zip(client_data, client_indices):
        data['attack'] = self._attack_instruction(round_num, int(index))
    if self.select_lambda_per_step:
      for data, index in zip(client_data, client_indices):
        data[ditto.VALIDATION_KEY] = eval_batches(
            self.dataset.validation[client_ids[index]],
            self.config.eval_batch_size,
        )
    if sends_loss:
      for data, index in zip(client_data, client_indices):
        data[ditto.FULL_TRAIN_KEY] = eval_batches(
            self.dataset.train[client_ids[index]],
            self.config.eval_batch_size,
        )
    if self.sends_train_size:
      for data, index in zip(client_data, client_indices):
        data[ditto.NUM_TRAIN_EXAMPLES_KEY] = tf.data.Dataset.from_tensors(
            np.float32(self._num_train_examples[index])
        )
    return client_data

  def run_round(self, round_num: int) -> collections.OrderedDict:
    """Trains one round; returns its metrics row."""
    start = time.monotonic()
    client_indices = sampling.sample_clients(
        round_num,
        self._num_train_examples,
        self.config.clients_per_round,
        self.config.seed,
        self.config.sampling,
    )
    output = self.process.next(
        self.state,
        self.baseline.round_client_data(self, round_num, client_indices)
        if self.baseline
        else self._round_client_data(round_num, client_indices),
    )
    self.state = output.state
    crash_safety.maybe_inject_fault('mid_round', round_num)
    if self.store is not None:
      self.store.commit(client_indices, round_num)
    train = output.metrics['client_work']['train']
    row = collections.OrderedDict(
        round=round_num,
        seconds=time.monotonic() - start,
        global_train_loss=float(train['global_train_loss']),
        personal_train_loss=(
            float(train['personal_train_loss']) if self.personalize else math.nan
        ),
        sampled_malicious=int(self.malicious[client_indices].sum()),
        non_finite_updates=float(train['non_finite_updates']),
    )
    if self.select_lambda_per_step:
      row.update(self._lambda_step_shares(train))
    return row

  def _lambda_step_shares(self, train) -> collections.OrderedDict:
    """Shares of the round's personal steps kept per lambda, and fallback."""
    shares = np.asarray(train[ditto.LAMBDA_STEP_SHARES_KEY], np.float64)
    row = collections.OrderedDict(
        (f'step_share_lam_{value:g}', float(share))
        for value, share in zip(self.personal_lambdas, shares)
    )
    row['step_share_fallback'] = float(shares[-1])
    return row

  # ------------------------------------------------------------ evaluation

  def _client_split(self, split: str) -> split_evaluation.ClientSplit:
    """Every client's `split` ('test' or 'validation'), built once."""
    if split not in self._client_splits:
      arrays = getattr(self.dataset, split)
      self._client_splits[split] = split_evaluation.client_split(
          [arrays[c] for c in self.dataset.client_ids],
          self.config.eval_batch_size,
      )
    return self._client_splits[split]

  def _evaluate_personal_models(self, split: str):
    """Per-client metrics of every personal model on `split`."""
    read_paths = np.array(
        [self.store.read_path(i) for i in range(self.dataset.num_clients)],
        dtype=object,
    )
    return split_evaluation.per_client(self.personalized_evaluation(
        self._client_split(split).as_argument(), read_paths
    ))

  def _evaluate_global_model(self, weights, split: str):
    """Per-client metrics of the global model `weights` on `split`."""
    return split_evaluation.per_client(self.global_evaluation(
        weights, self._client_split(split).as_argument()
    ))

  def _select_personal_models(self, client_metrics):
    """Each client's choice of lambda on its validation split (paper, 5.x).

    Only the selection lambdas (the candidates, the first models in state
    order) take part; report-only models never do.

    Args:
      client_metrics: Per-client metrics of every personal model (vectors in
        state order).

    Returns:
      (per-client metrics of the chosen models, chosen lambda per client).
    """
    num_candidates = len(self.selection_lambdas)
    validation_metrics = evaluation.stack_client_metrics(
        self._evaluate_personal_models('validation')
    )
    chosen = evaluation.select_personal_models(
        {key: values[:, :num_candidates]
         for key, values in validation_metrics.items()},
        self.selection_lambdas,
        training_config.fallback_lambda(self.config.strong_attack),
        training_config.MIN_VALIDATION_EXAMPLES_FOR_SELECTION,
    )
    selected = evaluation.take_personal_model(
        evaluation.stack_client_metrics(client_metrics), chosen
    )
    return _per_client(selected), np.asarray(self.personal_lambdas)[chosen]

  def _main_personal_model(self, client_metrics):
    """The run's own model among a client's several personal models.

    Args:
      client_metrics: Per-client metrics of every personal model (vectors in
        state order).

    Returns:
      (per-client metrics of the run's model, chosen lambda per client or
      None): the per-device choice with lam_selection 'auto', else the
      fixed lambda's model (the first in state order).
    """
    if self.config.lam_selection == 'auto':
      return self._select_personal_models(client_metrics)
    first = np.zeros([len(client_metrics)], np.int64)
    return _per_client(evaluation.take_personal_model(
        evaluation.stack_client_metrics(client_metrics), first
    )), None

  def _per_lambda_summaries(
      self, every_model: dict[str, np.ndarray]
  ) -> collections.OrderedDict:
    """Each personal model on its own over the benign clients.

    Args:
      every_model: `stack_client_metrics` of all personal models
        ([clients, models]).

    Returns:
      `evaluation.summarize` of each, prefixed 'benign_lam_<value>_': the
      fixed-lambda results of this very run (the global model does not
      depend on lambda).
    """
    benign = ~self.malicious
    summary = collections.OrderedDict()
    for index, value in enumerate(self.personal_lambdas):
      summary.update(
          evaluation.summarize_clients(
              every_model, (benign, index), f'benign_lam_{value:g}_'
          )
      )
    return summary

  def _global_model_summary(self, weights, split, table) -> dict[str, float]:
    """The global model beside the personal ones, on the evaluated split.

    A `ditto` run gets the benign summary a `global` run reports, prefixed
    'global_model_benign_', and its per-client accuracy in `table`
    (column `global_model_accuracy`); the other personalized methods only
    the pooled accuracy.

    Args:
      weights: The global model's weights.
      split: The evaluated split.
      table: The per-client table, extended in place (ditto).

    Returns:
      The summary entries.
    """
    benign = ~self.malicious
    global_metrics = evaluation.stack_client_metrics(
        self._evaluate_global_model(weights, split)
    )
    summary = collections.OrderedDict()
    if self.config.method == 'ditto':
      summary.update(
          evaluation.summarize_clients(
              global_metrics, benign, 'global_model_benign_'
          )
      )
      table['global_model_accuracy'] = _accuracies(global_metrics)
    # As before the full summary existed (0 without benign test examples).
    summary['global_model_benign_pooled_accuracy'] = float(
        global_metrics['num_correct'][benign].sum()
        / max(global_metrics['num_examples'][benign].sum(), 1.0)
    )
    return summary

  def evaluate(
      self,
      round_num: int,
      split: Optional[str] = None,
      client_metrics_path: Optional[str] = '',
  ) -> collections.OrderedDict:
    """Per-client evaluation of the method's models; returns the summary.

    Args:
      round_num: The round evaluated (for the record).
      split: 'test' or 'validation'; default `config.eval_split`.
      client_metrics_path: Where the per-client table goes; '' =
        `<output_dir>/client_metrics.csv`, None = not written.

    Returns:
      The summary over benign (and malicious) clients: `evaluation.summarize`
      keys prefixed 'benign_' ('malicious_'); with several personal models
      also each on its own ('benign_lam_<value>_') and with lam_selection
      'auto' the share of benign clients choosing each candidate
      ('benign_share_lam_<value>'); for the personalized methods the global
      model (`_global_model_summary`).
    """
    split = split or self.config.eval_split
    client_ids = self.dataset.client_ids
    arrays = getattr(self.dataset, split)
    # Per-client datasets for the baselines' and fine-tuning's own
    # evaluations; Ditto's family evaluates every client in one computation.
    test = [
        eval_batches(arrays[c], self.config.eval_batch_size)
        for c in client_ids
    ] if self.baseline is not None or self.config.method == 'finetune' else []
    weights = self.process.get_model_weights(self.state)
    chosen_lambdas = None
    every_model = None
    if self.baseline is not None:
      client_metrics = self.baseline.evaluate_clients(self, weights, test)
    elif self.personalize:
      client_metrics = self._evaluate_personal_models(split)
      if self.num_personal_models > 1:
        every_model = evaluation.stack_client_metrics(client_metrics)
        client_metrics, chosen_lambdas = self._main_personal_model(
            client_metrics
        )
    elif self.config.method == 'finetune':
      client_metrics = self.finetune_evaluation(
          weights,
          [
              collections.OrderedDict(
                  train=self.batch_streams.finetune_batches(
                      i, self.dataset.train[c], self.config.finetune_steps
                  ),
                  test=batches,
              )
              for i, (c, batches) in enumerate(zip(client_ids, test))
          ],
      )
    else:
      client_metrics = self._evaluate_global_model(weights, split)
    stacked = evaluation.stack_client_metrics(client_metrics)
    summary = collections.OrderedDict()
    benign = ~self.malicious
    summary.update(
        evaluation.summarize_clients(
            stacked, benign, 'benign_'
        )
    )
    if self.malicious.any():
      summary.update(
          evaluation.summarize_clients(
              stacked, self.malicious, 'malicious_'
          )
      )
    table = evaluation.client_metrics_table(client_metrics, client_ids)
    table['malicious'] = self.malicious
    if chosen_lambdas is not None:
      table['lam'] = chosen_lambdas
    if self.personalize:
      summary.update(self._global_model_summary(weights, split, table))
    if every_model is not None:
      summary.update(self._per_lambda_summaries(every_model))
      if self.config.report_lambdas:
        for index, value in enumerate(self.personal_lambdas):
          table[f'lam_{value:g}_accuracy'] = _accuracies(
              {key: values[:, index] for key, values in every_model.items()}
          )
    if chosen_lambdas is not None:
      for value in self.selection_lambdas:
        summary[f'benign_share_lam_{value:g}'] = float(
            np.mean(chosen_lambdas[benign] == value)
        )
    if client_metrics_path is not None:
      crash_safety.write_atomically(
          client_metrics_path
          or os.path.join(self.output_dir, 'client_metrics.csv'),
          table.to_csv(index=False),
      )
    return summary

  def evaluate_curve_split(self, round_num: int) -> collections.OrderedDict:
    """`config.curve_split`'s summary, keys prefixed '<split>_' ({} if None).

    Evaluates the same models as `evaluate` on the other split, after it,
    and writes no per-client table (client_metrics.csv stays the eval
    split's).

    Args:
      round_num: The round evaluated.

    Returns:
      The prefixed summary entries.
    """
    split = self.config.curve_split
    if split is None:
      return collections.OrderedDict()
    summary = self.evaluate(round_num, split=split, client_metrics_path=None)
    return collections.OrderedDict(
        (f'{split}_{key}', value) for key, value in summary.items()
    )

  def evaluate_global_model(self, split: str) -> collections.OrderedDict:
    """Summary of the current global model on `split` over benign clients."""
    stacked = evaluation.stack_client_metrics(
        self._evaluate_global_model(
            self.process.get_model_weights(self.state), split
        )
    )
    benign = ~self.malicious
    return evaluation.summarize_clients(
        stacked, benign, 'benign_'
    )

  # ------------------------------------------------------------------- run

  def _progress_line(self, row) -> str:
    line = (
        f'[{self.config.method}] round {row["round"] + 1}/{self.config.rounds}'
        f' | {row["seconds"]:.2f}s | train loss {row["global_train_loss"]:.4f}'
    )
    if self.personalize:
      line += f' (personal {row["personal_train_loss"]:.4f})'
    if 'benign_mean_accuracy' in row:
      line += (
          f' | benign acc mean {row["benign_mean_accuracy"]:.4f}'
          f' pooled {row["benign_pooled_accuracy"]:.4f}'
          f' std {row["benign_std_accuracy"]:.4f}'
      )
    return line

  def run(self) -> collections.OrderedDict:
    """Runs the remaining rounds; returns the final summary (also saved)."""
    config = self.config
    start = time.monotonic()
    for round_num in range(self.next_round, config.rounds):
      row = self.run_round(round_num)
      is_last = round_num == config.rounds - 1
      if (round_num + 1) % config.eval_every == 0 or is_last:
        self.last_evaluation = self.evaluate(round_num)
        row.update(self.last_evaluation)
        row.update(self.evaluate_curve_split(round_num))
      asyncio.run(self.metrics_manager.release(row, key=round_num))
      if self.checkpoints.due(round_num, is_last):
        self.save_checkpoint(round_num)
      self.history.append(row)
      self.next_round = round_num + 1
      self.log_fn(self._progress_line(row))
    if self.last_evaluation is None:
      # Resumed after the last round: evaluate the restored state.
      self.last_evaluation = self.evaluate(config.rounds - 1)
    summary = collections.OrderedDict(
        method=config.method,
        dataset=self.dataset.name,
        rounds=config.rounds,
        seconds=time.monotonic() - start,
        config=dataclasses.asdict(config),
        final=self.last_evaluation,
        num_clients=self.dataset.num_clients,
        num_malicious=int(self.malicious.sum()),
    )
    crash_safety.write_atomically(
        os.path.join(self.output_dir, 'summary.json'),
        json.dumps(summary, indent=2, default=_json_default),
    )
    return summary

  def personalized_weights(self, client_index: int) -> list[np.ndarray]:
    """A client's current personalized model(s), trainable + non-trainable.

    With several personal models (lam_selection 'auto', report lambdas), the
    models of all lambdas, one after the other in the order of
    `personal_lambdas` (one model otherwise).
    """
    if self.store is None:
      raise ValueError(f'Method {self.config.method} keeps no client state.')
    return self.store.read(client_index)


def _per_client(stacked: dict[str, np.ndarray]) -> list[dict[str, Any]]:
  """Per-client records from `stack_client_metrics`-shaped arrays.

  Args:
    stacked: Arrays of shape [clients].

  Returns:
    One {key: value} record per client.
  """
  num_clients = len(next(iter(stacked.values())))
  return [
      {key: values[i] for key, values in stacked.items()}
      for i in range(num_clients)
  ]


def _accuracies(stacked: dict[str, np.ndarray]) -> np.ndarray:
  """Per-client accuracy (NaN without examples), as `client_metrics_table`.

  Args:
    stacked: `stack_client_metrics` arrays of shape [clients].

  Returns:
    float64 array [clients].
  """
  return np.array([
      float(correct) / float(count) if count else np.nan
      for correct, count in zip(stacked['num_correct'], stacked['num_examples'])
  ])


def _json_default(value: Any):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'Not JSON serializable: {type(value)}')
