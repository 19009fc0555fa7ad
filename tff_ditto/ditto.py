"""Ditto (Li et al., ICML 2021) as a TFF learning process.

Ditto trains a global model `w` with a federated solver (FedAvg by default) and,
on every sampled client k, a personalized model `v_k` by `local_steps` steps of

    v_k <- v_k - lr * (grad F_k(v_k; b) + lambda * (v_k - w_t)),

interleaved, on the same mini-batch b, with the solver's own local step on the
client's copy of `w` (Algorithm 1, as the reference code does it). Clients send
`w_t - w_k` (TFF's sign convention); `v_k` never leaves the client.

Where the personalized models live. `v_k` is client state that persists across
rounds. Two designs were measured on this project's 2-core machines
(../shared/reference/tff_0.87_probes.md sections 1, 3, 5), for a 26 MB model:
passing each `v_k` into and out of the federated computation as a CLIENTS-placed
tensor costs about 0.6 s per client per round in serialization and gRPC (more
than the client's training), needs ~0.33 GB of worker memory per client, makes
TFF's mergeable multi-worker context run the client work twice, and cannot be
expressed as a `tff.learning.templates.LearningProcess` at all (its `next` may
only output SERVER-placed values). Keeping `v_k` in per-client files that the
client computation itself reads and writes, with only the file paths crossing
TFF, ran 3x faster, half the memory, once per client under the mergeable
context, and composes as a real `LearningProcess`. So this module keeps `v_k`
in versioned files (`tff_ditto.client_states.FileClientStateStore`): the client
data of round t carries, per client, a handle `(read_path, write_path)`; the
client computation reads the version it wrote last and writes version t. Only
the model delta and metrics are returned to the server, so the server never
receives `v_k` (the type signature shows it). Paths are resolved where the
client computation runs, i.e. on the TFF worker's file system.

Lambda. One lambda trains one `v_k`. Several lambdas either train one personal
model per lambda (the candidates of the paper's per-device selection, chosen
at evaluation) or, with `select_lambda_per_step`, one `v_k` whose every step
is the candidate step with the lowest loss on the client's validation split
(the reference code's `--dynamic_lam=1`; the validation data are then part of
the client data).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import computation_cache
from tff_ditto import lambda_policy
from tff_ditto import optimization

BATCHES_KEY = 'batches'
STATE_KEY = 'personal_state'
ATTACK_KEY = 'attack'
VALIDATION_KEY = 'validation'
# The client's whole training set, unshuffled (round-start losses).
FULL_TRAIN_KEY = 'full_train'
# Client metric of per-step lambda selection: per candidate, the personal
# steps that kept it, then the steps taken with the fallback lambda.
LAMBDA_CHOICES_KEY = 'lambda_choice_counts'
# Its train measurement: those counts over all personal steps of the round.
LAMBDA_STEP_SHARES_KEY = 'lambda_step_shares'

# `client_weighting` value that sends each client's round-start training loss
# (mean loss of w_t over the client's whole training set, `FULL_TRAIN_KEY`,
# as the reference FedAvg's `k_loss`) as its "weight", for loss-based rules
# such as `tff_ditto.aggregators.KLossFactory`.
LOSS_WEIGHTING = 'loss'
# `client_weighting` value that sends the size of the client's training set
# n_k as its weight (FedAvg's example weighting). The client data then carry
# it under `NUM_TRAIN_EXAMPLES_KEY` (`client_data_type`): the client sees
# only the round's batches, so it cannot count its data, and the examples a
# round processes (TFF's NUM_EXAMPLES) are local_steps * min(n_k,
# batch_size), the same for every client with at least one full batch.
NUM_TRAIN_EXAMPLES_WEIGHTING = 'num_train_examples'
NUM_TRAIN_EXAMPLES_KEY = 'num_train_examples'
NUM_TRAIN_EXAMPLES_TYPE = tff.TensorType(np.float32)

ModelFn = Callable[[], tff.learning.models.VariableModel]
AggregationFactory = Union[
    tff.aggregators.WeightedAggregationFactory,
    tff.aggregators.UnweightedAggregationFactory,
]


# Types derived from a model_fn, per model_fn: building a Keras model costs
# 0.2-0.5 s and a process build asked for these types up to ten times.
_MODEL_TYPES = computation_cache.PerObjectMemo()


def _build_model_types(model_fn: ModelFn) -> tuple[tff.StructType, tff.Type]:
  """(weights type, batch element type) of `model_fn`'s model."""
  with tf.Graph().as_default():
    model = model_fn()
    return (tff.learning.models.weights_type_from_model(model),
            tff.types.tensorflow_to_type(model.input_spec))


