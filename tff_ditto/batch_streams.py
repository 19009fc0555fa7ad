"""Per-client training batch streams (their seeds: `tff_ditto.sampling`).

Two ways to feed a client its mini-batches (`ExperimentConfig.batch_stream`):

* `'reference'` (default), as the Ditto reference code's `gen_batch`: each
  client has one stream for the whole run. It walks the client's data in a
  shuffled order, one full batch after the other, and reshuffles after each
  pass; the last, partial batch of a pass is skipped (the reference restarts
  when `position + batch_size > n`). A client with n <= batch_size examples
  trains on all of them as one batch at every step. A client's position in
  its stream (batches drawn so far) advances only when it is sampled and is
  part of the checkpoint, so a resumed run draws the same batches. The pass
  order is `numpy.random.default_rng([seed, stream, client, pass])`, a
  function of the experiment seed alone (the reference reseeds NumPy's global
  generator instead, so its exact orders are not reproduced).
* `'per_round_shuffle'`, this project's earlier stream: every round builds a
  fresh stream per client, shuffled with a seed of (seed, round, client) and
  repeated, so batches cross pass boundaries and a client with fewer examples
  than the batch size gets batches with repeated examples.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from tff_ditto.sampling import FINETUNE_STREAM
from tff_ditto.sampling import TRAIN_STREAM
from tff_ditto.sampling import client_seed

BATCH_STREAMS = ('reference', 'per_round_shuffle')


def per_round_shuffle_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, seed: int
) -> tf.data.Dataset:
  """A client's endless, reshuffled-every-pass stream of training batches."""
  n = int(arrays['y'].shape[0])
  return (
      tf.data.Dataset.from_tensor_slices(arrays)
      .shuffle(max(n, 1), seed=seed, reshuffle_each_iteration=True)
      .repeat()
      .batch(batch_size)
  )


def reference_batch_indices(
    num_examples: int,
    batch_size: int,
    start: int,
    count: int,
    seed: int,
    stream: int,
    client_index: int,
) -> list[np.ndarray]:
  """The example indices of batches `start, ..., start + count - 1`.

  Args:
    num_examples: n, the client's training examples.
    batch_size: B.
    start: Batches the client has drawn before.
    count: Batches to draw.
    seed: Experiment seed.
    stream: Seed stream (`TRAIN_STREAM`, `FINETUNE_STREAM`).
    client_index: The client's index in the dataset.

  Returns:
    `count` index arrays, each of min(n, B) entries; empty when n == 0.
  """
  if num_examples == 0:
    return []
  size = min(num_examples, batch_size)
  batches_per_pass = max(num_examples // batch_size, 1)
  batches = []
  order, order_pass = None, -1
  for position in range(start, start + count):
    pass_index, slot = divmod(position, batches_per_pass)
    if pass_index != order_pass:
      order = np.random.default_rng(
          [seed, stream, client_index, pass_index]
      ).permutation(num_examples)
      order_pass = pass_index
    batches.append(order[slot * size : (slot + 1) * size])
  return batches


def batches_from_indices(
    arrays: Mapping[str, np.ndarray], batches: list[np.ndarray]
) -> tf.data.Dataset:
  """A finite dataset of the given batches of `arrays`."""
  if not batches:
    empty = collections.OrderedDict(
        (key, value[:0]) for key, value in arrays.items()
    )
    return tf.data.Dataset.from_tensor_slices(empty).batch(1)
  indices = np.concatenate(batches)
  gathered = collections.OrderedDict(
      (key, value[indices]) for key, value in arrays.items()
  )
  return tf.data.Dataset.from_tensor_slices(gathered).batch(len(batches[0]))


class ClientBatchStreams:
  """Every client's training batch stream in one run (see module doc).

  Attributes:
    positions: int64 [num_clients], batches each client has drawn
      ('reference' streams; all zeros for 'per_round_shuffle').
  """

  def __init__(
      self,
      mode: str,
      num_clients: int,
      batch_size: int,
      seed: int,
  ):
    """Creates the streams, every client at position 0.

    Args:
      mode: One of `BATCH_STREAMS`.
      num_clients: Clients of the dataset.
      batch_size: Training batch size.
      seed: Experiment seed.

    Raises:
      ValueError: On an unknown mode.
    """
    if mode not in BATCH_STREAMS:
      raise ValueError(
          f'batch_stream must be one of {BATCH_STREAMS}, got {mode!r}.'
      )
    self.mode = mode
    self.batch_size = batch_size
    self.seed = seed
    self.positions = np.zeros([num_clients], np.int64)

  def round_batches(
      self,
      round_num: int,
      client_index: int,
      arrays: Mapping[str, np.ndarray],
      count: int,
  ) -> tf.data.Dataset:
    """The client's batches of this round; advances its position by `count`.

    Args:
      round_num: The round (seeds 'per_round_shuffle' streams).
      client_index: The client's index in the dataset.
      arrays: Its training arrays.
      count: Batches the method takes this round ('reference' streams hold
        exactly this many; 'per_round_shuffle' streams are endless).

    Returns:
      A dataset of batches.
    """
    if self.mode == 'per_round_shuffle':
      return per_round_shuffle_batches(
          arrays,
          self.batch_size,
          client_seed(self.seed, TRAIN_STREAM, round_num, client_index),
      )
    start = int(self.positions[client_index])
    self.positions[client_index] = start + count
    return batches_from_indices(
        arrays,
        reference_batch_indices(
            int(arrays['y'].shape[0]),
            self.batch_size,
            start,
            count,
            self.seed,
            TRAIN_STREAM,
            client_index,
        ),
    )

  def finetune_batches(
      self,
      client_index: int,
      arrays: Mapping[str, np.ndarray],
      count: int,
  ) -> tf.data.Dataset:
    """`count` fine-tuning batches: a stream of their own, from its start."""
    if self.mode == 'per_round_shuffle':
      return per_round_shuffle_batches(
          arrays,
          self.batch_size,
          client_seed(self.seed, FINETUNE_STREAM, client_index),
      ).take(count)
    return batches_from_indices(
        arrays,
        reference_batch_indices(
            int(arrays['y'].shape[0]),
            self.batch_size,
            0,
            count,
            self.seed,
            FINETUNE_STREAM,
            client_index,
        ),
    )
