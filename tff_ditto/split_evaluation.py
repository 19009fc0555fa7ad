"""Every client's evaluation on a split in one TensorFlow computation.

Per-client accuracy is a simulation metric, not part of the federated
protocol, so the runner need not evaluate through `tff.federated_map` with one
call of the client computation per client (`tff_ditto.evaluation`). Measured
on FEMNIST (240 writers, 2 cores): that path cost 2.5 s per evaluation of the
personal and global models against 0.5 s for a plain forward pass over the
same test data, about 4 ms of dispatch per client and model; on Synthetic
(30 clients) 35 times its forward pass. Here the whole split travels once, as
one array per feature with the batch bounds beside it (`ClientSplit`), and a
single `tff.tensorflow.computation` loops over the clients in the graph:
read the client's personal weights from its state file, then evaluate its
batches, exactly as the per-client computation does (same batches, same
`forward_pass`, same sums in the same order), so the metrics are the same to
the bit (`tests/test_split_evaluation.py`).

The computations return metrics per client as arrays with the clients first
(`per_client` turns them into the per-client records
`tff_ditto.evaluation.stack_client_metrics` and `client_metrics_table`
read).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import batch_loops
from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import evaluation

METRIC_KEYS = ('loss_sum', 'num_correct', 'num_examples')


@dataclasses.dataclass(frozen=True)
class ClientSplit:
  """One split of every client, as the per-client evaluation batches it.

  Attributes:
    examples: Each feature of every client's examples, concatenated in client
      order.
    batch_starts: int32 [batches], where each batch starts in `examples`.
    batch_sizes: int32 [batches], its size: a client's examples in batches
      of `batch_size`, the last one partial (`tf.data.Dataset.batch`).
    client_first_batch: int32 [clients + 1], client c's batches are
      `client_first_batch[c]` to `client_first_batch[c + 1]` (exclusive).
  """

  examples: collections.OrderedDict
  batch_starts: np.ndarray
  batch_sizes: np.ndarray
  client_first_batch: np.ndarray

  def as_argument(self) -> collections.OrderedDict:
    """The split as the computations' argument."""
    return collections.OrderedDict(
        examples=self.examples,
        batch_starts=self.batch_starts,
        batch_sizes=self.batch_sizes,
        client_first_batch=self.client_first_batch,
    )


def client_split(
    clients: Sequence[Mapping[str, np.ndarray]], batch_size: int
) -> ClientSplit:
  """Stacks every client's arrays of one split (see `ClientSplit`).

  Args:
    clients: Per client, in order, its arrays (same keys for all).
    batch_size: The evaluation batch size.

  Returns:
    The `ClientSplit`.
  """
  keys = list(clients[0].keys())
  starts, sizes, first_batch = [], [], [0]
  offset = 0
  for arrays in clients:
    count = int(np.shape(arrays[keys[0]])[0])
    for start in range(0, count, batch_size):
      starts.append(offset + start)
      sizes.append(min(batch_size, count - start))
    offset += count
    first_batch.append(len(starts))
  examples = collections.OrderedDict(
      (key, np.concatenate([np.asarray(arrays[key]) for arrays in clients]))
      for key in keys
  )
  return ClientSplit(
      examples=examples,
      batch_starts=np.asarray(starts, np.int32),
      batch_sizes=np.asarray(sizes, np.int32),
      client_first_batch=np.asarray(first_batch, np.int32),
  )


def _split_type(
    model_fn: client_data_schema.ModelFn,
) -> tff.StructWithPythonType:
  element_type = client_data_schema.batch_element_type(model_fn)
  vector = tff.TensorType(np.int32, [None])
  return tff.StructWithPythonType(
      [
          ('examples', element_type),
          ('batch_starts', vector),
          ('batch_sizes', vector),
          ('client_first_batch', vector),
      ],
      collections.OrderedDict,
  )


def _client_batches(split, client) -> batch_loops.SlicedBatches:
  """Client `client`'s evaluation batches of `split`."""
  first = split['client_first_batch'][client]
  last = split['client_first_batch'][client + 1]
  return batch_loops.SlicedBatches(
      split['examples'],
      split['batch_starts'][first:last],
      split['batch_sizes'][first:last],
  )


def _metrics_of_clients(num_clients, evaluate_client, num_models, num_splits):
  """Loops `evaluate_client(c)` over the clients.

  `evaluate_client(c)` returns, per split, the metrics of each model; the
  result is, per split, each metric as an array [clients, models].
  """
  arrays = tuple(
      tuple(
          tf.TensorArray(
              tf.float32, size=num_clients, element_shape=[num_models]
          )
          for _ in METRIC_KEYS
      )
      for _ in range(num_splits)
  )

  def body(client, arrays):
    per_split = evaluate_client(client)
    return client + 1, tuple(
        tuple(
            array.write(
                client, tf.stack([metrics[key] for metrics in per_model])
            )
            for array, key in zip(split_arrays, METRIC_KEYS)
        )
        for split_arrays, per_model in zip(arrays, per_split)
    )

  _, arrays = tf.while_loop(
      lambda client, _: client < num_clients,
      body,
      (tf.constant(0), arrays),
      parallel_iterations=1,
  )
  return tuple(
      collections.OrderedDict(
          (key, array.stack()) for key, array in zip(METRIC_KEYS, split_arrays)
      )
      for split_arrays in arrays
  )