def _model_types(model_fn: ModelFn) -> tuple[tff.StructType, tff.Type]:
  return _MODEL_TYPES.get_or_build(model_fn, (),
                                   lambda: _build_model_types(model_fn))


def model_weights_type(model_fn: ModelFn) -> tff.StructType:
  return _model_types(model_fn)[0]


def batch_element_type(model_fn: ModelFn) -> tff.Type:
  return _model_types(model_fn)[1]


STATE_HANDLE_TYPE = tff.types.tensorflow_to_type(
    collections.OrderedDict(
        read_path=tf.TensorSpec([], tf.string),
        write_path=tf.TensorSpec([], tf.string),
    )
)


ATTACK_TYPE = tff.types.tensorflow_to_type(
    collections.OrderedDict(
        code=tf.TensorSpec([], tf.int32),
        scale=tf.TensorSpec([], tf.float32),
        seed=tf.TensorSpec([2], tf.int64),
    )
)


def client_data_type(
    model_fn: ModelFn,
    personalize: bool = True,
    simulate_attacks: bool = False,
    validation: bool = False,
    full_train: bool = False,
    num_train_examples: bool = False,
) -> tff.Type:
  """The per-client data type of a round.

  Args:
    model_fn: The model builder (gives the batch element type).
    personalize: Include the personal-state handle.
    simulate_attacks: Include the per-client attack instruction.
    validation: Include the client's validation batches (per-step lambda
      selection).
    full_train: Include the client's whole training set (round-start loss
      of `LOSS_WEIGHTING`).
    num_train_examples: Include the size of the client's training set
      (`NUM_TRAIN_EXAMPLES_WEIGHTING`).

  Returns:
    A sequence of batches when none is set; otherwise a struct with keys
    `batches`, `personal_state` (sequence of one handle), `attack`
    (sequence of one `OrderedDict(code, scale, seed)`, see
    `tff_ditto.attacks.UPDATE_ATTACK_CODES`), `validation` (batches of
    the client's whole validation split), `full_train` (batches of its
    whole training set) and `num_train_examples` (sequence of one float32),
    those set, in this order.
  """
  batches_type = tff.SequenceType(batch_element_type(model_fn))
  if not (personalize or simulate_attacks or validation or full_train
          or num_train_examples):
    return batches_type
  fields = [(BATCHES_KEY, batches_type)]
  if personalize:
    fields.append((STATE_KEY, tff.SequenceType(STATE_HANDLE_TYPE)))
  if simulate_attacks:
    fields.append((ATTACK_KEY, tff.SequenceType(ATTACK_TYPE)))
  if validation:
    fields.append((VALIDATION_KEY, batches_type))
  if full_train:
    fields.append((FULL_TRAIN_KEY, batches_type))
  if num_train_examples:
    fields.append(
        (NUM_TRAIN_EXAMPLES_KEY, tff.SequenceType(NUM_TRAIN_EXAMPLES_TYPE))
    )
  return tff.StructType(fields)


def apply_update_attack(update, weight, attack):
  """A malicious client's transformation of its honest update.

  Codes (tff_ditto.attacks.UPDATE_ATTACK_CODES): 0 honest; 1 A2 random
  update N(0, sigma^2) with sigma the std of its own update's entries; 2 A3
  model replacement (update * scale); 3 bit flip (-update); 4 honest update
  marked for the omniscient server-side hook by a negative weight.
  """
  flat = tf.nest.flatten(update)
  code = attack['code']
  all_entries = tf.concat([tf.reshape(t, [-1]) for t in flat], axis=0)
  sigma = tf.math.reduce_std(all_entries)
  noise = [
      sigma
      * tf.random.stateless_normal(
          tf.shape(t),
          seed=tf.random.experimental.stateless_fold_in(attack['seed'], i),
      )
      for i, t in enumerate(flat)
  ]
  attacked = [
      tf.switch_case(
          code,
          branch_fns=[
              lambda t=t: t,
              lambda n=n: n,
              lambda t=t: t * attack['scale'],
              lambda t=t: -t,
              lambda t=t: t,
          ],
      )
      for t, n in zip(flat, noise)
  ]
  weight = tf.where(tf.equal(code, 4), -weight, weight)
  return tf.nest.pack_sequence_as(update, attacked), weight


