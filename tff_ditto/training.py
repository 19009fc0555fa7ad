"""The runner of a federated experiment: it loops the rounds.

`ExperimentRunner` runs one method (`ditto`, `local`, `global`, `finetune` or
a baseline of `tff_ditto.baselines`) on one `FederatedDataset` with one
model, sharing the client sampling, batch order, initial model, evaluation
and output format between methods, so their numbers are comparable. All
training and evaluation runs in TFF computations; the runner keeps the
server state and drives the rounds with the harness's parts:
`tff_ditto.sampling` (the clients of a round), `tff_ditto.methods` (the
method's process, round-data fields, client state and evaluation, built once
per distinct input with a `tff_ditto.computation_cache.ComputationCache`),
`tff_ditto.round_data` (the clients' data, a `RoundDataBuilder` that the
runner owns and `round_data_class` replaces), `tff_ditto.run_evaluation`,
`tff_ditto.checkpoints` and `tff_ditto.client_states`.

The output directory (`tff_ditto.run_outputs`): `metrics.csv` (one row per
round; with lam_selection 'per_step' the share of the round's personal steps
that kept each candidate lambda, `step_share_lam_<value>`, or took the
fallback, `step_share_fallback`; with `curve_split`, that split's summary,
keys prefixed '<split>_'), `tensorboard/` (the same rows' scalars),
`client_metrics.csv` (per-client results of the last evaluation),
`summary.json` (final summary and configuration), `curves.png` (loss and
accuracy curves), `checkpoints/` and `client_states/` (versioned
personalized models).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Optional

import numpy as np

from tff_ditto import attacks
from tff_ditto import batch_streams
from tff_ditto import checkpoints
from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import computation_cache as computation_cache_lib
from tff_ditto import config_equivalence
from tff_ditto import crash_safety
from tff_ditto import ditto
from tff_ditto import initial_weights
from tff_ditto import methods
from tff_ditto import round_data
from tff_ditto import run_curves
from tff_ditto import run_evaluation
from tff_ditto import run_outputs
from tff_ditto import sampling
from tff_ditto import training_config
from tff_ditto.data import FederatedDataset


class ExperimentRunner:
  """Runs one method on one dataset; see the module docstring.

  Attributes:
    config: The run's effective config (`config_equivalence.effective_config`).
    dataset: The dataset it trains on (labels poisoned by a data attack).
    malicious: bool [clients], the malicious clients.
    personalize: The method trains personalized models.
    personal_models: The personal models each client keeps.
    global_evaluation: The split evaluation of the global model.
    method: The method (`tff_ditto.methods.Method`).
    process: Its learning process; `state` is its server state.
    store: The clients' state files, or None.
    batch_streams: The clients' training batch streams.
    round_data: The builder of the clients' data.
    evaluator: The run's evaluation.
    checkpoints: The run's checkpoints.
    next_round: The next round to train.
    history: The metrics rows of the rounds this runner trained.
    last_evaluation: The summary of the latest evaluation, or None.
  """

  def __init__(
      self,
      config: training_config.ExperimentConfig,
      dataset: FederatedDataset,
      model_fn: client_data_schema.ModelFn,
      output_dir: str,
      *,
      model_aggregator=None,
      malicious_client_indices: Optional[Sequence[int]] = None,
      resume: bool = False,
      overwrite: bool = False,
      log_fn: Optional[Callable[[str], None]] = print,
      computation_cache: Optional[
          computation_cache_lib.ComputationCache
      ] = None,
      round_data_class: type[
          round_data.RoundDataBuilder
      ] = round_data.RoundDataBuilder,
  ):
    """Builds the TFF computations and prepares the output directory.

    Args:
      config: The run's hyper-parameters (validated here).
      dataset: The federated dataset.
      model_fn: No-arg callable returning a `tff.learning.models.VariableModel`.
      output_dir: Where results, checkpoints and client states go.
      model_aggregator: A `tff.aggregators` factory (default: the one
        `config.aggregator` names, `aggregator_specs.model_aggregator_spec`).
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
      round_data_class: The `round_data.RoundDataBuilder` (sub)class that
        builds the clients' data.

    Raises:
      ValueError: On an invalid config, or a lambda selection on a dataset
        where no client has enough validation data.
      checkpoints.OutputDirectoryError: If `output_dir` holds results and
        neither `resume` nor `overwrite` is set.
    """
    config.validate()
    config = config_equivalence.effective_config(config)
    self.config = config
    self.output_dir = output_dir
    self.log_fn = log_fn or (lambda _: None)
    if malicious_client_indices is None:
      malicious_client_indices = attacks.choose_malicious_clients(
          dataset.num_clients, config.attack_ratio, config.seed
      )
    self.malicious = np.zeros([dataset.num_clients], bool)
    self.malicious[np.asarray(malicious_client_indices, np.int64)] = True
    self.dataset = attacks.attacked_dataset(
        dataset,
        np.flatnonzero(self.malicious),
        config.attack,
        poison_labels=config.attack_poison_labels,
        seed=config.seed,
    )
    num_clients = self.dataset.num_clients
    methods.check_validation_data(config, self.dataset)
    run_outputs.prepare_output_dir(output_dir, resume, overwrite)

    self.personalize = config.method in training_config.PERSONALIZED_METHODS
    self.personal_models = methods.PersonalModels.from_config(config)
    self.global_evaluation = methods.build_global_evaluation(
        model_fn, computation_cache
    )
    self.method = methods.build_method(
        config,
        model_fn,
        self.global_evaluation,
        num_clients=num_clients,
        num_malicious=int(self.malicious.sum()),
        personal_models=self.personal_models,
        model_aggregator=model_aggregator,
        cache=computation_cache,
    )
    self.process = self.method.process
    initial = initial_weights.initial_model_weights(model_fn, config.seed)
    self.state = self.process.set_model_weights(
        self.process.initialize(), initial
    )
    self.store = None
    if self.method.stateful:
      self.store = client_states.FileClientStateStore(
          os.path.join(output_dir, 'client_states'),
          num_clients,
          (list(initial.trainable) + list(initial.non_trainable))
          * self.personal_models.count,
      )
    self.batch_streams = batch_streams.ClientBatchStreams(
        config.batch_stream,
        num_clients,
        config.batch_size,
        config.seed,
    )
    self.round_data = round_data_class(
        config, self.dataset, self.batch_streams, self.malicious, self.store
    )
    self.evaluator = run_evaluation.RunEvaluator(
        config,
        self.method,
        self.global_evaluation,
        self.round_data,
        self.personal_models,
        output_dir,
    )
    self.next_round = 0
    self.checkpoints = checkpoints.RunCheckpoints(
        output_dir,
        self.state,
        num_clients,
        self.log_fn,
        checkpoint_every=config.checkpoint_every,
        store=self.store,
    )
    self.history: list[collections.OrderedDict] = []
    self.last_evaluation: Optional[collections.OrderedDict] = None
    if resume:
      self._restore_latest_checkpoint()

  # ------------------------------------------------------------ checkpoints

  def _restore_latest_checkpoint(self) -> None:
    """Continues from the latest usable checkpoint, if there is one.

    Raises:
      checkpoints.OutputDirectoryError: If the checkpoints are all unusable
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

  def run_round(self, round_num: int) -> collections.OrderedDict:
    """Trains one round; returns its metrics row.

    Args:
      round_num: The round.

    Returns:
      The row: round, seconds, the train losses, the sampled malicious
      clients, the non-finite updates, the largest L2 norm of an update
      sent to the aggregator, the largest among those of clients with an
      update attack (A2, A3, bit flip, or marked for a server-side attack;
      0 when none was sampled, and under A1, whose attackers send honest
      updates of poisoned labels), and per-step lambda shares.
    """
    start = time.monotonic()
    client_indices = sampling.sample_clients(
        round_num,
        self.round_data.num_train_examples,
        self.config.clients_per_round,
        self.config.seed,
        self.config.sampling,
    )
    fields = self.method.client_data_fields
    output = self.process.next(
        self.state,
        self.round_data.client_data(round_num, client_indices, fields),
    )
    self.state = output.state
    crash_safety.maybe_inject_fault('mid_round', round_num)
    if self.store is not None:
      self.store.commit(
          client_indices,
          round_num,
          frozen=self.round_data.frozen_clients(client_indices, fields),
      )
    train = output.metrics['client_work']['train']
    row = collections.OrderedDict(
        round=round_num,
        seconds=time.monotonic() - start,
        global_train_loss=float(train['global_train_loss']),
        personal_train_loss=(
            float(train['personal_train_loss'])
            if self.personalize
            else math.nan
        ),
        sampled_malicious=int(self.malicious[client_indices].sum()),
        non_finite_updates=float(train['non_finite_updates']),
        max_update_norm=float(train['max_update_norm']),
        max_attacker_update_norm=float(train['max_attacker_update_norm']),
    )
    if self.personal_models.select_per_step:
      row.update(self._lambda_step_shares(train))
    return row

  def _lambda_step_shares(self, train) -> collections.OrderedDict:
    """Shares of the round's personal steps kept per lambda, and fallback."""
    shares = np.asarray(train[ditto.LAMBDA_STEP_SHARES_KEY], np.float64)
    row = collections.OrderedDict(
        (f'step_share_lam_{value:g}', float(share))
        for value, share in zip(self.personal_models.lambdas, shares)
    )
    row['step_share_fallback'] = float(shares[-1])
    return row

  # ------------------------------------------------------------ evaluation

  def evaluate(
      self,
      round_num: int,
      split: Optional[str] = None,
      client_metrics_path: Optional[str] = '',
  ) -> collections.OrderedDict:
    """`RunEvaluator.evaluate` of the current models.

    Args:
      round_num: The round evaluated (for the record).
      split: 'test' or 'validation'; default `config.eval_split`.
      client_metrics_path: Where the per-client table goes; '' =
        `<output_dir>/client_metrics.csv`, None = not written.

    Returns:
      The summary.
    """
    del round_num  # The state's round.
    return self.evaluator.evaluate(
        self.process.get_model_weights(self.state), split, client_metrics_path
    )

  def evaluate_global_model(self, split: str) -> collections.OrderedDict:
    """Summary of the current global model on `split` over benign clients.

    Args:
      split: 'test' or 'validation'.

    Returns:
      `RunEvaluator.evaluate_global_model`'s summary.
    """
    return self.evaluator.evaluate_global_model(
        self.process.get_model_weights(self.state), split
    )

  # ------------------------------------------------------------------- run

  def _progress_line(self, row) -> str:
    line = (
        f'[{self.config.method}] round {row["round"] + 1}/{self.config.rounds}'
        f' | {row["seconds"]:.2f}s | train loss {row["global_train_loss"]:.4f}'
    )
    if self.personalize:
      line += f' (personal {row["personal_train_loss"]:.4f})'
    if row['non_finite_updates']:
      # Zeroed, not averaged (`process_templates.zero_if_non_finite`).
      line += f' | {row["non_finite_updates"]:g} non-finite updates zeroed'
    if 'benign_mean_accuracy' in row:
      line += (
          f' | benign acc mean {row["benign_mean_accuracy"]:.4f}'
          f' pooled {row["benign_pooled_accuracy"]:.4f}'
          f' std {row["benign_std_accuracy"]:.4f}'
      )
    return line

  def run(self) -> collections.OrderedDict:
    """Runs the remaining rounds; returns the final summary (also saved).

    Returns:
      The summary: method, dataset, rounds, seconds, config, the final
      evaluation, the number of clients and of malicious clients.
    """
    config = self.config
    start = time.monotonic()
    metrics = run_outputs.MetricsReleaser(self.output_dir)
    for round_num in range(self.next_round, config.rounds):
      row = self.run_round(round_num)
      is_last = round_num == config.rounds - 1
      if (round_num + 1) % config.eval_every == 0 or is_last:
        weights = self.process.get_model_weights(self.state)
        with self.evaluator.reading_state_files_once(
            weights, [config.eval_split, config.curve_split]
        ):
          self.last_evaluation = self.evaluator.evaluate(weights)
          row.update(self.last_evaluation)
          row.update(self.evaluator.evaluate_curve_split(weights))
      asyncio.run(metrics.release(row, round_num))
      if self.checkpoints.due(round_num, is_last):
        self.save_checkpoint(round_num)
        metrics.flush()
      self.history.append(row)
      self.next_round = round_num + 1
      self.log_fn(self._progress_line(row))
    metrics.flush()
    if self.last_evaluation is None:
      # Resumed after the last round: evaluate the restored state.
      self.last_evaluation = self.evaluate(config.rounds - 1)
    run_curves.write_curves(
        os.path.join(self.output_dir, run_outputs.METRICS_FILE),
        os.path.join(self.output_dir, run_outputs.CURVES_FILE),
        f'{config.method} on {self.dataset.name} ({config.eval_split})',
    )
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
    run_outputs.write_summary(self.output_dir, summary)
    return summary

  def personalized_weights(self, client_index: int) -> list[np.ndarray]:
    """A client's current personalized model(s), trainable + non-trainable.

    With several personal models (lam_selection 'auto', report lambdas), the
    models of all lambdas, one after the other in the order of
    `personal_models.lambdas` (one model otherwise).

    Args:
      client_index: The client.

    Returns:
      The weights.

    Raises:
      ValueError: If the method keeps no client state.
    """
    if self.store is None:
      raise ValueError(f'Method {self.config.method} keeps no client state.')
    return self.store.read(client_index)
