"""Synthetic(alpha, beta) federated data as in FedProx (Li et al., 2020).

For client k (dimension d = 60, C = 10 classes):

    u_k ~ N(0, alpha^2)            shared mean of the model parameters
    B_k ~ N(0, beta^2)             mean of the feature mean
    W_k ~ N(u_k, 1)   [C x d]      b_k ~ N(u_k, 1)   [C]
    v_k ~ N(B_k, 1)   [d]          feature mean
    x   ~ N(v_k, Sigma),  Sigma = diag(j^-1.2), j = 1..d
    y   = argmax(softmax(W_k x + b_k))

(alpha and beta are standard deviations, as in the FedProx code.) beta
controls how much the local feature distributions differ. Note a property of
this construction (FedProx's too): u_k shifts every entry of W_k and b_k by
the same scalar, which adds the same amount to all C logits of an example, so
for fixed draws the labels do not depend on alpha at all; alpha only matters
through which random numbers are drawn. Client sizes are `int(lognormal(size_mean, size_sigma)) + size_offset`
(FedProx: lognormal(4, 2) + 50), capped at `max_examples_per_client` so the
default dataset stays small: 30 clients, about 4,000 examples in total.

This is the embedded default dataset of `run_experiment.py`: it is seeded,
deterministic and takes a few milliseconds to generate. `write_leaf_json`
saves it in the LEAF layout that `leaf.load_leaf_synthetic` reads.
"""

from __future__ import annotations

import collections
import os
from typing import Optional

import numpy as np

from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_test
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays
from tff_ditto.data.leaf import SYNTHETIC_NUM_CLASSES
from tff_ditto.data.leaf import SYNTHETIC_NUM_FEATURES
from tff_ditto.data.leaf_json import write_leaf_split

DEFAULT_TEST_FRACTION = 0.2


def client_id(index: int) -> str:
  return f'f_{index:05d}'


def generate_synthetic_clients(
    alpha: float = 1.0,
    beta: float = 1.0,
    num_clients: int = 30,
    seed: int = 0,
    *,
    num_features: int = SYNTHETIC_NUM_FEATURES,
    num_classes: int = SYNTHETIC_NUM_CLASSES,
    size_mean: float = 4.0,
    size_sigma: float = 2.0,
    size_offset: int = 50,
    max_examples_per_client: Optional[int] = 300,
) -> collections.OrderedDict:
  """Draws every client's full (unsplit) data.

  Returns:
    client id ('f_00000', ...) -> OrderedDict(x=float32 [n, d], y=int32 [n]).
  """
  if num_clients < 1:
    raise ValueError(f'num_clients must be positive, got {num_clients}.')
  if alpha < 0 or beta < 0:
    raise ValueError(f'alpha and beta must be >= 0, got {alpha}, {beta}.')
  rng = np.random.default_rng(seed)
  sizes = rng.lognormal(size_mean, size_sigma, num_clients).astype(np.int64)
  sizes = sizes + size_offset
  if max_examples_per_client is not None:
    sizes = np.minimum(sizes, max_examples_per_client)
  sizes = np.maximum(sizes, 2)
  model_means = rng.normal(0.0, alpha, num_clients)  # u_k
  feature_mean_means = rng.normal(0.0, beta, num_clients)  # B_k
  std = np.power(np.arange(1, num_features + 1, dtype=np.float64), -0.6)
  clients = collections.OrderedDict()
  for k in range(num_clients):
    weights = rng.normal(model_means[k], 1.0, (num_classes, num_features))
    bias = rng.normal(model_means[k], 1.0, num_classes)
    feature_mean = rng.normal(feature_mean_means[k], 1.0, num_features)
    x = feature_mean + std * rng.standard_normal((sizes[k], num_features))
    # argmax of softmax == argmax of the logits.
    y = np.argmax(x @ weights.T + bias, axis=1)
    clients[client_id(k)] = make_client_arrays(
        x.astype(np.float32), y.astype(np.int32)
    )
  return clients


def make_synthetic(
    alpha: float = 1.0,
    beta: float = 1.0,
    num_clients: int = 30,
    seed: int = 0,
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: Optional[int] = None,
    max_examples_per_client: Optional[int] = 300,
    **generator_kwargs,
) -> FederatedDataset:
  """Synthetic(alpha, beta) as a FederatedDataset.

  Args:
    alpha: Std of the per-client model-mean u_k.
    beta: Std of the per-client feature-mean B_k.
    num_clients: Number of clients.
    seed: Seed of the data and (unless `split_seed` is given) of the splits.
    validation_fraction: Fraction of each client's train data held out.
    test_fraction: Fraction of each client's data used as its test split
      (at least one example).
    split_seed: Seed of the test / validation splits; defaults to `seed`.
    max_examples_per_client: Cap on client sizes (None = FedProx sizes).
    **generator_kwargs: Passed to `generate_synthetic_clients`.

  Returns:
    A FederatedDataset named 'synthetic_<alpha>_<beta>'.
  """
  split_seed = seed if split_seed is None else split_seed
  clients = generate_synthetic_clients(
      alpha,
      beta,
      num_clients,
      seed,
      max_examples_per_client=max_examples_per_client,
      **generator_kwargs,
  )
  train, test = carve_test(clients, test_fraction, split_seed)
  train, validation = carve_validation(train, validation_fraction, split_seed)
  num_classes = generator_kwargs.get('num_classes', SYNTHETIC_NUM_CLASSES)
  return FederatedDataset(
      name=f'synthetic_{alpha:g}_{beta:g}',
      train=train,
      validation=validation,
      test=test,
      num_classes=num_classes,
      description=(
          f'Synthetic({alpha:g}, {beta:g}) of FedProx, generated in memory: '
          f'{num_clients} clients, seed {seed}, sizes int(lognormal) + offset '
          f'capped at {max_examples_per_client}; test = {test_fraction:g} and '
          f'validation = {validation_fraction:g} per client (seed '
          f'{split_seed}).'
      ),
  )


def _concat(*parts):
  return collections.OrderedDict(
      (key, np.concatenate([p[key] for p in parts])) for key in parts[0]
  )


def write_leaf_json(
    dataset: FederatedDataset,
    out_dir: str,
    *,
    merge_validation: bool = True,
) -> tuple[str, str]:
  """Writes a dataset in LEAF layout: out_dir/{train,test}/*.json.

  Args:
    dataset: The dataset to write (any categorical dataset with flat
      features works; images are flattened).
    out_dir: Output folder; `train/` and `test/` are created in it.
    merge_validation: Write train + validation as the LEAF train split (the
      loader carves validation again). If False, validation is dropped.

  Returns:
    The paths of the train and test files.
  """
  train = collections.OrderedDict()
  for c in dataset.client_ids:
    if merge_validation:
      train[c] = _concat(dataset.train[c], dataset.validation[c])
    else:
      train[c] = dataset.train[c]
  train_path = os.path.join(out_dir, 'train', 'mytrain.json')
  test_path = os.path.join(out_dir, 'test', 'mytest.json')
  write_leaf_split(train_path, train)
  write_leaf_split(test_path, dataset.test)
  return train_path, test_path