def _state_variables(personal_weights_list):
  return [
      v
      for weights in personal_weights_list
      for v in weights.trainable + weights.non_trainable
  ]


def read_personal_weights(path, personal_weights_list):
  """Loads a flat state file into the variables of the personal models.

  The file holds the models one after the other, each as its trainable then
  non-trainable weights, flattened (`tff_ditto.client_states`). A file of the
  wrong size fails with an InvalidArgumentError naming the expected shape.
  """
  variables = _state_variables(personal_weights_list)
  flat = tf.io.parse_tensor(tf.io.read_file(path), tf.float32)
  sizes = [int(np.prod(v.shape)) for v in variables]
  flat = tf.ensure_shape(flat, [sum(sizes)])
  pieces = tf.split(flat, sizes)
  return [
      v.assign(tf.reshape(p, v.shape)) for v, p in zip(variables, pieces)
  ]


def _serialize_personal_weights(personal_weights_list):
  variables = _state_variables(personal_weights_list)
  flat = tf.concat([tf.reshape(v, [-1]) for v in variables], axis=0)
  return tf.io.serialize_tensor(flat)


def personal_lambdas(personal_lambda: Union[float, Sequence[float]]) -> tuple[float, ...]:
  """The lambda of each personal model: one value, or a tuple of candidates.

  Raises:
    ValueError: On an empty sequence or a negative lambda.
  """
  if isinstance(personal_lambda, (int, float, np.floating, np.integer)):
    lambdas = (float(personal_lambda),)
  else:
    lambdas = tuple(float(value) for value in personal_lambda)
  if not lambdas:
    raise ValueError('personal_lambda must not be an empty sequence.')
  if any(value < 0 for value in lambdas):
    raise ValueError(f'personal_lambda must be >= 0, got {personal_lambda}.')
  return lambdas


def _num_examples(batches: batch_loops.StackedBatches) -> tf.Tensor:
  """Examples in stacked batches (the sum of their sizes)."""
  return tf.reduce_sum(batches.sizes)


def _first_argmin(values: Sequence[tf.Tensor]) -> tf.Tensor:
  """Index of the smallest scalar: the first on ties, never a NaN or Inf."""
  finite = [
      tf.where(tf.math.is_finite(v), v, tf.constant(np.inf, v.dtype))
      for v in values
  ]
  best_index, best_value = tf.constant(0, tf.int32), finite[0]
  for index, value in enumerate(finite[1:], start=1):
    better = value < best_value
    best_index = tf.where(better, index, best_index)
    best_value = tf.where(better, value, best_value)
  return best_index


def _take(structures: Sequence, index: tf.Tensor):
  """`structures[index]` for a list of equal structures and a tensor index."""
  return tf.nest.map_structure(
      lambda *values: tf.gather(tf.stack(values), index), *structures
  )


