"""Algorithm 1's client side: one client's round of Ditto (Li et al., 2021).

On a sampled client k, Ditto runs, on each of at most `local_steps`
mini-batches b, first the personal step

    v_k <- v_k - lr * (grad F_k(v_k; b) + lambda * (v_k - w_t)),

then the global solver's own local step on the client's copy w_k of `w`
(FedAvg; FedProx with mu > 0), as the reference code does it. The client
returns `w_t - w_k` (TFF's sign convention) and writes `v_k` to its state file
(`tff_ditto.client_states`); `v_k` never leaves the client.

The round is split in the spirit of fedjax's client_init / client_step /
client_final: `client_init` (w_k <- w_t, v_k read, fresh optimizer states);
per batch a personal step (`fixed_lambda_personal_step`, one personal model
per lambda, or `lambda_selecting_personal_step`, one personal model whose
every step takes the candidate lambda with the lowest validation loss), then
`global_step`; `client_final` (v_k written, the delta w_t - w_k).
A client whose state handle has an empty write path trains only w_k: it
neither reads, steps nor writes a personal model (`trains_personal_models`;
the driver sends it to malicious clients whose personal models nothing
reports, `ExperimentConfig.malicious_personal_training`). Its update is the
same bits either way: the global steps never read the personal models.
`build_ditto_client_update` composes them into the `tf.function` that
`tff_ditto.ditto.build_ditto_process` wraps in TFF's templates
(`tff_ditto.process_templates`), as `tff.learning`'s
`templates/model_delta_client_work.py` holds the client step of
`algorithms/fed_avg.py`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any, NamedTuple, Optional, Union

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import lambda_policy
from tff_ditto import optimization
from tff_ditto import process_templates
from tff_ditto.models import zero_initialization

# Client metric of per-step lambda selection: per candidate, the personal
# steps that kept it, then the steps taken with the fallback lambda.
LAMBDA_CHOICES_KEY = 'lambda_choice_counts'

# `client_weighting` value that sends each client's round-start training loss
# (mean loss of w_t over the client's whole training set,
# `client_data_schema.FULL_TRAIN_KEY`, as the reference FedAvg's `k_loss`) as
# its "weight", for loss-based rules such as
# `tff_ditto.aggregators.KLossFactory`.
LOSS_WEIGHTING = 'loss'
# `client_weighting` value that sends the size of the client's training set
# n_k as its weight (FedAvg's example weighting). The client data then carry
# it (`client_data_schema.NUM_TRAIN_EXAMPLES_KEY`): the examples a round
# processes (TFF's NUM_EXAMPLES) are local_steps * min(n_k, batch_size), the
# same for every client with at least one full batch.
NUM_TRAIN_EXAMPLES_WEIGHTING = 'num_train_examples'

ClientWeighting = Union[tff.learning.ClientWeighting, str]
# A client's state between its steps (`client_init`).
LoopState = collections.OrderedDict


@dataclasses.dataclass(frozen=True)
class DittoClient:
  """A client's models and step settings (built in its client computation).

  Attributes:
    global_model: The client's copy w_k of the global model.
    global_weights: Its `ModelWeights` (the variables).
    personal_models: The personal models v_k, in state-file order (none
      without personalization).
    personal_weights: Their `ModelWeights`.
    client_optimizer: The global solver's local optimizer.
    personal_optimizer: The personal steps' optimizer.
    lambdas: One lambda per personal model, or the per-step candidates.
    global_proximal_strength: FedProx mu of the global steps (0 = FedAvg).
  """

  global_model: tff.learning.models.VariableModel
  global_weights: tff.learning.models.ModelWeights
  personal_models: tuple[tff.learning.models.VariableModel, ...]
  personal_weights: tuple[tff.learning.models.ModelWeights, ...]
  client_optimizer: tff.learning.optimizers.Optimizer
  personal_optimizer: tff.learning.optimizers.Optimizer
  lambdas: tuple[float, ...]
  global_proximal_strength: float


class PerStepSelection(NamedTuple):
  """What `lambda_selecting_personal_step` chooses by, for one round.

  Attributes:
    validation: The client's whole validation split, stacked
      (`batch_loops.stack_batches`).
    use_validation: Scalar bool tensor: the client has enough validation
      examples to choose.
    fallback_index: Index into the lambdas of the step taken otherwise.
  """

  validation: batch_loops.StackedBatches
  use_validation: tf.Tensor
  fallback_index: int


def trains_personal_models(handle: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """Whether the client trains its personal models: its write path is set.

  Args:
    handle: The client's state handle (`client_data_schema.state_handle`).

  Returns:
    Scalar bool tensor.
  """
  return tf.strings.length(handle['write_path']) > 0


def _done_when(
    condition: tf.Tensor,
    operations: Callable[[], Sequence[Union[tf.Operation, tf.Tensor]]],
) -> tf.Tensor:
  """Runs `operations` if `condition` holds.

  Args:
    condition: Scalar bool tensor.
    operations: Builds the operations to run (reads or writes of a state
      file).

  Returns:
    A scalar bool tensor to depend on: True once they ran, False if skipped.
  """

  def run():
    with tf.control_dependencies(operations()):
      return tf.constant(True)

  return tf.cond(condition, run, lambda: tf.constant(False))


def client_init(
    client: DittoClient,
    initial_weights: tff.learning.models.ModelWeights,
    read_path: Optional[tf.Tensor],
    num_lambda_choices: int = 0,
    trains_personal: Optional[tf.Tensor] = None,
) -> LoopState:
  """Starts a client's round: w_k <- w_t, v_k read, fresh optimizer states.

  Args:
    client: The client's models and settings.
    initial_weights: The broadcast global model w_t.
    read_path: Scalar string tensor, the client's state file (None without
      personal models).
    num_lambda_choices: With per-step lambda selection, the number of
      candidates + 1 (the choice counts); 0 otherwise.
    trains_personal: Scalar bool tensor (`trains_personal_models`): read
      v_k only if set (None without personal models).

  Returns:
    The loop state: the optimizer states, zero loss sums and counts.
  """
  tf.nest.map_structure(
      lambda v, t: v.assign(t), client.global_weights, initial_weights
  )
  personal_optimizer_states = ()
  if client.personal_weights:
    read = _done_when(
        trains_personal,
        lambda: client_states.read_personal_weights(
            read_path, client.personal_weights
        ),
    )
    with tf.control_dependencies([read]):
      personal_optimizer_states = tuple(
          optimization.initialize_optimizer(client.personal_optimizer, weights)
          for weights in client.personal_weights
      )
  global_optimizer_state = optimization.initialize_optimizer(
      client.client_optimizer, client.global_weights
  )
  zero = tf.constant(0.0, tf.float32)
  loop_state = collections.OrderedDict(
      global_optimizer_state=global_optimizer_state,
      global_loss_sum=zero,
      personal_optimizer_states=personal_optimizer_states,
      personal_loss_sum=zero,
      num_batches=zero,
      personal_batches=zero,
      num_examples=zero,
  )
  if num_lambda_choices:
    loop_state[LAMBDA_CHOICES_KEY] = tf.zeros([num_lambda_choices])
  return loop_state


def fixed_lambda_personal_step(
    client: DittoClient,
    loop_state: LoopState,
    batch: Any,
    center: tuple[tf.Tensor, ...],
) -> LoopState:
  """The step of every personal model v at its own lambda, towards w_t.

  v <- v - lr (grad F(v; b) + lambda (v - w_t)) for SGD; in general
  `optimization.proximal_step`.

  Args:
    client: The client's models (one personal model per lambda).
    loop_state: From `client_init` or the previous step.
    batch: One training batch.
    center: Flat tuple of tensors, w_t.

  Returns:
    The new loop state; the personal loss sum grows by the personal models'
    mean batch loss before their steps.
  """
  new_state = collections.OrderedDict(loop_state)
  new_optimizer_states = []
  for model, weights, optimizer_state, strength in zip(
      client.personal_models,
      client.personal_weights,
      loop_state['personal_optimizer_states'],
      client.lambdas,
  ):
    optimizer_state, personal_loss, _ = optimization.proximal_step(
        model,
        weights,
        client.personal_optimizer,
        optimizer_state,
        batch,
        center,
        strength,
    )
    new_optimizer_states.append(optimizer_state)
    # Reported: the mean over the personal models.
    new_state['personal_loss_sum'] += personal_loss / len(client.lambdas)
  new_state['personal_optimizer_states'] = tuple(new_optimizer_states)
  new_state['personal_batches'] += 1.0
  return new_state


def lambda_selecting_personal_step(
    client: DittoClient,
    loop_state: LoopState,
    batch: Any,
    center: tuple[tf.Tensor, ...],
    selection: PerStepSelection,
) -> LoopState:
  """The step of the one personal model, its lambda chosen at this step.

  `optimization.lambda_selecting_step` among `client.lambdas`.

  Args:
    client: The client's models (one personal model).
    loop_state: From `client_init` or the previous step.
    batch: One training batch.
    center: Flat tuple of tensors, w_t.
    selection: What the choice is made by.

  Returns:
    The new loop state; the choice is counted in `LAMBDA_CHOICES_KEY`.
  """
  new_state = collections.OrderedDict(loop_state)
  optimizer_state, personal_loss, _, choice = (
      optimization.lambda_selecting_step(
          client.personal_models[0],
          client.personal_weights[0],
          client.personal_optimizer,
          loop_state['personal_optimizer_states'][0],
          batch,
          center,
          client.lambdas,
          selection.validation,
          selection.use_validation,
          selection.fallback_index,
      )
  )
  new_state['personal_optimizer_states'] = (optimizer_state,)
  new_state['personal_loss_sum'] += personal_loss
  new_state['personal_batches'] += 1.0
  new_state[LAMBDA_CHOICES_KEY] += tf.one_hot(choice, len(client.lambdas) + 1)
  return new_state


def global_step(
    client: DittoClient,
    loop_state: LoopState,
    batch: Any,
    center: tuple[tf.Tensor, ...],
) -> LoopState:
  """The global solver's local step on w_k (FedAvg; FedProx with mu > 0).

  Args:
    client: The client's models and settings.
    loop_state: After the batch's personal step.
    batch: The personal step's batch.
    center: Flat tuple of tensors, w_t.

  Returns:
    The new loop state, the batch counted.
  """
  new_state = collections.OrderedDict(loop_state)
  new_state['global_optimizer_state'], global_loss, num_examples = (
      optimization.proximal_step(
          client.global_model,
          client.global_weights,
          client.client_optimizer,
          loop_state['global_optimizer_state'],
          batch,
          center,
          client.global_proximal_strength,
      )
  )
  new_state['global_loss_sum'] += global_loss
  new_state['num_batches'] += 1.0
  new_state['num_examples'] += tf.cast(num_examples, tf.float32)
  return new_state


def client_final(
    client: DittoClient,
    initial_weights: tff.learning.models.ModelWeights,
    write_path: Optional[tf.Tensor],
    loop_state: LoopState,
    trains_personal: Optional[tf.Tensor] = None,
) -> tuple[list[tf.Tensor], collections.OrderedDict]:
  """Ends a client's round: writes v_k; the delta and the statistics.

  Args:
    client: The client's models after its steps.
    initial_weights: The broadcast global model w_t.
    write_path: Scalar string tensor, this round's state file (None without
      personal models).
    loop_state: After the last step.
    trains_personal: Scalar bool tensor: write v_k only if set (None
      without personal models).

  Returns:
    (w_t - w_k, `process_templates.loss_statistics` and, with per-step
    lambda selection, `LAMBDA_CHOICES_KEY`).
  """
  written = []
  if client.personal_weights:
    written.append(
        _done_when(
            trains_personal,
            lambda: [
                client_states.write_state(
                    write_path,
                    client_states.state_variables(client.personal_weights),
                )
            ],
        )
    )
  update = process_templates.model_delta(
      initial_weights, client.global_weights.trainable, after=written
  )
  statistics = process_templates.loss_statistics(
      global_loss_sum=loop_state['global_loss_sum'],
      personal_loss_sum=loop_state['personal_loss_sum'],
      num_batches=loop_state['num_batches'],
      personal_batches=loop_state['personal_batches'],
      num_examples=loop_state['num_examples'],
  )
  if LAMBDA_CHOICES_KEY in loop_state:
    statistics[LAMBDA_CHOICES_KEY] = loop_state[LAMBDA_CHOICES_KEY]
  return update, statistics


def build_ditto_client_update(
    model_fn: client_data_schema.ModelFn,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    personal_optimizer: tff.learning.optimizers.Optimizer,
    personal_lambda: Union[float, Sequence[float]],
    local_steps: int,
    global_proximal_strength: float,
    client_weighting: ClientWeighting,
    personalize: bool,
    select_lambda_per_step: bool = False,
    fallback_lambda: Optional[float] = None,
    min_validation_examples: int = (
        lambda_policy.MIN_VALIDATION_EXAMPLES_FOR_SELECTION
    ),
) -> process_templates.ClientUpdate:
  """The `tf.function` one client runs in a Ditto round.

  `client_init`; per batch (at most `local_steps`) the personal step, then
  `global_step`; `client_final`. Several lambdas train one personal model
  each (`fixed_lambda_personal_step`), stored one after the other. With
  `select_lambda_per_step`, one personal model takes every step at the
  lambda chosen on the client's validation batches
  (`lambda_selecting_personal_step`); a client with fewer than
  `min_validation_examples` validation examples steps with
  `fallback_lambda`. Must be called inside a `tff.tensorflow.computation`
  (it builds the models).

  Args:
    model_fn: The model builder.
    client_optimizer: The global solver's local optimizer.
    personal_optimizer: The personal steps' optimizer.
    personal_lambda: The lambda(s) (`lambda_policy.personal_lambdas`).
    local_steps: Batches per client and round, at most.
    global_proximal_strength: FedProx mu of the global steps.
    client_weighting: How the update is weighted
      (`tff_ditto.ditto.build_ditto_process`).
    personalize: Train personal models (else only w_k).
    select_lambda_per_step: Choose the lambda at every personal step.
    fallback_lambda: The lambda of clients with too little validation data.
    min_validation_examples: Validation examples needed to choose.

  Returns:
    `fn(initial_weights, client_data) -> (update, weight, statistics)`
    (`process_templates.build_client_work`).
  """
  lambdas = lambda_policy.personal_lambdas(personal_lambda)
  fallback_index = None
  if select_lambda_per_step:
    fallback_index = lambda_policy.per_step_fallback_index(
        lambdas, fallback_lambda, personalize, min_validation_examples
    )
  num_personal_models = 1 if select_lambda_per_step else len(lambdas)
  # client_init assigns every variable (w_t, the state file) before use.
  with zero_initialization.zero_initialized_variables():
    global_model = model_fn()
    personal_models = tuple(
        model_fn() for _ in range(num_personal_models if personalize else 0)
    )
  client = DittoClient(
      global_model=global_model,
      global_weights=tff.learning.models.ModelWeights.from_model(global_model),
      personal_models=personal_models,
      personal_weights=tuple(
          tff.learning.models.ModelWeights.from_model(model)
          for model in personal_models
      ),
      client_optimizer=client_optimizer,
      personal_optimizer=personal_optimizer,
      lambdas=lambdas,
      global_proximal_strength=global_proximal_strength,
  )

  @tf.function
  def client_update(initial_weights, client_data):
    center = tuple(tf.nest.flatten(initial_weights.trainable))
    handle = client_data_schema.state_handle(client_data) if personalize else {}
    trains_personal = trains_personal_models(handle) if personalize else None
    loop_state = client_init(
        client,
        initial_weights,
        handle.get('read_path'),
        len(lambdas) + 1 if select_lambda_per_step else 0,
        trains_personal,
    )
    if client_weighting == LOSS_WEIGHTING:
      # The round-start loss of w_t on the whole training set.
      start_loss = optimization.mean_loss(
          client.global_model, client_data[client_data_schema.FULL_TRAIN_KEY]
      )
    if select_lambda_per_step:
      # Read once; every personal step evaluates its candidates on it.
      validation = batch_loops.stack_batches(
          client_data[client_data_schema.VALIDATION_KEY]
      )
      selection = PerStepSelection(
          validation,
          tf.reduce_sum(validation.sizes) >= min_validation_examples,
          fallback_index,
      )

    def personal_step(loop_state, batch):
      if select_lambda_per_step:
        return lambda_selecting_personal_step(
            client, loop_state, batch, center, selection
        )
      return fixed_lambda_personal_step(client, loop_state, batch, center)

    def train_on_batch(loop_state, batch):
      # Personal step(s) first, at v_k, with the proximal pull towards w_t.
      if personalize:
        loop_state = tf.cond(
            trains_personal,
            lambda: personal_step(loop_state, batch),
            lambda: loop_state,
        )
      # Then the global solver's step on the client's copy of w, same batch.
      return global_step(client, loop_state, batch, center)

    loop_state = batch_loops.reduce_batches(
        client_data[client_data_schema.BATCHES_KEY],
        loop_state,
        train_on_batch,
        max_batches=local_steps,
    )
    if client_weighting == tff.learning.ClientWeighting.NUM_EXAMPLES:
      weight = loop_state['num_examples']
    elif client_weighting == NUM_TRAIN_EXAMPLES_WEIGHTING:
      weight = tf.cast(
          client_data_schema.num_train_examples(client_data), tf.float32
      )
    elif client_weighting == LOSS_WEIGHTING:
      weight = start_loss
    else:
      weight = tf.constant(1.0, tf.float32)
    update, statistics = client_final(
        client,
        initial_weights,
        handle.get('write_path'),
        loop_state,
        trains_personal,
    )
    return update, weight, statistics

  return client_update
