"""Ditto (Li et al., ICML 2021) as a TFF learning process.

Ditto trains a global model `w` with a federated solver (FedAvg by default) and,
on every sampled client k, a personalized model `v_k`. `build_ditto_process`
composes the process from TFF's templates (`tff_ditto.process_templates`), as
`tff.learning.algorithms.build_weighted_fed_avg` does: a broadcast of `w`, the
Ditto client work, an aggregator of the deltas and a server optimizer. The
client's round, Algorithm 1's personal and global steps on the same
mini-batches, is `tff_ditto.ditto_client`. Clients send `w_t - w_k` (TFF's
sign convention); `v_k` never leaves the client.

Where the personalized models live. `v_k` is client state that persists across
rounds, in versioned per-client files (`tff_ditto.client_states`) that the
client computation itself reads and writes: the client data of round t carry,
per client, a handle `(read_path, write_path)`
(`tff_ditto.client_data_schema`); the client reads the version it wrote last
and writes version t. Only the model
delta and metrics are returned to the server, so the server never receives
`v_k` (the type signature shows it). Paths are resolved where the client
computation runs, i.e. on the TFF worker's file system. Passing `v_k` through
the federated computation instead was measured 3x slower, at twice the worker
memory, and cannot be a `LearningProcess` (docs/design.md, "Where `v_k`
lives, and why").

Lambda. One lambda trains one `v_k`. Several lambdas either train one personal
model per lambda (the candidates of the paper's per-device selection, chosen
at evaluation) or, with `select_lambda_per_step`, one `v_k` whose every step
is the candidate step with the lowest loss on the client's validation split
(the reference code's `--dynamic_lam=1`; the validation data are then part of
the client data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import tensorflow_federated as tff

from tff_ditto import client_data_schema
from tff_ditto import ditto_client
from tff_ditto import lambda_policy
from tff_ditto import process_templates

# Train measurement of per-step lambda selection: the client metric
# `ditto_client.LAMBDA_CHOICES_KEY` over all personal steps of the round.
LAMBDA_STEP_SHARES_KEY = 'lambda_step_shares'


def build_ditto_process(
    model_fn: client_data_schema.ModelFn,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    personal_lambda: Union[float, Sequence[float]],
    local_steps: int,
    model_aggregator: Optional[process_templates.AggregationFactory] = None,
    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    personal_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    global_proximal_strength: float = 0.0,
    client_weighting: ditto_client.ClientWeighting = (
        tff.learning.ClientWeighting.UNIFORM
    ),
    personalize: bool = True,
    simulate_attacks: bool = False,
    select_lambda_per_step: bool = False,
    fallback_lambda: Optional[float] = None,
    min_validation_examples: int = (
        lambda_policy.MIN_VALIDATION_EXAMPLES_FOR_SELECTION
    ),
) -> tff.learning.templates.LearningProcess:
  """Builds Ditto as a `tff.learning.templates.LearningProcess`.

  The process is composed from TFF's own parts: a broadcast distributor of
  `w`, the Ditto client work, `model_aggregator` for the model deltas, and an
  apply-optimizer finalizer with `server_optimizer`.

  `next(state, client_data)` takes, per client, `OrderedDict(batches=dataset of
  batches, personal_state=dataset of one ClientStateHandle)` (see
  `tff_ditto.client_data_schema.client_data_type`;
  `tff_ditto.training.ExperimentRunner` builds these from a
  `FileClientStateStore`) and returns `LearningProcessOutput(state, metrics)`;
  the personalized models are written by the clients to the handles' write
  paths. `get_model_weights(state)` returns the global model.

  The global solver is swappable through arguments: FedAvg (defaults), FedProx
  (`global_proximal_strength` = mu > 0), server optimizers such as
  `tff.learning.optimizers.build_adam`, robust `model_aggregator`s.

  Args:
    model_fn: No-arg callable returning a new
      `tff.learning.models.VariableModel` (e.g. from
      `tff.learning.models.from_keras_model`); its `forward_pass` loss is F_k.
    client_optimizer: Optimizer of the global solver's local steps on w_k
      (reference: SGD with the client learning rate).
    personal_lambda: lambda >= 0 of the proximal term lambda/2 ||v - w_t||^2;
      0 gives purely local training of v_k. A sequence of lambdas trains one
      personal model per value on every client (the candidates of the
      paper's per-device lambda selection, see
      `tff_ditto.lambda_policy.lambda_candidates`); the state file then
      holds them one after the other, in this order. With
      `select_lambda_per_step` they are the candidates of every step of a
      single personal model instead.
    local_steps: Mini-batch steps per client per round (the reference's
      `local_iters`); each client's dataset is truncated to this many batches.
    model_aggregator: A `tff.aggregators` factory for the deltas (weighted or
      unweighted); default `tff.aggregators.MeanFactory()`.
    server_optimizer: Applied to the aggregated delta; default SGD with
      learning rate 1.0 (w <- w + mean delta, the reference FedAvg).
    personal_optimizer: Optimizer of the personal steps; defaults to
      `client_optimizer`.
    global_proximal_strength: FedProx mu of the global solver's local steps.
    client_weighting: Weight of each client's delta for weighted aggregators:
      UNIFORM (the reference's unweighted average); NUM_EXAMPLES (the
      examples processed this round);
      `ditto_client.NUM_TRAIN_EXAMPLES_WEIGHTING`, the size of the client's
      training set, which the client data then carry
      (`tff_ditto.client_data_schema`; `--weighted_aggregation`); or
      `ditto_client.LOSS_WEIGHTING` to send the client's round-start training
      loss (for `tff_ditto.aggregators.KLossFactory`): the mean loss of w_t
      over the client's whole training set, which the client data then hold
      as `full_train`. Unweighted aggregators ignore it.
    personalize: False trains only the global model (FedAvg/FedProx), with
      plain batches as client data; used for the `global` and `finetune`
      baselines so that they share this exact code path.
    simulate_attacks: Add a per-client `attack` instruction to the client data
      (see `tff_ditto.client_data_schema` and `tff_ditto.attacks`):
      malicious clients of the simulation transform their update inside this
      same client
      computation (A2 random, A3 model replacement, bit flip) or mark it for
      an omniscient server-side attack hook.
    select_lambda_per_step: Train one personal model and, at every personal
      step, keep the step of the lambda among `personal_lambda` whose
      tentative model has the lowest loss on the client's whole validation
      split (`ditto_client.lambda_selecting_personal_step`; the reference code's
      `--dynamic_lam=1`). The client data then also hold `validation`
      batches (`tff_ditto.client_data_schema`), and the train metrics
      `LAMBDA_STEP_SHARES_KEY`.
    fallback_lambda: With `select_lambda_per_step`: the lambda (one of the
      candidates) of clients with fewer than `min_validation_examples`
      validation examples; may be None with a single candidate.
    min_validation_examples: See `fallback_lambda`.

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    ValueError: On a negative lambda or mu, non-positive local_steps, or an
      invalid per-step selection (`lambda_policy.per_step_fallback_index`).
  """
  lambdas = lambda_policy.personal_lambdas(personal_lambda)
  if select_lambda_per_step:
    lambda_policy.per_step_fallback_index(
        lambdas, fallback_lambda, personalize, min_validation_examples
    )
  if global_proximal_strength < 0:
    raise ValueError(
        'global_proximal_strength must be >= 0, got'
        f' {global_proximal_strength}.'
    )
  if local_steps < 1:
    raise ValueError(f'local_steps must be >= 1, got {local_steps}.')
  if personal_optimizer is None:
    personal_optimizer = client_optimizer

  loss_weighting = client_weighting == ditto_client.LOSS_WEIGHTING
  data_type = client_data_schema.client_data_type(
      model_fn,
      personalize,
      simulate_attacks,
      select_lambda_per_step,
      loss_weighting,
      client_weighting == ditto_client.NUM_TRAIN_EXAMPLES_WEIGHTING,
  )

  def make_client_update():
    return ditto_client.build_ditto_client_update(
        model_fn,
        client_optimizer=client_optimizer,
        personal_optimizer=personal_optimizer,
        personal_lambda=lambdas,
        local_steps=int(local_steps),
        global_proximal_strength=float(global_proximal_strength),
        client_weighting=client_weighting,
        personalize=personalize,
        select_lambda_per_step=select_lambda_per_step,
        fallback_lambda=fallback_lambda,
        min_validation_examples=min_validation_examples,
    )

  client_work = process_templates.build_client_work(
      model_fn,
      data_type,
      make_client_update,
      simulate_attacks,
      # A zeroed update must not count: weight 0 for averaging rules; for
      # loss-based rules NaN, which they drop (a loss of 0 would rank first).
      rejected_weight=float('nan') if loss_weighting else 0.0,
      shares_of_batches=(
          {ditto_client.LAMBDA_CHOICES_KEY: LAMBDA_STEP_SHARES_KEY}
          if select_lambda_per_step
          else None
      ),
  )
  return process_templates.compose_process(
      model_fn, client_work, model_aggregator, server_optimizer
  )