def lambda_selecting_step(
    model: tff.learning.models.VariableModel,
    weights: tff.learning.models.ModelWeights,
    optimizer: tff.learning.optimizers.Optimizer,
    optimizer_state,
    batch,
    center,
    lambdas: Sequence[float],
    validation: batch_loops.StackedBatches,
    use_validation: tf.Tensor,
    fallback_index: int,
):
  """One personal step with lambda chosen among candidates by validation loss.

  The reference code's `--dynamic_lam=1`: from the current v, every candidate
  takes a tentative step on the same batch, sharing the gradient of F at v,
  v_i = v - lr (grad F(v; b) + lambda_i (v - center)) (for SGD; in general
  `optimization.proximal_update`), and the step kept is the one whose v_i has
  the lowest mean loss over `validation` (the first on ties). A client
  without enough validation data (`use_validation` false) keeps the step of
  `lambdas[fallback_index]`.

  Args:
    model: The personal model (its `forward_pass` loss is F).
    weights: `ModelWeights.from_model(model)` (variables, updated in place).
    optimizer: The personal optimizer.
    optimizer_state: Its state for `weights.trainable`.
    batch: One training batch.
    center: Flat tuple of tensors, w_t.
    lambdas: The candidate lambdas (Python floats).
    validation: The client's whole validation split, batched and stacked
      (`batch_loops.stack_batches`).
    use_validation: Scalar bool tensor: choose by validation loss.
    fallback_index: Index into `lambdas` of the step taken otherwise.

  Returns:
    (new optimizer state, batch loss F(v; b) before the step, examples in
    the batch, int32 choice: the index of the kept candidate, or
    `len(lambdas)` for a fallback step).
  """
  trainable = tuple(tf.nest.flatten(weights.trainable))
  gradients, loss, num_examples = optimization.gradient(model, trainable, batch)
  start = tuple(tf.identity(v) for v in trainable)
  tentative = [
      optimization.proximal_update(
          optimizer, optimizer_state, start, gradients, center, strength
      )
      for strength in lambdas
  ]
  validation_losses = []
  for _, values in tentative:
    with tf.control_dependencies(validation_losses[-1:]):
      assigned = [v.assign(t) for v, t in zip(trainable, values)]
    with tf.control_dependencies(assigned):
      validation_losses.append(optimization.mean_loss(model, validation))
  best = _first_argmin(validation_losses)
  kept = tf.where(use_validation, best, fallback_index)
  with tf.control_dependencies(validation_losses):
    for variable, candidates in zip(
        trainable, zip(*[values for _, values in tentative])
    ):
      variable.assign(_take(candidates, kept))
  optimizer_state = _take([state for state, _ in tentative], kept)
  choice = tf.where(use_validation, best, len(lambdas))
  return optimizer_state, loss, num_examples, choice


def per_step_fallback_index(
    lambdas: Sequence[float],
    fallback_lambda: Optional[float],
    personalize: bool,
    min_validation_examples: int,
) -> int:
  """Checks a per-step lambda selection; returns the fallback's index.

  Args:
    lambdas: The candidates (from `personal_lambdas`).
    fallback_lambda: The lambda of clients with too little validation data;
      None is allowed with a single candidate (then that one).
    personalize: Must be True (the selection trains the personal model).
    min_validation_examples: Validation examples needed to select, >= 1.

  Returns:
    The index of the fallback lambda in `lambdas`.

  Raises:
    ValueError: On personalize False, a fallback that is not a candidate or
      min_validation_examples < 1.
  """
  if not personalize:
    raise ValueError('select_lambda_per_step needs personalize=True.')
  if min_validation_examples < 1:
    raise ValueError(
        f'min_validation_examples must be >= 1, got {min_validation_examples}.'
    )
  if fallback_lambda is None and len(lambdas) == 1:
    return 0
  if fallback_lambda not in lambdas:
    raise ValueError(
        f'fallback_lambda {fallback_lambda} must be one of the candidate '
        f'lambdas {lambdas}.'
    )
  return list(lambdas).index(fallback_lambda)


