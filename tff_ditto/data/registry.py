"""One entry point for every dataset: `load_dataset(name, data_dir, ...)`.

Names:
  synthetic              Synthetic(1, 1), generated in memory (data_dir ignored)
  synthetic_<a>_<b>      Synthetic(a, b), e.g. 'synthetic_0.5_0.5'
  femnist                LEAF FEMNIST JSON
  celeba                 LEAF CelebA JSON + img_align_celeba images
  vehicle                Ditto Vehicle JSON (test carved if test/ is absent)
  leaf_synthetic         LEAF / FedProx synthetic JSON
  fmnist                 Fashion-MNIST, Ditto's 500-device partition
  emnist                 TFF Federated EMNIST (emnist_all.sqlite, 62 classes)
  tff_celeba             TFF CelebA (celeba.sqlite), Smiling

For the LEAF datasets `data_dir` is either the dataset folder (holding
`train/`) or a parent holding a folder named after the dataset (also tried:
`<parent>/<name>/data`, LEAF's own layout). For 'fmnist' it is the folder
with the idx / npz / TFDS files or a parent with `fmnist/` or
`fashion_mnist/`. For 'emnist' / 'tff_celeba' it is TFF's cache folder with
the .sqlite file (default ~/.tff), or a parent with an `emnist/` or
`celeba/` folder holding it.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from tff_ditto.data import fashion_mnist
from tff_ditto.data import leaf
from tff_ditto.data import synthetic
from tff_ditto.data import tff_datasets
from tff_ditto.data.errors import DataError
from tff_ditto.data.federated_dataset import FederatedDataset

DATASET_NAMES = (
    'synthetic',
    'femnist',
    'celeba',
    'vehicle',
    'leaf_synthetic',
    'fmnist',
    'emnist',
    'tff_celeba',
)

_NUMBER = r'(\d+(?:\.\d+)?|\.\d+)'
_SYNTHETIC_PATTERN = re.compile(rf'^synthetic_{_NUMBER}_{_NUMBER}$')

# Folder names tried under a parent data_dir, per dataset.
_FOLDER_NAMES = {
    'femnist': ('femnist',),
    'celeba': ('celeba',),
    'vehicle': ('vehicle',),
    'leaf_synthetic': ('leaf_synthetic', 'synthetic'),
    'fmnist': ('fmnist', 'fashion_mnist', 'fashion-mnist'),
    'emnist': ('emnist',),
    'tff_celeba': ('tff_celeba', 'celeba'),
}


def parse_synthetic_name(name: str) -> Optional[tuple[float, float]]:
  """(alpha, beta) for 'synthetic' / 'synthetic_<a>_<b>', else None."""
  if name == 'synthetic':
    return (1.0, 1.0)
  match = _SYNTHETIC_PATTERN.match(name)
  if match is None:
    return None
  return float(match.group(1)), float(match.group(2))


def _need_dir(name: str, data_dir: Optional[str]) -> str:
  if data_dir is None:
    raise DataError(
        f'Dataset {name!r} needs data_dir (see '
        'leaf_data/README.md for how to obtain it).'
    )
  if not os.path.isdir(data_dir):
    raise DataError(f'{data_dir}: data directory for {name!r} not found.')
  return data_dir


def resolve_leaf_dir(name: str, data_dir: str) -> str:
  """The folder holding train/ for a LEAF dataset (see module docstring)."""
  data_dir = _need_dir(name, data_dir)
  if os.path.isdir(os.path.join(data_dir, 'train')):
    return data_dir
  tried = [os.path.join(data_dir, 'train')]
  for folder in _FOLDER_NAMES[name]:
    for candidate in (
        os.path.join(data_dir, folder),
        os.path.join(data_dir, folder, 'data'),
    ):
      if os.path.isdir(os.path.join(candidate, 'train')):
        return candidate
      tried.append(os.path.join(candidate, 'train'))
  raise DataError(
      f'No {name} LEAF data under {data_dir}: looked for '
      + ', '.join(tried)
      + '.'
  )


def _resolve_fmnist_dir(data_dir: str) -> str:
  data_dir = _need_dir('fmnist', data_dir)
  if fashion_mnist.detect_source(data_dir) is not None:
    return data_dir
  for folder in _FOLDER_NAMES['fmnist']:
    candidate = os.path.join(data_dir, folder)
    if os.path.isdir(candidate) and fashion_mnist.detect_source(candidate):
      return candidate
  return data_dir  # load_fashion_mnist raises a DataError naming it.


def _resolve_sqlite_dir(
    name: str, data_dir: Optional[str], filename: str
) -> Optional[str]:
  if data_dir is None:
    return None  # TFF's default cache folder.
  if os.path.isfile(os.path.join(data_dir, filename)):
    return data_dir
  for folder in _FOLDER_NAMES[name]:
    candidate = os.path.join(data_dir, folder)
    if os.path.isfile(os.path.join(candidate, filename)):
      return candidate
  return data_dir  # the loader raises a DataError naming the expected path.


def load_dataset(
    name: str,
    data_dir: Optional[str] = None,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Loads a dataset by name (see module docstring).

  Args:
    name: One of DATASET_NAMES, or 'synthetic_<alpha>_<beta>'.
    data_dir: Where the data is (ignored for 'synthetic*').
    validation_fraction: Fraction of each client's train data held out.
    seed: Seed of the splits (and of the synthetic generator). The
      Fashion-MNIST partition itself always uses Ditto's seed 233.
    max_clients: Keep only the first N sorted client ids.

  Raises:
    ValueError: Unknown name.
    DataError: Missing or bad data.
  """
  kwargs = dict(
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
  )
  synthetic_params = parse_synthetic_name(name)
  if synthetic_params is not None:
    alpha, beta = synthetic_params
    dataset = synthetic.make_synthetic(
        alpha, beta, seed=seed, validation_fraction=validation_fraction
    )
    if max_clients is not None:
      dataset = dataset.subset(dataset.client_ids[:max_clients])
    return dataset
  if name == 'femnist':
    return leaf.load_femnist(resolve_leaf_dir(name, data_dir), **kwargs)
  if name == 'celeba':
    return leaf.load_celeba(resolve_leaf_dir(name, data_dir), **kwargs)
  if name == 'vehicle':
    return leaf.load_vehicle(resolve_leaf_dir(name, data_dir), **kwargs)
  if name == 'leaf_synthetic':
    return leaf.load_leaf_synthetic(resolve_leaf_dir(name, data_dir), **kwargs)
  if name == 'fmnist':
    return fashion_mnist.load_fashion_mnist(
        _resolve_fmnist_dir(data_dir),
        validation_fraction=validation_fraction,
        validation_seed=seed,
        max_clients=max_clients,
    )
  if name == 'emnist':
    return tff_datasets.load_tff_emnist(
        _resolve_sqlite_dir(name, data_dir, tff_datasets.EMNIST_FILENAME),
        **kwargs,
    )
  if name == 'tff_celeba':
    return tff_datasets.load_tff_celeba(
        _resolve_sqlite_dir(name, data_dir, tff_datasets.CELEBA_FILENAME),
        **kwargs,
    )
  raise ValueError(
      f'Unknown dataset {name!r}; valid names: {", ".join(DATASET_NAMES)}, '
      'or synthetic_<alpha>_<beta> (e.g. synthetic_0.5_0.5).'
  )
