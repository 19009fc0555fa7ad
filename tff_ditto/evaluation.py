"""Per-client evaluation as TFF computations, and the fairness/robustness summary.

Three federated evaluations return one metrics record per client (CLIENTS
placed: per-client accuracy is the quantity the Ditto paper's fairness and
robustness numbers are computed from):

* `build_personalized_evaluation`: each client evaluates its own `v_k`, read
  from its state file (Ditto, local).
* `build_global_evaluation`: each client evaluates the broadcast global model.
* `build_finetune_evaluation`: each client fine-tunes the broadcast global model
  on its training data (optionally with a proximal term), then evaluates it
  (the stateless `finetune` baseline).

`build_finetune_personalize_fn` is the same fine-tuning as a personalize
function for `tff.learning.algorithms.build_personalization_eval_computation`,
TFF's production path for stateless cross-device personalization.

The model must report a metric named 'accuracy' (all `tff_ditto.models` do).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import optimization

TEST_KEY = 'test'
TRAIN_KEY = 'train'


def evaluate_model(model, batches):
  """Runs the model over `batches` (inference mode); per-client metrics."""
  model.reset_metrics()

  def accumulate(totals, batch):
    output = model.forward_pass(batch, training=False)
    count = tf.cast(output.num_examples, tf.float32)
    return totals + tf.stack([output.loss * count, count])

  totals = batch_loops.reduce_batches(
      batches, tf.zeros([2], tf.float32), accumulate
  )
  unfinalized = model.report_local_unfinalized_metrics()
  accuracy_total, accuracy_count = tf.unstack(
      tf.cast(unfinalized['accuracy'], tf.float32)
  )
  return collections.OrderedDict(
      loss_sum=totals[0],
      num_correct=accuracy_total,
      num_examples=accuracy_count,
  )


def _assign(weights, values):
  tf.nest.map_structure(lambda v, t: v.assign(t), weights, values)


def build_personalized_evaluation(
    model_fn: client_data_schema.ModelFn, num_personal_models: int = 1
) -> tff.Computation:
  """Evaluates each client's personalized model(s) read from its state file.

  Args:
    model_fn: As for `build_ditto_process`.
    num_personal_models: Personal models per state file (the number of
      lambdas given to `build_ditto_process`).

  Returns:
    A federated computation `client_data@CLIENTS -> metrics@CLIENTS`, where
    client data is `OrderedDict(batches=test batches, personal_state=dataset
    of one handle)` (only the handle's read_path is used). With one model the
    metrics are scalars; with several, each metric is a vector with one entry
    per personal model, in state order.

  Raises:
    ValueError: If `num_personal_models` < 1.
  """
  if num_personal_models < 1:
    raise ValueError(
        f'num_personal_models must be >= 1, got {num_personal_models}.'
    )
  data_type = client_data_schema.client_data_type(model_fn, personalize=True)

  @tff.tensorflow.computation(data_type)
  def evaluate_client(client_data):
    models = [model_fn() for _ in range(num_personal_models)]
    weights = [tff.learning.models.ModelWeights.from_model(m) for m in models]
    handle = client_data_schema.state_handle(client_data)

    @tf.function
    def run(batches, read_path):
      with tf.control_dependencies(
          client_states.read_personal_weights(read_path, weights)
      ):
        metrics = [evaluate_model(model, batches) for model in models]
      if num_personal_models == 1:
        return metrics[0]
      return collections.OrderedDict(
          (key, tf.stack([m[key] for m in metrics])) for key in metrics[0]
      )

    return run(client_data[client_data_schema.BATCHES_KEY], handle['read_path'])

  @tff.federated_computation(tff.FederatedType(data_type, tff.CLIENTS))
  def evaluate(client_data):
    return tff.federated_map(evaluate_client, client_data)

  return evaluate


def build_global_evaluation(
    model_fn: client_data_schema.ModelFn,
) -> tff.Computation:
  """Evaluates the server's global model on each client's test data.

  Returns:
    A federated computation `(weights@SERVER, batches@CLIENTS) ->
    metrics@CLIENTS`.
  """
  weights_type = client_data_schema.model_weights_type(model_fn)
  batches_type = tff.SequenceType(
      client_data_schema.batch_element_type(model_fn)
  )

  @tff.tensorflow.computation(weights_type, batches_type)
  def evaluate_client(model_weights, batches):
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)

    @tf.function
    def run(model_weights, batches):
      _assign(weights, model_weights)
      return evaluate_model(model, batches)

    return run(model_weights, batches)

  @tff.federated_computation(
      tff.FederatedType(weights_type, tff.SERVER),
      tff.FederatedType(batches_type, tff.CLIENTS),
  )
  def evaluate(model_weights, client_batches):
    return tff.federated_map(
        evaluate_client,
        (tff.federated_broadcast(model_weights), client_batches),
    )

  return evaluate


def _finetune(model, weights, optimizer, train_batches, proximal_strength):
  """Fine-tunes the model in place from its current weights."""
  center = tuple(tf.identity(v) for v in tf.nest.flatten(weights.trainable))
  optimizer_state = optimization.initialize_optimizer(optimizer, weights)

  def step(state, batch):
    state, _, _ = optimization.proximal_step(
        model, weights, optimizer, state, batch, center, proximal_strength
    )
    return state

  return batch_loops.reduce_batches(train_batches, optimizer_state, step)


def build_finetune_evaluation(
    model_fn: client_data_schema.ModelFn,
    optimizer: tff.learning.optimizers.Optimizer,
    proximal_strength: float = 0.0,
) -> tff.Computation:
  """Fine-tunes the global model on each client, then evaluates it.

  The number of fine-tuning steps is the number of train batches given.

  Args:
    model_fn: As for `build_ditto_process`.
    optimizer: Fine-tuning optimizer (reference: SGD at the client lr).
    proximal_strength: lambda of an optional proximal term lambda/2 ||v - w*||^2
      towards the global model (0 = plain fine-tuning).

  Returns:
    A federated computation `(weights@SERVER, OrderedDict(train=batches,
    test=batches)@CLIENTS) -> metrics@CLIENTS`.
  """
  weights_type = client_data_schema.model_weights_type(model_fn)
  batches_type = tff.SequenceType(
      client_data_schema.batch_element_type(model_fn)
  )
  data_type = tff.StructType(
      [(TRAIN_KEY, batches_type), (TEST_KEY, batches_type)]
  )

  @tff.tensorflow.computation(weights_type, data_type)
  def evaluate_client(model_weights, client_data):
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)

    @tf.function
    def run(model_weights, train_batches, test_batches):
      _assign(weights, model_weights)
      _finetune(model, weights, optimizer, train_batches, proximal_strength)
      return evaluate_model(model, test_batches)

    return run(model_weights, client_data[TRAIN_KEY], client_data[TEST_KEY])

  @tff.federated_computation(
      tff.FederatedType(weights_type, tff.SERVER),
      tff.FederatedType(data_type, tff.CLIENTS),
  )
  def evaluate(model_weights, client_data):
    return tff.federated_map(
        evaluate_client, (tff.federated_broadcast(model_weights), client_data)
    )

  return evaluate


def build_finetune_personalize_fn(
    *,
    learning_rate: float,
    num_steps: int,
    batch_size: int,
    proximal_strength: float = 0.0,
    shuffle_seed: int = 0,
):
  """Ditto's fine-tune solver as a `build_personalization_eval_computation` fn.

  Solves min_v F_k(v) + lambda/2 ||v - w*||^2 from the global model w* with
  `num_steps` SGD steps, statelessly, then reports test accuracy and loss.

  Args:
    learning_rate: SGD learning rate.
    num_steps: Mini-batch steps (the client's train data is repeated).
    batch_size: Fine-tuning batch size (the personalization computation hands
      over unbatched data).
    proximal_strength: lambda; 0 = plain fine-tuning.
    shuffle_seed: Seed of the per-client shuffle.

  Returns:
    A no-arg builder of a `tf.function(model, train_data, test_data) ->
    OrderedDict(accuracy, loss, num_test_examples)`, the shape
    `personalize_fn_dict` expects.
  """

  def builder():
    optimizer = tff.learning.optimizers.build_sgdm(learning_rate=learning_rate)

    @tf.function
    def personalize(model, train_data, test_data):
      weights = tff.learning.models.ModelWeights.from_model(model)
      train_batches = (
          train_data.shuffle(1000, seed=shuffle_seed)
          .repeat()
          .batch(batch_size)
          .take(num_steps)
      )
      _finetune(model, weights, optimizer, train_batches, proximal_strength)
      metrics = evaluate_model(model, test_data.batch(batch_size))
      count = tf.maximum(metrics['num_examples'], 1.0)
      return collections.OrderedDict(
          accuracy=metrics['num_correct'] / count,
          loss=metrics['loss_sum'] / count,
          num_test_examples=metrics['num_examples'],
      )

    return personalize

  return builder


def client_metrics_table(
    client_metrics: Sequence[Mapping[str, np.ndarray]],
    client_ids: Sequence[str],
):
  """Per-client loss and accuracy as a pandas DataFrame."""
  import pandas as pd  # pylint: disable=g-import-not-at-top

  rows = []
  for client_id, metrics in zip(client_ids, client_metrics):
    n = float(metrics['num_examples'])
    rows.append(
        collections.OrderedDict(
            client_id=client_id,
            num_examples=n,
            num_correct=float(metrics['num_correct']),
            accuracy=float(metrics['num_correct']) / n if n else np.nan,
            loss=float(metrics['loss_sum']) / n if n else np.nan,
        )
    )
  return pd.DataFrame(rows)


# The names of `summarize`'s entries, in its order.
SUMMARY_NAMES = (
    'pooled_accuracy',
    'mean_accuracy',
    'std_accuracy',
    'variance_accuracy',
    'worst10_accuracy',
    'pooled_loss',
    'num_clients',
)


def summarize(
    num_correct: np.ndarray,
    num_examples: np.ndarray,
    loss_sum: np.ndarray,
    prefix: str = '',
) -> collections.OrderedDict:
  """Fairness / robustness summary over a group of clients.

  Clients without test examples are left out of the per-client statistics.

  Args:
    num_correct: Per-client correct predictions.
    num_examples: Per-client test examples.
    loss_sum: Per-client summed test loss.
    prefix: Prepended to every key (e.g. 'benign_').

  Returns:
    OrderedDict with pooled accuracy (sum correct / sum n, the reference code's
    number), unweighted mean, std and variance of per-client accuracy (the
    paper's fairness metric is the std), mean of the worst 10% of clients,
    pooled loss, and the client count.
  """
  num_correct = np.asarray(num_correct, np.float64)
  num_examples = np.asarray(num_examples, np.float64)
  loss_sum = np.asarray(loss_sum, np.float64)
  keep = num_examples > 0
  accuracy = num_correct[keep] / num_examples[keep]
  summary = collections.OrderedDict()
  if accuracy.size == 0:
    for key in SUMMARY_NAMES:
      summary[prefix + key] = 0 if key == 'num_clients' else float('nan')
    return summary
  worst_count = max(1, int(np.ceil(0.1 * accuracy.size)))
  summary[prefix + 'pooled_accuracy'] = float(
      num_correct[keep].sum() / num_examples[keep].sum()
  )
  summary[prefix + 'mean_accuracy'] = float(accuracy.mean())
  summary[prefix + 'std_accuracy'] = float(accuracy.std())
  summary[prefix + 'variance_accuracy'] = float(accuracy.var())
  summary[prefix + 'worst10_accuracy'] = float(
      np.sort(accuracy)[:worst_count].mean()
  )
  summary[prefix + 'pooled_loss'] = float(
      loss_sum[keep].sum() / num_examples[keep].sum()
  )
  summary[prefix + 'num_clients'] = int(accuracy.size)
  return summary


def summarize_clients(
    stacked: Mapping[str, np.ndarray], selection, prefix: str
) -> collections.OrderedDict:
  """`summarize` of the clients `selection` picks out of stacked metrics.

  Args:
    stacked: `stack_client_metrics` output (`num_correct`, `num_examples`,
      `loss_sum` arrays).
    selection: A NumPy index into them (a boolean mask over clients, or a
      (mask, model index) tuple for per-model metrics).
    prefix: Prepended to every key.

  Returns:
    The summary.
  """
  return summarize(
      stacked['num_correct'][selection],
      stacked['num_examples'][selection],
      stacked['loss_sum'][selection],
      prefix=prefix,
  )


def stack_client_metrics(
    client_metrics: Sequence[Mapping[str, np.ndarray]],
) -> dict[str, np.ndarray]:
  """List of per-client records -> dict of per-client arrays."""
  keys = ('num_correct', 'num_examples', 'loss_sum')
  return {
      k: np.array(
          [np.asarray(m[k], np.float64) for m in client_metrics], np.float64
      )
      for k in keys
  }


def select_personal_models(
    validation: Mapping[str, np.ndarray],
    lambdas: Sequence[float],
    fallback_lambda: float,
    min_validation_examples: int,
) -> np.ndarray:
  """Each client's choice among its personal models (the paper's protocol).

  A client with fewer than `min_validation_examples` validation examples
  keeps the model of `fallback_lambda`; every other client picks the model
  with the lowest mean validation loss (ties: the earlier lambda).

  Args:
    validation: `stack_client_metrics` of the personal models on the
      validation split: arrays of shape [clients, len(lambdas)].
    lambdas: The lambda of each personal model, in state order.
    fallback_lambda: One of `lambdas`.
    min_validation_examples: Threshold of the fallback.

  Returns:
    int array [clients]: the index into `lambdas` each client uses.

  Raises:
    ValueError: If `fallback_lambda` is not one of `lambdas`.
  """
  lambdas = list(lambdas)
  if fallback_lambda not in lambdas:
    raise ValueError(f'fallback lambda {fallback_lambda} not in {lambdas}')
  counts = validation['num_examples']
  with np.errstate(invalid='ignore', divide='ignore'):
    mean_loss = validation['loss_sum'] / counts
  mean_loss = np.where(np.isfinite(mean_loss), mean_loss, np.inf)
  chosen = np.argmin(mean_loss, axis=1)
  too_few = counts[:, 0] < min_validation_examples
  chosen[too_few] = lambdas.index(fallback_lambda)
  return chosen


def take_personal_model(
    stacked: Mapping[str, np.ndarray], chosen: np.ndarray
) -> dict[str, np.ndarray]:
  """Per-client metrics of the chosen personal model ([clients, K] -> [clients])."""
  rows = np.arange(len(chosen))
  return {k: np.asarray(v)[rows, chosen] for k, v in stacked.items()}