def build_ditto_client_update(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    personal_optimizer: tff.learning.optimizers.Optimizer,
    personal_lambda: Union[float, Sequence[float]],
    local_steps: int,
    global_proximal_strength: float,
    client_weighting: Union[tff.learning.ClientWeighting, str],
    personalize: bool,
    simulate_attacks: bool = False,
    select_lambda_per_step: bool = False,
    fallback_lambda: Optional[float] = None,
    min_validation_examples: int = (
        lambda_policy.MIN_VALIDATION_EXAMPLES_FOR_SELECTION
    ),
):
  """Returns the `tf.function` run by one client in one Ditto round.

  With several lambdas (candidates for per-device selection), the client
  trains one personal model per lambda on the same batches, each pulled
  towards the same w_t; their state is stored one after the other. With
  `select_lambda_per_step`, it trains one personal model whose every step is
  a `lambda_selecting_step` among the lambdas on the client's validation
  batches (the `validation` argument); a client with fewer than
  `min_validation_examples` validation examples steps with `fallback_lambda`
  (see `per_step_fallback_index`).

  Must be called inside a `tff.tensorflow.computation` (it builds the models).
  """
  lambdas = personal_lambdas(personal_lambda)
  fallback_index = None
  if select_lambda_per_step:
    fallback_index = per_step_fallback_index(
        lambdas, fallback_lambda, personalize, min_validation_examples
    )
  num_personal_models = 1 if select_lambda_per_step else len(lambdas)
  global_model = model_fn()
  personal_models = (
      [model_fn() for _ in range(num_personal_models)] if personalize else []
  )

  @tf.function
  def client_update(
      initial_weights,
      batches,
      state_handle,
      attack,
      validation=None,
      full_train=None,
      num_train_examples=None,
  ):
    global_weights = tff.learning.models.ModelWeights.from_model(global_model)
    tf.nest.map_structure(
        lambda v, t: v.assign(t), global_weights, initial_weights
    )
    center = tuple(tf.nest.flatten(initial_weights.trainable))
    personal_weights = [
        tff.learning.models.ModelWeights.from_model(model)
        for model in personal_models
    ]
    personal_optimizer_states = ()
    if personalize:
      with tf.control_dependencies(
          read_personal_weights(state_handle['read_path'], personal_weights)
      ):
        personal_optimizer_states = tuple(
            optimization.initialize_optimizer(personal_optimizer, weights)
            for weights in personal_weights
        )
    global_optimizer_state = optimization.initialize_optimizer(
        client_optimizer, global_weights
    )
    if client_weighting == LOSS_WEIGHTING:
      # The round-start loss of w_t on the whole training set.
      start_loss = optimization.mean_loss(global_model, full_train)
    zero = tf.constant(0.0, tf.float32)
    initial_loop_state = collections.OrderedDict(
        global_optimizer_state=global_optimizer_state,
        global_loss_sum=zero,
        personal_optimizer_states=personal_optimizer_states,
        personal_loss_sum=zero,
        num_batches=zero,
        num_examples=zero,
    )
    if select_lambda_per_step:
      # Read once; every personal step evaluates its candidates on it.
      validation = batch_loops.stack_batches(validation)
      use_validation = _num_examples(validation) >= min_validation_examples
      initial_loop_state[LAMBDA_CHOICES_KEY] = tf.zeros([len(lambdas) + 1])

    def selecting_personal_step(new_state, batch):
      optimizer_state, personal_loss, _, choice = lambda_selecting_step(
          personal_models[0],
          personal_weights[0],
          personal_optimizer,
          new_state['personal_optimizer_states'][0],
          batch,
          center,
          lambdas,
          validation,
          use_validation,
          fallback_index,
      )
      new_state['personal_optimizer_states'] = (optimizer_state,)
      new_state['personal_loss_sum'] += personal_loss
      new_state[LAMBDA_CHOICES_KEY] += tf.one_hot(choice, len(lambdas) + 1)

    def fixed_personal_steps(new_state, batch):
      new_optimizer_states = []
      for model, weights, optimizer_state, strength in zip(
          personal_models,
          personal_weights,
          new_state['personal_optimizer_states'],
          lambdas,
      ):
        optimizer_state, personal_loss, _ = optimization.proximal_step(
            model,
            weights,
            personal_optimizer,
            optimizer_state,
            batch,
            center,
            strength,
        )
        new_optimizer_states.append(optimizer_state)
        # Reported: the mean over the personal models.
        new_state['personal_loss_sum'] += personal_loss / len(lambdas)
      new_state['personal_optimizer_states'] = tuple(new_optimizer_states)

    def train_on_batch(loop_state, batch):
      new_state = collections.OrderedDict(loop_state)
      # Personal step(s) first, at v_k, with the proximal pull towards w_t.
      if select_lambda_per_step:
        selecting_personal_step(new_state, batch)
      else:
        fixed_personal_steps(new_state, batch)
      # Then the global solver's step on the client's copy of w, same batch.
      new_state['global_optimizer_state'], global_loss, num_examples = (
          optimization.proximal_step(
              global_model,
              global_weights,
              client_optimizer,
              loop_state['global_optimizer_state'],
              batch,
              center,
              global_proximal_strength,
          )
      )
      new_state['global_loss_sum'] += global_loss
      new_state['num_batches'] += 1.0
      new_state['num_examples'] += tf.cast(num_examples, tf.float32)
      return new_state

    loop_state = batch_loops.reduce_batches(
        batches, initial_loop_state, train_on_batch, max_batches=local_steps
    )
    update = tf.nest.map_structure(
        tf.subtract, initial_weights.trainable, global_weights.trainable
    )
    if client_weighting == tff.learning.ClientWeighting.NUM_EXAMPLES:
      weight = loop_state['num_examples']
    elif client_weighting == NUM_TRAIN_EXAMPLES_WEIGHTING:
      weight = tf.cast(num_train_examples, tf.float32)
    elif client_weighting == LOSS_WEIGHTING:
      weight = start_loss
    else:
      weight = tf.constant(1.0, tf.float32)
    if simulate_attacks:
      update, weight = apply_update_attack(update, weight, attack)
    update, has_non_finite = zero_if_non_finite(update)
    # A zeroed update must not count: weight 0 for averaging rules; for
    # loss-based rules NaN, which they drop (a loss of 0 would rank first).
    rejected_weight = (
        float('nan') if client_weighting == LOSS_WEIGHTING else 0.0
    )
    weight = tf.where(has_non_finite > 0, rejected_weight, weight)
    written = []
    if personalize:
      written.append(
          tf.io.write_file(
              state_handle['write_path'],
              _serialize_personal_weights(personal_weights),
          )
      )
    with tf.control_dependencies(written):
      client_metrics = collections.OrderedDict(
          global_loss_sum=tf.identity(loop_state['global_loss_sum']),
          personal_loss_sum=loop_state['personal_loss_sum'],
          num_batches=loop_state['num_batches'],
          num_examples=loop_state['num_examples'],
          non_finite_updates=tf.cast(has_non_finite, tf.float32),
          clients=tf.constant(1.0, tf.float32),
      )
      if select_lambda_per_step:
        client_metrics[LAMBDA_CHOICES_KEY] = loop_state[LAMBDA_CHOICES_KEY]
      update = tf.nest.map_structure(tf.identity, update)
    return update, weight, client_metrics

  return client_update


