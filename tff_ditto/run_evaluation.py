"""A run's evaluation: every client's results and their summaries.

`RunEvaluator.evaluate` evaluates the method's models on every client
(`Method.evaluate_clients`), writes the per-client table and returns the
summary over the benign (and malicious) clients. On top of the method's own
models it reports:

* with several personal models per client (lam_selection 'auto', report
  lambdas), the run's own model among them (`main_personal_model`: each
  client's choice of lambda on its validation split, paper Section 5, or the
  fixed lambda's) and each personal model on its own ('benign_lam_<value>_');
* for the personalized methods, the global model beside the personal ones
  (`global_model_summary`).

An evaluation needs the personal models on up to two splits: the evaluated
one, the validation split the per-device choice reads, and the curve split.
Inside `reading_state_files_once` (which `evaluate` itself uses) every split
comes from one read of each client's state file
(`Method.evaluate_clients_on_splits`), and a split asked for again is not
evaluated again. Before, an evaluation with per-device lambda and a
validation curve read every file four times (the test split, its choice,
the curve, its choice); on Fashion-MNIST's paper-budget cell (26 GB of state
files, on a machine with 24 GiB of memory) it took 4-11 minutes beside a
FEMNIST cell (docs/performance.md).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
import contextlib
import os
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from tff_ditto import crash_safety
from tff_ditto import evaluation
from tff_ditto import lambda_policy
from tff_ditto import methods
from tff_ditto import round_data
from tff_ditto import split_evaluation
from tff_ditto import training_config
from tff_ditto.training_config import ExperimentConfig

CLIENT_METRICS_FILE = 'client_metrics.csv'


def per_client(stacked: dict[str, np.ndarray]) -> list[dict[str, Any]]:
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


def accuracies(stacked: dict[str, np.ndarray]) -> np.ndarray:
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


class RunEvaluator:
  """Evaluates one run's models on every client; see the module docstring.

  Attributes:
    config: The run's (effective) config.
    method: The run's method.
    global_evaluation: The split evaluation of the global model
      (`methods.build_global_evaluation`).
    inputs: The run's builder of client inputs.
    personal_models: The run's personal models.
    output_dir: Where the per-client table goes by default.
  """

  def __init__(
      self,
      config: ExperimentConfig,
      method: methods.Method,
      global_evaluation: tff.Computation,
      inputs: round_data.RoundDataBuilder,
      personal_models: methods.PersonalModels,
      output_dir: str,
  ):
    """Creates the evaluator of one run.

    Args:
      config: The run's (effective) config.
      method: The run's method.
      global_evaluation: The split evaluation of the global model.
      inputs: The run's builder of client inputs (its `malicious` clients
        are reported apart).
      personal_models: The run's personal models.
      output_dir: Where the per-client table goes by default.
    """
    self.config = config
    self.method = method
    self.global_evaluation = global_evaluation
    self.inputs = inputs
    self.personal_models = personal_models
    self.output_dir = output_dir
    self._client_metrics: Optional[dict[str, list]] = None

  @property
  def personalized(self) -> bool:
    """Whether the method trains personalized models."""
    return self.config.method in training_config.PERSONALIZED_METHODS

  @property
  def selects_per_device(self) -> bool:
    """Whether each client chooses its model on its validation split."""
    return (
        self.personal_models.count > 1 and self.config.lam_selection == 'auto'
    )

  @contextlib.contextmanager
  def reading_state_files_once(
      self,
      model_weights: tff.learning.models.ModelWeights,
      splits: Sequence[Optional[str]],
  ) -> Iterator[None]:
    """Evaluations inside share one evaluation of the models on `splits`.

    The method's models are evaluated once on every split of `splits` (None
    entries ignored) and, with per-device selection, on the validation
    split, all from one read of each client's state file; the evaluations
    inside take their per-client metrics from there. Inside an outer
    `reading_state_files_once`, nothing more happens. The models must not
    change inside.

    Args:
      model_weights: The global model.
      splits: The splits the evaluations inside need.

    Yields:
      Nothing.
    """
    if self._client_metrics is not None:
      yield
      return
    needed = list(dict.fromkeys(split for split in splits if split))
    if self.selects_per_device and 'validation' not in needed:
      needed.append('validation')
    self._client_metrics = self.method.evaluate_clients_on_splits(
        model_weights, needed, self.inputs
    )
    try:
      yield
    finally:
      self._client_metrics = None

  def _evaluate_clients(
      self, model_weights: tff.learning.models.ModelWeights, split: str
  ) -> list:
    """`Method.evaluate_clients`, or its result from `_client_metrics`."""
    if self._client_metrics is not None and split in self._client_metrics:
      return self._client_metrics[split]
    return self.method.evaluate_clients(model_weights, split, self.inputs)

  def evaluate(
      self,
      model_weights: tff.learning.models.ModelWeights,
      split: Optional[str] = None,
      client_metrics_path: Optional[str] = '',
  ) -> collections.OrderedDict:
    """Per-client evaluation of the method's models; returns the summary.

    Args:
      model_weights: The global model.
      split: 'test' or 'validation'; default `config.eval_split`.
      client_metrics_path: Where the per-client table goes; '' =
        `<output_dir>/client_metrics.csv`, None = not written.

    Returns:
      The summary over benign (and malicious) clients: `evaluation.summarize`
      keys prefixed 'benign_' ('malicious_'); with several personal models
      also each on its own ('benign_lam_<value>_') and with lam_selection
      'auto' the share of benign clients choosing each candidate
      ('benign_share_lam_<value>'); for the personalized methods the global
      model (`global_model_summary`).
    """
    split = split or self.config.eval_split
    with self.reading_state_files_once(model_weights, [split]):
      return self._evaluate(model_weights, split, client_metrics_path)

  def _evaluate(
      self,
      model_weights: tff.learning.models.ModelWeights,
      split: str,
      client_metrics_path: Optional[str],
  ) -> collections.OrderedDict:
    """`evaluate` of an explicit split."""
    malicious = self.inputs.malicious
    benign = ~malicious
    client_metrics = self._evaluate_clients(model_weights, split)
    chosen_lambdas = None
    every_model = None
    if self.personal_models.count > 1:
      every_model = evaluation.stack_client_metrics(client_metrics)
      client_metrics, chosen_lambdas = self.main_personal_model(
          model_weights, client_metrics
      )
    stacked = evaluation.stack_client_metrics(client_metrics)
    summary = collections.OrderedDict()
    summary.update(evaluation.summarize_clients(stacked, benign, 'benign_'))
    if malicious.any():
      summary.update(
          evaluation.summarize_clients(stacked, malicious, 'malicious_')
      )
    table = evaluation.client_metrics_table(
        client_metrics, self.inputs.dataset.client_ids
    )
    table['malicious'] = malicious
    if chosen_lambdas is not None:
      table['lam'] = chosen_lambdas
    if self.personalized:
      summary.update(self.global_model_summary(model_weights, split, table))
    if every_model is not None:
      summary.update(self.per_lambda_summaries(every_model))
      if self.config.report_lambdas:
        for index, value in enumerate(self.personal_models.lambdas):
          table[f'lam_{value:g}_accuracy'] = accuracies(
              {key: values[:, index] for key, values in every_model.items()}
          )
    if chosen_lambdas is not None:
      for value in self.personal_models.selection_lambdas:
        summary[f'benign_share_lam_{value:g}'] = float(
            np.mean(chosen_lambdas[benign] == value)
        )
    if client_metrics_path is not None:
      crash_safety.write_atomically(
          client_metrics_path
          or os.path.join(self.output_dir, CLIENT_METRICS_FILE),
          table.to_csv(index=False),
      )
    return summary

  def evaluate_curve_split(
      self, model_weights: tff.learning.models.ModelWeights
  ) -> collections.OrderedDict:
    """`config.curve_split`'s summary, keys prefixed '<split>_' ({} if None).

    Evaluates the same models as `evaluate` on the other split, after it,
    and writes no per-client table (client_metrics.csv stays the eval
    split's).

    Args:
      model_weights: The global model.

    Returns:
      The prefixed summary entries.
    """
    split = self.config.curve_split
    if split is None:
      return collections.OrderedDict()
    summary = self.evaluate(model_weights, split, client_metrics_path=None)
    return collections.OrderedDict(
        (f'{split}_{key}', value) for key, value in summary.items()
    )

  def evaluate_global_model(
      self, model_weights: tff.learning.models.ModelWeights, split: str
  ) -> collections.OrderedDict:
    """Summary of the global model on `split` over benign clients.

    Args:
      model_weights: The global model.
      split: 'test' or 'validation'.

    Returns:
      `evaluation.summarize` keys prefixed 'benign_'.
    """
    stacked = evaluation.stack_client_metrics(
        self.global_model_metrics(model_weights, split)
    )
    return evaluation.summarize_clients(
        stacked, ~self.inputs.malicious, 'benign_'
    )

  def global_model_metrics(
      self, model_weights: tff.learning.models.ModelWeights, split: str
  ) -> list:
    """Per-client metrics of the global model on `split`.

    Args:
      model_weights: The global model.
      split: 'test' or 'validation'.

    Returns:
      One record (loss_sum, num_correct, num_examples) per client.
    """
    return split_evaluation.per_client(
        self.global_evaluation(
            model_weights, self.inputs.client_split(split).as_argument()
        )
    )

  def select_personal_models(
      self,
      model_weights: tff.learning.models.ModelWeights,
      client_metrics: list,
  ) -> tuple[list, np.ndarray]:
    """Each client's choice of lambda on its validation split (paper, 5.x).

    Only the selection lambdas (the candidates, the first models in state
    order) take part; report-only models never do.

    Args:
      model_weights: The global model.
      client_metrics: Per-client metrics of every personal model (vectors in
        state order).

    Returns:
      (per-client metrics of the chosen models, chosen lambda per client).
    """
    personal_models = self.personal_models
    num_candidates = len(personal_models.selection_lambdas)
    validation_metrics = evaluation.stack_client_metrics(
        self._evaluate_clients(model_weights, 'validation')
    )
    chosen = evaluation.select_personal_models(
        {
            key: values[:, :num_candidates]
            for key, values in validation_metrics.items()
        },
        personal_models.selection_lambdas,
        personal_models.fallback_lambda,
        lambda_policy.MIN_VALIDATION_EXAMPLES_FOR_SELECTION,
    )
    selected = evaluation.take_personal_model(
        evaluation.stack_client_metrics(client_metrics), chosen
    )
    return per_client(selected), np.asarray(personal_models.lambdas)[chosen]

  def main_personal_model(
      self,
      model_weights: tff.learning.models.ModelWeights,
      client_metrics: list,
  ) -> tuple[list, Optional[np.ndarray]]:
    """The run's own model among a client's several personal models.

    Args:
      model_weights: The global model.
      client_metrics: Per-client metrics of every personal model (vectors in
        state order).

    Returns:
      (per-client metrics of the run's model, chosen lambda per client or
      None): the per-device choice with lam_selection 'auto', else the
      fixed lambda's model (the first in state order).
    """
    if self.selects_per_device:
      return self.select_personal_models(model_weights, client_metrics)
    first = np.zeros([len(client_metrics)], np.int64)
    return (
        per_client(
            evaluation.take_personal_model(
                evaluation.stack_client_metrics(client_metrics), first
            )
        ),
        None,
    )

  def per_lambda_summaries(
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
    benign = ~self.inputs.malicious
    summary = collections.OrderedDict()
    for index, value in enumerate(self.personal_models.lambdas):
      summary.update(
          evaluation.summarize_clients(
              every_model, (benign, index), f'benign_lam_{value:g}_'
          )
      )
    return summary

  def global_model_summary(
      self,
      model_weights: tff.learning.models.ModelWeights,
      split: str,
      table,
  ) -> collections.OrderedDict:
    """The global model beside the personal ones, on the evaluated split.

    A `ditto` run gets the benign summary a `global` run reports, prefixed
    'global_model_benign_', and its per-client accuracy in `table`
    (column `global_model_accuracy`); the other personalized methods only
    the pooled accuracy.

    Args:
      model_weights: The global model.
      split: The evaluated split.
      table: The per-client table (a `pandas.DataFrame`), extended in place
        (ditto).

    Returns:
      The summary entries.
    """
    benign = ~self.inputs.malicious
    global_metrics = evaluation.stack_client_metrics(
        self.global_model_metrics(model_weights, split)
    )
    summary = collections.OrderedDict()
    if self.config.method == 'ditto':
      summary.update(
          evaluation.summarize_clients(
              global_metrics, benign, 'global_model_benign_'
          )
      )
      table['global_model_accuracy'] = accuracies(global_metrics)
    # As before the full summary existed (0 without benign test examples).
    summary['global_model_benign_pooled_accuracy'] = float(
        global_metrics['num_correct'][benign].sum()
        / max(global_metrics['num_examples'][benign].sum(), 1.0)
    )
    return summary
