"""Every client's inputs to a run's TFF computations, built in one place.

A method says what each sampled client's data of a training round holds (a
`ClientDataFields`); the run's `RoundDataBuilder` builds it, the same way for
Ditto's family and for every baseline:

* the client's training batches of the round, from its batch stream
  (`tff_ditto.batch_streams`, which moves on);
* its personal-state handle (`tff_ditto.client_states`), to read its current
  state file and write the round's version;
* its attack instruction: the update attack's code for a malicious client
  (0 for a benign one), the round's scale and a per-client seed
  (`tff_ditto.attacks.UPDATE_ATTACK_CODES`, `tff_ditto.sampling`);
* its whole validation split, its whole training set, or its training-set
  size, for the methods that need them.

The entries come in the order of `ditto.client_data_type` (the baselines'
`common.client_data_type` keeps the same order). The builder also gives the
evaluations their per-client inputs: a split as batches or as one argument
of the split evaluations, fine-tuning batches and read-only state handles.

The runner owns one builder; a subclass changes how clients get their data,
e.g. `training_batches` (scripts/bucketing_experiment.py draws one batch per
client and round in NumPy).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_ditto import attacks
from tff_ditto import batch_streams as batch_streams_lib
from tff_ditto import client_data_schema
from tff_ditto import client_states
from tff_ditto import sampling
from tff_ditto import split_evaluation
from tff_ditto.data import FederatedDataset
from tff_ditto.training_config import ExperimentConfig


def eval_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int
) -> tf.data.Dataset:
  """All of a client's examples of one split, in order, in batches.

  Args:
    arrays: The client's arrays of the split.
    batch_size: The batch size (the last batch is partial).

  Returns:
    The dataset of batches.
  """
  return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)


def state_handle_dataset(
    handle: client_states.ClientStateHandle,
) -> tf.data.Dataset:
  """A client's state handle as the one-element dataset TFF clients read.

  Args:
    handle: The read and write paths of the client's state file.

  Returns:
    A dataset of one `OrderedDict(read_path, write_path)`.
  """
  return tf.data.Dataset.from_tensors(
      collections.OrderedDict(
          read_path=handle.read_path, write_path=handle.write_path
      )
  )


@dataclasses.dataclass(frozen=True)
class ClientDataFields:
  """What each sampled client's data of a training round holds.

  Attributes:
    batches_per_round: Training batches the client takes per round (what its
      'reference' batch stream advances by).
    personal_state: Its state-file handle (`client_data_schema.STATE_KEY`).
    attack: Its attack instruction (`client_data_schema.ATTACK_KEY`).
    validation: Batches of its whole validation split
      (`client_data_schema.VALIDATION_KEY`).
    full_train: Batches of its whole training set (`client_data_schema.FULL_TRAIN_KEY`).
    num_train_examples: Its training-set size, one float32
      (`client_data_schema.NUM_TRAIN_EXAMPLES_KEY`).
    always_struct: With no entry but the batches, still send a struct of
      them (the baselines' client data type); False sends the batches alone
      (`ditto.client_data_type`).
    malicious_personal_training: Malicious clients train their personal
      models; False sends them a state handle without a write path, so
      that they train only the global model (Ditto's client,
      `ditto_client.trains_personal_models`).
  """

  batches_per_round: int
  personal_state: bool = False
  attack: bool = False
  validation: bool = False
  full_train: bool = False
  num_train_examples: bool = False
  always_struct: bool = False
  malicious_personal_training: bool = True

  @property
  def batches_only(self) -> bool:
    """Whether a client's data are its batches alone, not a struct."""
    return not (
        self.personal_state
        or self.attack
        or self.validation
        or self.full_train
        or self.num_train_examples
        or self.always_struct
    )


class RoundDataBuilder:
  """Builds the clients' data of a run's rounds and evaluations.

  Attributes:
    config: The run's (effective) config.
    dataset: The run's dataset (labels already poisoned by a data attack).
    batch_streams: The clients' training batch streams; their positions are
      part of the run's checkpoints.
    malicious: bool [clients], the malicious clients.
    store: The clients' state files, or None for a method without.
    attack_code: The update attack's code (0: none), sent to malicious
      clients.
    num_train_examples: int [clients], each client's training-set size.
  """

  def __init__(
      self,
      config: ExperimentConfig,
      dataset: FederatedDataset,
      batch_streams: batch_streams_lib.ClientBatchStreams,
      malicious: np.ndarray,
      store: Optional[client_states.FileClientStateStore] = None,
  ):
    """Creates the builder of one run.

    Args:
      config: The run's (effective) config.
      dataset: The run's dataset.
      batch_streams: The clients' training batch streams.
      malicious: bool [clients], the malicious clients.
      store: The clients' state files, or None.
    """
    self.config = config
    self.dataset = dataset
    self.batch_streams = batch_streams
    self.malicious = malicious
    self.store = store
    self.attack_code = attacks.update_attack_code(
        attacks.canonical_attack_name(config.attack)
    )
    self.num_train_examples = dataset.num_train_examples()
    self._client_splits: dict[str, split_evaluation.ClientSplit] = {}

  # ------------------------------------------------------- a training round

  def frozen_clients(
      self, client_indices: Sequence[int], fields: ClientDataFields
  ) -> list[int]:
    """The sampled clients whose personal models stay as they are this round.

    Args:
      client_indices: The round's sampled clients.
      fields: What their data hold.

    Returns:
      The malicious ones when `fields.malicious_personal_training` is False,
      else none (in the order given).
    """
    if fields.malicious_personal_training:
      return []
    return [index for index in client_indices if self.malicious[index]]

  def client_data(
      self,
      round_num: int,
      client_indices: Sequence[int],
      fields: ClientDataFields,
  ) -> list:
    """The sampled clients' data of a round; moves their batch streams on.

    Args:
      round_num: The round.
      client_indices: The sampled clients, in the order the process gets
        them.
      fields: What each client's data holds.

    Returns:
      Per client, its batches alone (`fields.batches_only`), else an
      `OrderedDict` of the entries `fields` names.
    """
    client_ids = self.dataset.client_ids
    batches = [
        self.training_batches(round_num, int(index), fields.batches_per_round)
        for index in client_indices
    ]
    if fields.batches_only:
      return batches
    client_data = [
        collections.OrderedDict(
            [(client_data_schema.BATCHES_KEY, client_batches)]
        )
        for client_batches in batches
    ]
    if fields.personal_state:
      handles = self.store.handles(
          client_indices,
          round_num,
          frozen=self.frozen_clients(client_indices, fields),
      )
      for data, handle in zip(client_data, handles):
        data[client_data_schema.STATE_KEY] = state_handle_dataset(handle)
    if fields.attack:
      for data, index in zip(client_data, client_indices):
        data[client_data_schema.ATTACK_KEY] = self.attack_instruction(
            round_num, int(index)
        )
    if fields.validation:
      for data, index in zip(client_data, client_indices):
        data[client_data_schema.VALIDATION_KEY] = eval_batches(
            self.dataset.validation[client_ids[index]],
            self.config.eval_batch_size,
        )
    if fields.full_train:
      for data, index in zip(client_data, client_indices):
        data[client_data_schema.FULL_TRAIN_KEY] = eval_batches(
            self.dataset.train[client_ids[index]],
            self.config.eval_batch_size,
        )
    if fields.num_train_examples:
      for data, index in zip(client_data, client_indices):
        data[client_data_schema.NUM_TRAIN_EXAMPLES_KEY] = (
            tf.data.Dataset.from_tensors(
                np.float32(self.num_train_examples[index])
            )
        )
    return client_data

  def training_batches(
      self, round_num: int, client_index: int, count: int
  ) -> tf.data.Dataset:
    """A client's training batches of a round; moves its stream on.

    Args:
      round_num: The round.
      client_index: The client's index in the dataset.
      count: Batches the method takes.

    Returns:
      The dataset of batches (`ClientBatchStreams.round_batches`).
    """
    return self.batch_streams.round_batches(
        round_num,
        client_index,
        self.dataset.train[self.dataset.client_ids[client_index]],
        count,
    )

  def attack_instruction(
      self, round_num: int, client_index: int
  ) -> tf.data.Dataset:
    """A client's attack instruction of a round.

    Args:
      round_num: The round.
      client_index: The client's index in the dataset.

    Returns:
      A dataset of one `OrderedDict(code, scale, seed)`: the update attack's
      code for a malicious client (0 for a benign one), clients_per_round
      and (round's attack seed, client index).
    """
    code = self.attack_code if self.malicious[client_index] else 0
    return tf.data.Dataset.from_tensors(
        collections.OrderedDict(
            code=np.int32(code),
            scale=np.float32(self.config.clients_per_round),
            seed=np.array(
                [
                    sampling.client_seed(
                        self.config.seed, sampling.ATTACK_STREAM, round_num
                    ),
                    client_index,
                ],
                np.int64,
            ),
        )
    )

  # ------------------------------------------------------------ evaluations

  def split_batches(self, client_index: int, split: str) -> tf.data.Dataset:
    """A client's whole `split` ('train', 'validation', 'test') in batches.

    Args:
      client_index: The client's index in the dataset.
      split: The split.

    Returns:
      `eval_batches` of it, with the evaluation batch size.
    """
    arrays = getattr(self.dataset, split)
    return eval_batches(
        arrays[self.dataset.client_ids[client_index]],
        self.config.eval_batch_size,
    )

  def client_split(self, split: str) -> split_evaluation.ClientSplit:
    """Every client's `split` ('test' or 'validation'), built once.

    Args:
      split: The split.

    Returns:
      The argument of the split evaluations (`tff_ditto.split_evaluation`).
    """
    if split not in self._client_splits:
      arrays = getattr(self.dataset, split)
      self._client_splits[split] = split_evaluation.client_split(
          [arrays[c] for c in self.dataset.client_ids],
          self.config.eval_batch_size,
      )
    return self._client_splits[split]

  def finetune_batches(self, client_index: int, count: int) -> tf.data.Dataset:
    """`count` fine-tuning batches of a client's training set.

    Args:
      client_index: The client's index in the dataset.
      count: Batches.

    Returns:
      `ClientBatchStreams.finetune_batches` (a stream of their own).
    """
    return self.batch_streams.finetune_batches(
        client_index,
        self.dataset.train[self.dataset.client_ids[client_index]],
        count,
    )

  def evaluation_state_handle(self, client_index: int) -> tf.data.Dataset:
    """A client's current state file to read, nothing to write.

    Args:
      client_index: The client's index in the dataset.

    Returns:
      `state_handle_dataset` of its current version and an empty write path.
    """
    return state_handle_dataset(
        client_states.ClientStateHandle(self.store.read_path(client_index), '')
    )

  def state_read_paths(self) -> np.ndarray:
    """Every client's current state file, an object array [clients]."""
    return np.array(
        [self.store.read_path(i) for i in range(self.dataset.num_clients)],
        dtype=object,
    )