def zero_if_non_finite(structure):
  """Zeroes a structure of tensors if any entry is NaN or Inf."""
  flat = tf.nest.flatten(structure)
  is_finite = tf.reduce_all(
      [tf.reduce_all(tf.math.is_finite(t)) for t in flat]
  )
  zeroed = [tf.where(is_finite, t, tf.zeros_like(t)) for t in flat]
  return (
      tf.nest.pack_sequence_as(structure, zeroed),
      tf.cast(tf.logical_not(is_finite), tf.int32),
  )


def client_work_from_computation(
    client_computation: tff.Computation,
) -> tff.learning.templates.ClientWorkProcess:
  """A stateless `ClientWorkProcess` around one client's computation.

  Args:
    client_computation: `(model weights, client data) -> (ClientResult,
      statistics)`, where statistics hold `global_loss_sum`,
      `personal_loss_sum`, `num_batches`, `num_examples`,
      `non_finite_updates` and `clients` (float32), summed over clients, and
      optionally `LAMBDA_CHOICES_KEY` (per-step lambda selection).

  Returns:
    The client work; its `train` measurements are the mean train losses per
    batch and the summed counts (the keys `ExperimentRunner` reads), and
    with lambda choices `LAMBDA_STEP_SHARES_KEY`: the share of the round's
    personal steps that kept each candidate, then the fallback share.
  """
  weights_type, data_type = client_computation.type_signature.parameter
  metrics_type = client_computation.type_signature.result[1]
  reports_lambda_choices = hasattr(metrics_type, LAMBDA_CHOICES_KEY)

  @tff.tensorflow.computation(metrics_type)
  def finalize_metrics(summed):
    num_batches = tf.maximum(summed['num_batches'], 1.0)
    finalized = collections.OrderedDict(
        global_train_loss=summed['global_loss_sum'] / num_batches,
        personal_train_loss=summed['personal_loss_sum'] / num_batches,
        num_examples=summed['num_examples'],
        num_batches=summed['num_batches'],
        num_clients=summed['clients'],
        non_finite_updates=summed['non_finite_updates'],
    )
    if reports_lambda_choices:
      finalized[LAMBDA_STEP_SHARES_KEY] = (
          summed[LAMBDA_CHOICES_KEY] / num_batches
      )
    return finalized

  @tff.federated_computation()
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(
      init_fn.type_signature.result,
      tff.FederatedType(weights_type, tff.CLIENTS),
      tff.FederatedType(data_type, tff.CLIENTS),
  )
  def next_fn(state, weights, client_data):
    client_result, client_metrics = tff.federated_map(
        client_computation, (weights, client_data)
    )
    train_metrics = tff.federated_map(
        finalize_metrics, tff.federated_sum(client_metrics)
    )
    measurements = tff.federated_zip(
        collections.OrderedDict(train=train_metrics)
    )
    return tff.templates.MeasuredProcessOutput(
        state, client_result, measurements
    )

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


