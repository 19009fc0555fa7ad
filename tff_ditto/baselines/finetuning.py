"""Evaluations of the baselines: interpolated personal models and fine-tuning variants.

`build_interpolated_evaluation` evaluates alpha * v_k + (1 - alpha) * w per
client, v_k read from the client's state file (L2SGD: alpha = 1; APFL: its
alpha; MAPPER without fine-tuning: alpha = the client's lambda_k from its
state file).

`build_finetune_family_evaluation` fine-tunes per client from a starting point
and evaluates; the variants, as the Ditto reference code
(reference_implementations.md A.2), are

* `plain`: SGD from w (Per-FedAvg's final fine-tuning);
* `ewc`: the diagonal Fisher F = mean over the first 4 batches of squared
  gradients at w (`trainers_MTL/ewc.py`), then SGD on the following batches
  with gradient grad F_k(v; b) + lambda * F * (v - w);
* `skl`: SGD with gradient grad F_k(v; b) + lambda * grad_v sum_i
  [KL(p_v(x_i) || p_w(x_i)) + KL(p_w(x_i) || p_v(x_i))] over the client's
  whole training set (`trainers_MTL/kl.py`; the sum, as TF1's gradient of the
  per-example KL vector; Keras' `kl_divergence`, which clips probabilities to
  [1e-7, 1]); p_w is the global model's softmax (fixed);
* `mapper`: SGD from lambda_k v_k + (1 - lambda_k) w (MAPPER's final
  fine-tuning);
* `early_stopping`: SGD (with the optional proximal term lambda/2 ||v - w||^2
  of `finetune`) from w, stopped once the client's validation loss has not
  improved for `patience` consecutive steps; the best-validation weights are
  evaluated. Not in the reference; the fine-tuning baseline with a stopping
  rule.

Deviations from the reference: the number of fine-tuning steps is the number
of train batches given (the runner gives `finetune_steps`, like this
project's `finetune`; the reference uses max(finetune_iters * n_k / B,
finetune_iters)), and fine-tuning happens at every evaluation rather than once
after training. SKL's p_w is computed in inference mode (no dropout; the
reference's FEMNIST graph drops units in every pass) by a frozen copy of w on
the same examples, which equals the reference's precomputed table. For a
one-output model (the Vehicle SVM score s) p = softmax([0, s]).
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import evaluation
from tff_ditto import optimization
from tff_ditto.baselines import common

TRAIN_KEY = evaluation.TRAIN_KEY
TEST_KEY = evaluation.TEST_KEY

FINETUNE_KINDS = ('plain', 'ewc', 'skl', 'mapper', 'early_stopping')
FISHER_BATCHES = 4


def finetune_data_keys(kind: str) -> tuple[str, ...]:
  """The per-client inputs (besides `test`) a fine-tuning variant reads."""
  keys = {
      'plain': (TRAIN_KEY,),
      'ewc': (TRAIN_KEY,),
      'skl': (TRAIN_KEY, client_data_schema.FULL_TRAIN_KEY),
      'mapper': (TRAIN_KEY, client_data_schema.STATE_KEY),
      'early_stopping': (TRAIN_KEY, client_data_schema.VALIDATION_KEY),
  }
  if kind not in keys:
    raise ValueError(f'kind must be one of {FINETUNE_KINDS}, got {kind!r}.')
  return keys[kind]


def probabilities(predictions: tf.Tensor) -> tf.Tensor:
  """Softmax of logits; a one-column score s becomes softmax([0, s])."""
  if predictions.shape[-1] == 1:
    predictions = tf.concat([tf.zeros_like(predictions), predictions], axis=-1)
  return tf.nn.softmax(predictions, axis=-1)


def symmetric_kl_gradient(model, teacher, trainable, batches):
  """grad of sum_i KL(p_v||p_w) + KL(p_w||p_v) over `batches`, w.r.t. v."""

  def accumulate(totals, batch):
    with tf.GradientTape() as tape:
      p_v = probabilities(model.forward_pass(batch, training=True).predictions)
    p_w = tf.stop_gradient(
        probabilities(teacher.forward_pass(batch, training=False).predictions)
    )
    with tape:
      kl = tf.reduce_sum(
          tf.keras.losses.kl_divergence(p_v, p_w)
          + tf.keras.losses.kl_divergence(p_w, p_v)
      )
    gradients = tape.gradient(kl, trainable)
    return tuple(t + g for t, g in zip(totals, gradients))

  zeros = tuple(tf.zeros_like(v) for v in trainable)
  return batch_loops.reduce_batches(batches, zeros, accumulate)


def _sgd_step(
    model, trainable, optimizer, optimizer_state, batch, extra_gradient=None
):
  gradients, loss, _ = optimization.gradient(model, trainable, batch)
  if extra_gradient is not None:
    gradients = tuple(g + e for g, e in zip(gradients, extra_gradient()))
  optimizer_state, updated = optimizer.next(
      optimizer_state, trainable, gradients
  )
  for variable, value in zip(trainable, updated):
    variable.assign(value)
  return optimizer_state, loss


def finetune(model, weights, optimizer, batches, extra_gradient=None):
  """SGD over `batches` from the model's current weights, in place.

  Args:
    model: The `VariableModel`.
    weights: `ModelWeights.from_model(model)`.
    optimizer: A `tff.learning.optimizers.Optimizer`.
    batches: The fine-tuning batches (one step each).
    extra_gradient: Optional no-arg callable returning a flat tuple added to
      each step's loss gradient (evaluated at the current weights).

  Returns:
    The final optimizer state.
  """
  trainable = tuple(tf.nest.flatten(weights.trainable))
  optimizer_state = optimization.initialize_optimizer(optimizer, weights)

  def step(state, batch):
    state, _ = _sgd_step(
        model, trainable, optimizer, state, batch, extra_gradient
    )
    return state

  return batch_loops.reduce_batches(batches, optimizer_state, step)


def ewc_finetune(model, weights, optimizer, batches, strength: float):
  """EWC fine-tuning from w = the model's current weights, in place.

  The first `FISHER_BATCHES` batches estimate the diagonal Fisher at w (mean
  of squared batch-loss gradients); the rest are SGD steps with gradient
  grad F + strength * Fisher * (v - w).
  """
  trainable = tuple(tf.nest.flatten(weights.trainable))
  center = tuple(tf.identity(v) for v in trainable)
  optimizer_state = optimization.initialize_optimizer(optimizer, weights)
  fisher0 = tuple(tf.zeros_like(v) for v in trainable)

  def step(loop_state, batch):
    state, fisher, count = loop_state

    def accumulate_fisher():
      gradients, _, _ = optimization.gradient(model, trainable, batch)
      return state, tuple(
          f + tf.square(g) / float(FISHER_BATCHES)
          for f, g in zip(fisher, gradients)
      )

    def train():
      new_state, _ = _sgd_step(
          model,
          trainable,
          optimizer,
          state,
          batch,
          lambda: tuple(
              strength * (f * (v - c))
              for f, v, c in zip(fisher, trainable, center)
          ),
      )
      return new_state, fisher

    new_state, fisher = tf.cond(
        count < FISHER_BATCHES, accumulate_fisher, train
    )
    return new_state, fisher, count + 1

  return batch_loops.reduce_batches(
      batches, (optimizer_state, fisher0, tf.constant(0)), step
  )


def early_stopping_finetune(
    model,
    weights,
    optimizer,
    batches,
    validation,
    patience: int,
    proximal_strength: float,
    best_weights,
):
  """Fine-tuning with early stopping on the validation loss, in place.

  Steps stop once `patience` consecutive steps did not lower the validation
  loss (starting from the loss at w); the model ends at the best weights.
  `best_weights` are the `ModelWeights` of a second model used as storage.
  """
  trainable = tuple(tf.nest.flatten(weights.trainable))
  best = tuple(tf.nest.flatten(best_weights.trainable))
  center = tuple(tf.identity(v) for v in trainable)
  optimizer_state = optimization.initialize_optimizer(optimizer, weights)
  # Read once; every step evaluates on it.
  validation = batch_loops.stack_batches(validation)
  with tf.control_dependencies([b.assign(v) for b, v in zip(best, trainable)]):
    initial_loss = optimization.mean_loss(model, validation)

  def step(loop_state, batch):
    state, best_loss, since_best, stopped = loop_state

    def train():
      new_state, _, _ = optimization.proximal_step(
          model, weights, optimizer, state, batch, center, proximal_strength
      )
      loss = optimization.mean_loss(model, validation)
      improved = loss < best_loss
      for b, v in zip(best, trainable):
        b.assign(tf.where(improved, v, b))
      new_since = tf.where(improved, 0, since_best + 1)
      return (
          new_state,
          tf.where(improved, loss, best_loss),
          new_since,
          new_since >= patience,
      )

    return tf.cond(
        stopped, lambda: (state, best_loss, since_best, stopped), train
    )

  final = batch_loops.reduce_batches(
      batches,
      (optimizer_state, initial_loss, tf.constant(0), tf.constant(False)),
      step,
  )
  with tf.control_dependencies(tf.nest.flatten(final)):
    return [v.assign(b) for v, b in zip(trainable, best)]


def build_finetune_family_evaluation(
    model_fn: client_data_schema.ModelFn,
    kind: str,
    optimizer: tff.learning.optimizers.Optimizer,
    strength: float = 0.0,
    patience: int = 1,
) -> tff.Computation:
  """Fine-tunes per client (variant `kind`), then evaluates on `test`.

  Args:
    model_fn: No-arg `VariableModel` builder.
    kind: One of FINETUNE_KINDS (see module docstring).
    optimizer: Fine-tuning optimizer (reference: SGD at the client lr).
    strength: lambda of `ewc`, `skl`, or the proximal term of
      `early_stopping`; unused by `plain` and `mapper`.
    patience: Steps without validation improvement before `early_stopping`
      stops.

  Returns:
    A federated computation `(weights@SERVER, OrderedDict(<finetune_data_keys
    (kind)>, test)@CLIENTS) -> metrics@CLIENTS` (the metrics of
    `tff_ditto.evaluation`: loss_sum, num_correct, num_examples).

  Raises:
    ValueError: On an unknown kind, negative strength or patience < 1.
  """
  keys = finetune_data_keys(kind)
  if strength < 0:
    raise ValueError(f'strength must be >= 0, got {strength}.')
  if patience < 1:
    raise ValueError(f'patience must be >= 1, got {patience}.')
  model_weights_type = client_data_schema.model_weights_type(model_fn)
  batches_type = tff.SequenceType(
      client_data_schema.batch_element_type(model_fn)
  )
  fields = []
  for key in keys:
    if key == client_data_schema.STATE_KEY:
      fields.append(
          (key, tff.SequenceType(client_data_schema.STATE_HANDLE_TYPE))
      )
    else:
      fields.append((key, batches_type))
  fields.append((TEST_KEY, batches_type))
  data_type = tff.StructType(fields)
  strength = float(strength)

  @tff.tensorflow.computation(model_weights_type, data_type)
  def evaluate_client(model_weights, client_data):
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)
    variables = common.all_variables(weights)
    helper = model_fn() if kind in ('skl', 'early_stopping') else None
    helper_weights = (
        tff.learning.models.ModelWeights.from_model(helper) if helper else None
    )
    handle = (
        client_data_schema.state_handle(client_data)
        if kind == 'mapper'
        else None
    )

    @tf.function
    def run(model_weights, client_data, handle):
      starts = common.all_variables(model_weights)
      if kind == 'mapper':
        state = client_states.read_state(
            handle['read_path'],
            client_states.num_entries(variables),
            initial_extra=tf.zeros([1]),
        )
        lam = state.extra[0]
        starts = [
            lam * v + (1.0 - lam) * w
            for v, w in zip(
                client_states.unflatten_tensors(state.model, variables), starts
            )
        ]
      common.assign_all(variables, starts)
      if helper is not None:
        common.assign_all(
            common.all_variables(helper_weights),
            common.all_variables(model_weights),
        )
      train = client_data[TRAIN_KEY]
      if kind == 'ewc':
        ewc_finetune(model, weights, optimizer, train, strength)
      elif kind == 'skl':
        trainable = tuple(tf.nest.flatten(weights.trainable))
        full_train = client_data[client_data_schema.FULL_TRAIN_KEY]
        finetune(
            model,
            weights,
            optimizer,
            train,
            lambda: tuple(
                strength * g
                for g in symmetric_kl_gradient(
                    model, helper, trainable, full_train
                )
            ),
        )
      elif kind == 'early_stopping':
        early_stopping_finetune(
            model,
            weights,
            optimizer,
            train,
            client_data[client_data_schema.VALIDATION_KEY],
            patience,
            strength,
            helper_weights,
        )
      else:
        finetune(model, weights, optimizer, train)
      return evaluation.evaluate_model(model, client_data[TEST_KEY])

    if handle is None:
      handle = collections.OrderedDict(
          read_path=tf.constant(''), write_path=tf.constant('')
      )
    return run(model_weights, client_data, handle)

  @tff.federated_computation(
      tff.FederatedType(model_weights_type, tff.SERVER),
      tff.FederatedType(data_type, tff.CLIENTS),
  )
  def evaluate(model_weights, client_data):
    return tff.federated_map(
        evaluate_client, (tff.federated_broadcast(model_weights), client_data)
    )

  return evaluate


def build_interpolated_evaluation(
    model_fn: client_data_schema.ModelFn, alpha: Optional[float]
) -> tff.Computation:
  """Evaluates alpha * v_k + (1 - alpha) * w on each client's test data.

  Args:
    model_fn: No-arg `VariableModel` builder.
    alpha: Fixed mixing weight, or None to read each client's lambda_k that
      follows v_k in its state file (MAPPER; 0 for the initial file).

  Returns:
    A federated computation `(weights@SERVER, OrderedDict(batches=test,
    personal_state=handle)@CLIENTS) -> metrics@CLIENTS`.
  """
  model_weights_type = client_data_schema.model_weights_type(model_fn)
  data_type = tff.StructType([
      (
          client_data_schema.BATCHES_KEY,
          tff.SequenceType(client_data_schema.batch_element_type(model_fn)),
      ),
      (
          client_data_schema.STATE_KEY,
          tff.SequenceType(client_data_schema.STATE_HANDLE_TYPE),
      ),
  ])

  @tff.tensorflow.computation(model_weights_type, data_type)
  def evaluate_client(model_weights, client_data):
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)
    variables = common.all_variables(weights)
    handle = client_data_schema.state_handle(client_data)

    @tf.function
    def run(model_weights, batches, read_path):
      state = client_states.read_state(
          read_path,
          client_states.num_entries(variables),
          initial_extra=None if alpha is not None else tf.zeros([1]),
      )
      mix = (
          tf.constant(alpha, tf.float32)
          if alpha is not None
          else state.extra[0]
      )
      values = [
          mix * v + (1.0 - mix) * w
          for v, w in zip(
              client_states.unflatten_tensors(state.model, variables),
              common.all_variables(model_weights),
          )
      ]
      with tf.control_dependencies(common.assign_all(variables, values)):
        return evaluation.evaluate_model(model, batches)

    return run(
        model_weights,
        client_data[client_data_schema.BATCHES_KEY],
        handle['read_path'],
    )

  @tff.federated_computation(
      tff.FederatedType(model_weights_type, tff.SERVER),
      tff.FederatedType(data_type, tff.CLIENTS),
  )
  def evaluate(model_weights, client_data):
    return tff.federated_map(
        evaluate_client, (tff.federated_broadcast(model_weights), client_data)
    )

  return evaluate
