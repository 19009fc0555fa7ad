"""The threat model: which clients are malicious and what they do.

A fixed malicious set is chosen once per run (`choose_malicious_clients`,
seeded as the Ditto reference code does). What malicious clients do:

Data attacks (applied to their training labels, never to validation/test):
* A1 `label_poison` (Ditto): FEMNIST / Fashion-MNIST random labels, binary
  tasks (CelebA) 1 - y, Vehicle -y.
* `label_flip` (bucketing paper): C - 1 - y (binary: 1 - y, signed: -y).

Update attacks, run inside the client computation of every method on the
malicious client's own update (codes in `UPDATE_ATTACK_CODES`,
`apply_update_attack`):
* A2 `random_update`: send N(0, sigma^2), sigma = std of its own update.
* A3 `model_replacement`: send its update scaled by clients_per_round.
* `bit_flip` (bucketing paper): send the negated update.
In the reference-compatible mode (default, as the Ditto code) A2/A3/bit-flip
clients also train on poisoned (A1) labels.

Omniscient attacks (bucketing paper), which need the honest clients' updates
of the round, are a server-side simulation hook:
`tff_ditto.aggregators.omniscient` (ALIE, IPM, mimic).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tff_ditto.data import FederatedDataset

# The attack names (defined in `tff_ditto.names`).
from tff_ditto.names import ATTACK_ALIASES
from tff_ditto.names import ATTACKS
from tff_ditto.names import DATA_ATTACKS
from tff_ditto.names import NO_ATTACK
from tff_ditto.names import OMNISCIENT_ATTACKS
from tff_ditto.names import UPDATE_ATTACKS

# Codes understood by the client computations (`apply_update_attack`).
UPDATE_ATTACK_CODES = collections.OrderedDict(
    none=0,
    random_update=1,
    model_replacement=2,
    bit_flip=3,
    omniscient=4,  # honest training, marked for the server-side hook
)


def canonical_attack_name(name: str) -> str:
  """Maps paper aliases (a1, a2, a3) to names; raises on unknown names."""
  name = ATTACK_ALIASES.get(name.lower(), name.lower())
  if name not in ATTACKS:
    raise ValueError(
        f'unknown attack {name!r}; choose from {ATTACKS} or a1/a2/a3'
    )
  return name


def choose_malicious_clients(
    num_clients: int, attack_ratio: float, seed: int
) -> np.ndarray:
  """The fixed malicious set: int(ratio * N) clients, as the reference.

  The reference draws `np.random.seed(1234567 + seed)` then
  `np.random.choice(N, num_corrupted, replace=False)`; this reproduces it.

  Returns:
    Sorted indices of malicious clients.
  """
  if not 0.0 <= attack_ratio < 1.0:
    raise ValueError(f'attack_ratio must be in [0, 1), got {attack_ratio}')
  count = int(attack_ratio * num_clients)
  if count == 0:
    return np.zeros([0], np.int64)
  rng = np.random.RandomState(1234567 + seed)
  return np.sort(rng.choice(num_clients, count, replace=False))


def _poisoned_labels(
    labels: np.ndarray,
    dataset: FederatedDataset,
    mode: str,
    rng: np.random.Generator,
) -> np.ndarray:
  if dataset.label_kind == 'signed':
    return -labels
  if dataset.num_classes == 2:
    return (1 - labels).astype(labels.dtype)
  if mode == 'label_flip':
    return (dataset.num_classes - 1 - labels).astype(labels.dtype)
  return rng.integers(0, dataset.num_classes, size=labels.shape).astype(
      labels.dtype
  )


def poison_training_labels(
    dataset: FederatedDataset,
    malicious_client_indices: np.ndarray,
    mode: str = 'label_poison',
    seed: int = 0,
) -> FederatedDataset:
  """Returns the dataset with the malicious clients' train labels poisoned.

  Args:
    dataset: The clean dataset.
    malicious_client_indices: Indices into `dataset.client_ids`.
    mode: 'label_poison' (A1: random / 1-y / -y) or 'label_flip'
      (C-1-y / 1-y / -y).
    seed: Seeds the random labels.

  Returns:
    A new FederatedDataset; validation and test splits are unchanged.
  """
  if mode not in DATA_ATTACKS:
    raise ValueError(f'mode must be one of {DATA_ATTACKS}, got {mode!r}')
  train = collections.OrderedDict(dataset.train)
  client_ids = dataset.client_ids
  for index in malicious_client_indices:
    client_id = client_ids[int(index)]
    rng = np.random.default_rng([seed, 7, int(index)])
    arrays = train[client_id]
    train[client_id] = collections.OrderedDict(
        x=arrays['x'],
        y=_poisoned_labels(arrays['y'], dataset, mode, rng),
    )
  return dataclasses.replace(dataset, train=train)


def attacked_dataset(
    dataset: FederatedDataset,
    malicious_client_indices: np.ndarray,
    attack: str,
    *,
    poison_labels: bool,
    seed: int,
) -> FederatedDataset:
  """The dataset a run trains on under `attack`.

  Args:
    dataset: The clean dataset.
    malicious_client_indices: Indices into `dataset.client_ids`.
    attack: The run's attack (any name `canonical_attack_name` takes).
    poison_labels: The reference-compatible mode: the malicious clients of
      an update or omniscient attack also train on A1-poisoned labels.
    seed: Seeds the random labels.

  Returns:
    The dataset with the malicious clients' training labels poisoned by a
    data attack (or, with `poison_labels`, by A1 under any other attack),
    else `dataset` itself.
  """
  attack = canonical_attack_name(attack)
  if attack in DATA_ATTACKS:
    return poison_training_labels(
        dataset, malicious_client_indices, attack, seed
    )
  if attack != NO_ATTACK and poison_labels:
    return poison_training_labels(
        dataset, malicious_client_indices, 'label_poison', seed
    )
  return dataset


def update_attack_code(attack: str) -> int:
  """The client-computation code of malicious clients under `attack`."""
  attack = canonical_attack_name(attack)
  if attack in UPDATE_ATTACKS:
    return UPDATE_ATTACK_CODES[attack]
  if attack in OMNISCIENT_ATTACKS:
    return UPDATE_ATTACK_CODES['omniscient']
  return UPDATE_ATTACK_CODES['none']


def apply_update_attack(
    update: Any, weight: tf.Tensor, attack: Mapping[str, tf.Tensor]
) -> tuple[Any, tf.Tensor]:
  """A malicious client's transformation of its honest update (in-graph).

  Codes (`UPDATE_ATTACK_CODES`): 0 honest; 1 A2 random update N(0, sigma^2)
  with sigma the std of its own update's entries; 2 A3 model replacement
  (update * scale); 3 bit flip (-update); 4 honest update marked for the
  omniscient server-side hook by a negative weight.

  Args:
    update: The client's model delta, a structure of float tensors.
    weight: Its scalar aggregation weight.
    attack: The client's instruction `OrderedDict(code, scale, seed)`
      (`tff_ditto.client_data_schema.ATTACK_TYPE`); the noise of A2 is
      drawn with the stateless seed `seed`.

  Returns:
    (the transformed update, the weight: negated for code 4).
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