def _build_client_work(
    model_fn: ModelFn,
    weights_type: tff.StructType,
    data_type: tff.Type,
    make_client_update: Callable[[], Callable],
    personalize: bool,
    simulate_attacks: bool,
    validation: bool = False,
    full_train: bool = False,
    num_train_examples: bool = False,
) -> tff.learning.templates.ClientWorkProcess:
  """Wraps the client update in a `ClientWorkProcess`."""

  @tff.tensorflow.computation(weights_type, data_type)
  def client_computation(initial_weights, client_data):
    client_update = make_client_update()
    if not (personalize or simulate_attacks or validation or full_train
            or num_train_examples):
      client_data = collections.OrderedDict([(BATCHES_KEY, client_data)])
    handle = collections.OrderedDict(
        read_path=tf.constant(''), write_path=tf.constant('')
    )
    if personalize:
      handle = batch_loops.single_element(client_data[STATE_KEY])
    attack = collections.OrderedDict(
        code=tf.constant(0), scale=tf.constant(1.0),
        seed=tf.zeros([2], tf.int64),
    )
    if simulate_attacks:
      attack = batch_loops.single_element(client_data[ATTACK_KEY])
    train_size = None
    if num_train_examples:
      train_size = batch_loops.single_element(
          client_data[NUM_TRAIN_EXAMPLES_KEY]
      )
    update, weight, client_metrics = client_update(
        initial_weights,
        client_data[BATCHES_KEY],
        handle,
        attack,
        client_data[VALIDATION_KEY] if validation else None,
        client_data[FULL_TRAIN_KEY] if full_train else None,
        train_size,
    )
    return (
        tff.learning.templates.ClientResult(
            update=update, update_weight=weight
        ),
        client_metrics,
    )

  return client_work_from_computation(client_computation)