def build_personalized_split_evaluation(
    model_fn: client_data_schema.ModelFn,
    num_personal_models: int = 1,
    num_splits: int = 1,
) -> tff.Computation:
  """Every client's personal model(s), read from its state file, on splits.

  Each client's state file is read once, and its models then evaluate every
  split: on Fashion-MNIST's paper-budget cell (four personal models, 26 GB of
  state files, more than the machine's memory) reading the files is most of
  an evaluation, and a run needs its test and validation splits at once.

  Args:
    model_fn: As for `tff_ditto.ditto.build_ditto_process`.
    num_personal_models: Personal models per state file.
    num_splits: Splits evaluated per call.

  Returns:
    A `tff.tensorflow.computation` `(splits, read_paths) -> metrics`:
    `splits` is a tuple of `num_splits` `ClientSplit.as_argument()`,
    `read_paths` a string vector with each client's state file; `metrics`
    is a tuple with, per split, each metric of `METRIC_KEYS` as float32
    [clients, num_personal_models] (as `evaluation`'s per-client
    computation, per client and model).

  Raises:
    ValueError: If `num_personal_models` or `num_splits` < 1.
  """
  if num_personal_models < 1:
    raise ValueError(
        f'num_personal_models must be >= 1, got {num_personal_models}.'
    )
  if num_splits < 1:
    raise ValueError(f'num_splits must be >= 1, got {num_splits}.')
  split_type = _split_type(model_fn)

  @tff.tensorflow.computation(
      tff.StructWithPythonType([split_type] * num_splits, tuple),
      tff.TensorType(np.str_, [None]),
  )
  def evaluate(splits, read_paths):
    models = [model_fn() for _ in range(num_personal_models)]
    weights = [tff.learning.models.ModelWeights.from_model(m) for m in models]

    @tf.function
    def run(splits, read_paths):
      def evaluate_client(client):
        with tf.control_dependencies(
            client_states.read_personal_weights(read_paths[client], weights)
        ):
          return [
              [
                  evaluation.evaluate_model(
                      model, _client_batches(split, client)
                  )
                  for model in models
              ]
              for split in splits
          ]

      return _metrics_of_clients(
          tf.shape(read_paths)[0],
          evaluate_client,
          num_personal_models,
          num_splits,
      )

    return run(tuple(splits), read_paths)

  return evaluate


def build_global_split_evaluation(
    model_fn: client_data_schema.ModelFn,
) -> tff.Computation:
  """The global model on every client's data of a split.

  Returns:
    A `tff.tensorflow.computation` `(weights, split) -> metrics`, each metric
    of `METRIC_KEYS` float32 [clients, 1].
  """
  weights_type = client_data_schema.model_weights_type(model_fn)

  @tff.tensorflow.computation(weights_type, _split_type(model_fn))
  def evaluate(model_weights, split):
    model = model_fn()
    weights = tff.learning.models.ModelWeights.from_model(model)

    @tf.function
    def run(model_weights, split):
      assigned = tf.nest.flatten(
          tf.nest.map_structure(
              lambda v, t: v.assign(t), weights, model_weights
          )
      )
      with tf.control_dependencies(assigned):
        num_clients = tf.shape(split['client_first_batch'])[0] - 1
      (metrics,) = _metrics_of_clients(
          num_clients,
          lambda client: [
              [evaluation.evaluate_model(model, _client_batches(split, client))]
          ],
          1,
          1,
      )
      return metrics

    return run(model_weights, split)

  return evaluate


def per_client(
    metrics: Mapping[str, np.ndarray], squeeze: bool = True
) -> list[collections.OrderedDict]:
  """Per-client records of a computation's metrics.

  Args:
    metrics: Arrays [clients, models] per key.
    squeeze: With one model, a record holds scalars (as the per-client
      computations give them); otherwise vectors, one entry per model.

  Returns:
    One `OrderedDict` per client.
  """
  arrays = {key: np.asarray(value) for key, value in metrics.items()}
  num_clients, num_models = arrays[METRIC_KEYS[0]].shape
  return [
      collections.OrderedDict(
          (
              key,
              arrays[key][client, 0]
              if squeeze and num_models == 1
              else arrays[key][client],
          )
          for key in METRIC_KEYS
      )
      for client in range(num_clients)
  ]