def build_ditto_process(
    model_fn: ModelFn,
    *,
    client_optimizer: tff.learning.optimizers.Optimizer,
    personal_lambda: Union[float, Sequence[float]],
    local_steps: int,
    model_aggregator: Optional[AggregationFactory] = None,
    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    personal_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
    global_proximal_strength: float = 0.0,
    client_weighting: Union[
        tff.learning.ClientWeighting, str
    ] = tff.learning.ClientWeighting.UNIFORM,
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
  `client_data_type`; `tff_ditto.training.DittoRunner` builds these from a
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
      examples processed this round); `NUM_TRAIN_EXAMPLES_WEIGHTING`, the
      size of the client's training set, which the client data then carry
      (`client_data_type`; `--weighted_aggregation`); or `LOSS_WEIGHTING`
      to send the client's round-start training loss instead (for
      `tff_ditto.aggregators.KLossFactory`): the mean loss of w_t over the
      client's whole training set, which the client data then hold as
      `full_train`. Unweighted aggregators ignore it.
    personalize: False trains only the global model (FedAvg/FedProx), with
      plain batches as client data; used for the `global` and `finetune`
      baselines so that they share this exact code path.
    simulate_attacks: Add a per-client `attack` instruction to the client data
      (see `client_data_type` and `tff_ditto.attacks`): malicious clients of
      the simulation transform their update inside this same client
      computation (A2 random, A3 model replacement, bit flip) or mark it for
      an omniscient server-side attack hook.
    select_lambda_per_step: Train one personal model and, at every personal
      step, keep the step of the lambda among `personal_lambda` whose
      tentative model has the lowest loss on the client's whole validation
      split (`lambda_selecting_step`; the reference code's `--dynamic_lam=1`).
      The client data then also hold `validation` batches
      (`client_data_type`), and the train metrics `LAMBDA_STEP_SHARES_KEY`.
    fallback_lambda: With `select_lambda_per_step`: the lambda (one of the
      candidates) of clients with fewer than `min_validation_examples`
      validation examples; may be None with a single candidate.
    min_validation_examples: See `fallback_lambda`.

  Returns:
    A `tff.learning.templates.LearningProcess`.

  Raises:
    ValueError: On a negative lambda or mu, non-positive local_steps, or an
      invalid per-step selection (`per_step_fallback_index`).
  """
  lambdas = personal_lambdas(personal_lambda)
  if select_lambda_per_step:
    per_step_fallback_index(
        lambdas, fallback_lambda, personalize, min_validation_examples
    )
  if global_proximal_strength < 0:
    raise ValueError(
        f'global_proximal_strength must be >= 0, got {global_proximal_strength}.'
    )
  if local_steps < 1:
    raise ValueError(f'local_steps must be >= 1, got {local_steps}.')
  if personal_optimizer is None:
    personal_optimizer = client_optimizer

  weights_type = model_weights_type(model_fn)
  loss_weighting = client_weighting == LOSS_WEIGHTING
  sends_train_size = client_weighting == NUM_TRAIN_EXAMPLES_WEIGHTING
  data_type = client_data_type(
      model_fn, personalize, simulate_attacks, select_lambda_per_step,
      loss_weighting, sends_train_size,
  )

  def make_client_update():
    return build_ditto_client_update(
        model_fn,
        client_optimizer=client_optimizer,
        personal_optimizer=personal_optimizer,
        personal_lambda=lambdas,
        local_steps=int(local_steps),
        global_proximal_strength=float(global_proximal_strength),
        client_weighting=client_weighting,
        personalize=personalize,
        simulate_attacks=simulate_attacks,
        select_lambda_per_step=select_lambda_per_step,
        fallback_lambda=fallback_lambda,
        min_validation_examples=min_validation_examples,
    )

  client_work = _build_client_work(
      model_fn, weights_type, data_type, make_client_update, personalize,
      simulate_attacks, select_lambda_per_step, loss_weighting,
      sends_train_size,
  )
  return compose_process(
      model_fn, client_work, model_aggregator, server_optimizer
  )


def compose_process(
    model_fn: ModelFn,
    client_work: tff.learning.templates.ClientWorkProcess,
    model_aggregator: Optional[AggregationFactory] = None,
    server_optimizer: Optional[tff.learning.optimizers.Optimizer] = None,
) -> tff.learning.templates.LearningProcess:
  """Broadcast of w + `client_work` + aggregator + optimizer finalizer.

  Args:
    model_fn: The model builder.
    client_work: A `ClientWorkProcess` sending model deltas (TFF's sign).
    model_aggregator: A `tff.aggregators` factory (default
      `tff.aggregators.MeanFactory()`); unweighted ones ignore the weights
      (`tff.aggregators.as_weighted_aggregator`), weighted ones (such as
      `tff_ditto.aggregators.ExampleWeightedFactory`) are used as they are.
    server_optimizer: Default SGD at learning rate 1 (w <- w + mean delta).

  Returns:
    A `tff.learning.templates.LearningProcess`.
  """
  if model_aggregator is None:
    model_aggregator = tff.aggregators.MeanFactory()
  if server_optimizer is None:
    server_optimizer = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
  weights_type = model_weights_type(model_fn)

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  if isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
    model_aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator)
  aggregator = model_aggregator.create(
      weights_type.trainable, tff.TensorType(np.float32)
  )
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn,
      tff.learning.templates.build_broadcast_process(weights_type),
      client_work,
      aggregator,
      tff.learning.templates.build_apply_optimizer_finalizer(
          server_optimizer, weights_type
      ),
  )
