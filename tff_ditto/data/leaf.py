"""The dataset-specific LEAF loaders: FEMNIST, CelebA, Vehicle, synthetic.

Each reads a LEAF dataset folder (`<dir>/train/*.json` and
`<dir>/test/*.json`; `tff_ditto.data.leaf_json` reads and validates the
files) into a `FederatedDataset` (`load_leaf_json`).

Loaders here:
  * `load_femnist`: 784 floats per example -> float32 [28, 28, 1], 62 classes.
    LEAF convention kept: 1.0 = white background, ink is dark (values near
    0.0). This is the inverse of the usual MNIST convention; TFF's EMNIST
    uses the same convention as LEAF.
  * `load_celeba`: x = image file names, y = Smiling (0/1); images are read
    from an `img_align_celeba` folder, resized to 84x84 RGB, float32 / 255.
  * `load_vehicle`: 100 float features, labels +-1 (scalars or one-element
    lists), returned as float32 with label_kind='signed'. If `test/` is
    absent (the case for the real Ditto Vehicle files) a seeded per-device
    test split is carved from train.
  * `load_leaf_synthetic`: FedProx / LEAF synthetic, 60 features, 10 classes.

All problems with the input raise `DataError` naming the file (and the field
or user) at fault, with any underlying exception as its `__cause__`.

The reader's names (`read_leaf_split`, `RawUser`, `Converter`,
`float_features`, `int_labels`, `signed_labels`, `write_leaf_split`) and
`carve_test` stay importable from here.
"""

from __future__ import annotations

import collections
import os
from typing import Optional

import numpy as np

from tff_ditto.data.errors import DataError
from tff_ditto.data.errors import file_error
from tff_ditto.data.federated_dataset import FederatedDataset
from tff_ditto.data.federated_dataset import carve_test
from tff_ditto.data.federated_dataset import carve_validation
from tff_ditto.data.federated_dataset import make_client_arrays
from tff_ditto.data.leaf_json import Converter
from tff_ditto.data.leaf_json import RawUser
from tff_ditto.data.leaf_json import float_features
from tff_ditto.data.leaf_json import int_labels
from tff_ditto.data.leaf_json import read_leaf_split
from tff_ditto.data.leaf_json import signed_labels
from tff_ditto.data.leaf_json import write_leaf_split  # pylint: disable=unused-import

FEMNIST_NUM_CLASSES = 62
FEMNIST_IMAGE_SHAPE = (28, 28, 1)
CELEBA_IMAGE_SIZE = 84
VEHICLE_NUM_FEATURES = 100
SYNTHETIC_NUM_FEATURES = 60
SYNTHETIC_NUM_CLASSES = 10
DEFAULT_VEHICLE_TEST_FRACTION = 0.25


def _femnist_converter(x, y, path, user):
  features = float_features(x, 784, path, user)
  return (
      features.reshape((-1,) + FEMNIST_IMAGE_SHAPE),
      int_labels(y, FEMNIST_NUM_CLASSES, path, user),
  )


def _vehicle_converter(x, y, path, user):
  return (
      float_features(x, VEHICLE_NUM_FEATURES, path, user),
      signed_labels(y, path, user),
  )


def _synthetic_converter(x, y, path, user):
  return (
      float_features(x, SYNTHETIC_NUM_FEATURES, path, user),
      int_labels(y, SYNTHETIC_NUM_CLASSES, path, user),
  )


def load_leaf_json(
    data_dir: str,
    converter: Converter,
    *,
    name: str,
    num_classes: int,
    label_kind: str = 'categorical',
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
    carve_test_fraction_if_missing: Optional[float] = None,
    description: str = '',
) -> FederatedDataset:
  """Loads a LEAF dataset folder (`train/` and `test/`) into a FederatedDataset.

  Args:
    data_dir: Folder holding `train/*.json` and `test/*.json`.
    converter: (x, y, path, user) -> (x array, y array), validating.
    name: Dataset name for the result and messages.
    num_classes: Number of classes.
    label_kind: 'categorical' or 'signed'.
    validation_fraction: Fraction of each client's train data held out as
      validation (see `carve_validation`).
    seed: Seed of the validation (and carved test) splits.
    max_clients: If set, keep only the first `max_clients` sorted client ids
      (the other users are structurally checked but not converted).
    carve_test_fraction_if_missing: If set and `test/` does not exist, carve
      this fraction of each client's train data as its test split instead of
      failing.
    description: Provenance text; deviations are appended.

  Returns:
    A FederatedDataset with clients in sorted id order.

  Raises:
    DataError: For any missing, malformed or inconsistent input.
  """
  if not os.path.isdir(data_dir):
    raise DataError(f'{data_dir}: {name} data directory not found.')
  train_dir = os.path.join(data_dir, 'train')
  test_dir = os.path.join(data_dir, 'test')
  if not os.path.isdir(train_dir):
    raise DataError(
        f'{train_dir}: directory not found ({name} needs '
        f'{data_dir}/train/*.json and {data_dir}/test/*.json).'
    )
  raw_train = read_leaf_split(train_dir)
  carve = carve_test_fraction_if_missing is not None and not os.path.isdir(
      test_dir
  )
  if carve:
    raw_test = None
  else:
    raw_test = read_leaf_split(test_dir)
    for u in sorted(raw_test):
      if u not in raw_train:
        raise file_error(
            raw_test[u].path,
            f'user {u!r} is in the test split but '
            f'not in any train file under {train_dir}.',
        )
    for u in sorted(raw_train):
      if u not in raw_test:
        raise file_error(
            raw_train[u].path,
            f'user {u!r} is in the train split but '
            f'not in any test file under {test_dir}.',
        )

  client_ids = sorted(raw_train)
  if max_clients is not None:
    if max_clients < 1:
      raise ValueError(f'max_clients must be positive, got {max_clients}.')
    client_ids = client_ids[:max_clients]

  def convert(raw: dict[str, RawUser]) -> collections.OrderedDict:
    out = collections.OrderedDict()
    for u in client_ids:
      r = raw[u]
      x, y = converter(r.x, r.y, r.path, u)
      out[u] = make_client_arrays(x, y)
    return out

  train = convert(raw_train)
  notes = [description] if description else []
  if carve:
    for u, arrays in train.items():
      if arrays['y'].shape[0] < 2:
        raise file_error(
            raw_train[u].path,
            f'user {u!r} has '
            f'{arrays["y"].shape[0]} example; at least 2 are needed to '
            f'carve its test split ({test_dir} is absent).',
        )
    train, test = carve_test(train, carve_test_fraction_if_missing, seed)
    notes.append(
        f"DEVIATION: {test_dir} is absent, so each client's test split was "
        f'carved from its train data ({carve_test_fraction_if_missing:.0%} '
        f'per client, at least 1 example, seed {seed}).'
    )
  else:
    test = convert(raw_test)
  train, validation = carve_validation(train, validation_fraction, seed)
  notes.append(
      f'Read from {os.path.abspath(data_dir)}; validation = '
      f"{validation_fraction:g} of each client's train data "
      f'(seed {seed}).'
  )
  if max_clients is not None:
    notes.append(
        f'Restricted to the first {len(client_ids)} sorted client '
        'ids (max_clients).'
    )
  return FederatedDataset(
      name=name,
      train=train,
      validation=validation,
      test=test,
      num_classes=num_classes,
      label_kind=label_kind,
      description=' '.join(notes),
  )


def load_femnist(
    data_dir: str,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Loads LEAF FEMNIST: x float32 [n, 28, 28, 1], y int32 in [0, 62).

  Pixels keep the LEAF convention: values in [0, 1] with 1.0 = white
  background and dark ink. Labels: 0-9 digits, 10-35 'A'-'Z', 36-61 'a'-'z'.
  """
  return load_leaf_json(
      data_dir,
      _femnist_converter,
      name='femnist',
      num_classes=FEMNIST_NUM_CLASSES,
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
      description=(
          'LEAF FEMNIST (per-writer split; pixels in [0, 1], 1.0 = background).'
      ),
  )


def load_vehicle(
    data_dir: str,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
    test_fraction: float = DEFAULT_VEHICLE_TEST_FRACTION,
) -> FederatedDataset:
  """Loads the Ditto / q-FFL Vehicle data: x float32 [n, 100], y float32 +-1.

  Labels may be stored as scalars or one-element lists ([-1] / [1]). If
  `<data_dir>/test` is absent (the test split of the real data is lost, see
  leaf_data/README.md), each sensor's test split is carved from its train
  data: `test_fraction` of it, at least one example, seeded by `seed`; the
  deviation is recorded in `description`.
  """
  return load_leaf_json(
      data_dir,
      _vehicle_converter,
      name='vehicle',
      num_classes=2,
      label_kind='signed',
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
      carve_test_fraction_if_missing=test_fraction,
      description='Vehicle sensor network (23 sensors, labels +-1).',
  )


def load_leaf_synthetic(
    data_dir: str,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Loads LEAF / FedProx synthetic JSON: x float32 [n, 60], y int32 [0, 10)."""
  return load_leaf_json(
      data_dir,
      _synthetic_converter,
      name='leaf_synthetic',
      num_classes=SYNTHETIC_NUM_CLASSES,
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
      description='LEAF/FedProx synthetic data read from JSON.',
  )


def celeba_image_dir_candidates(
    data_dir: str, images_dir: Optional[str] = None
) -> list[str]:
  """Where `load_celeba` looks for `img_align_celeba`, in order."""
  if images_dir is not None:
    return [images_dir]
  return [
      os.path.join(data_dir, 'raw', 'img_align_celeba'),
      os.path.join(data_dir, 'img_align_celeba'),
      os.path.join(
          os.path.dirname(os.path.abspath(data_dir)), 'raw', 'img_align_celeba'
      ),
  ]


def _read_image(path: str) -> np.ndarray:
  """Reads an image file as float32 [84, 84, 3] in [0, 1]."""
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover - PIL is installed in the venv.
    Image = None
  if Image is not None:
    with Image.open(path) as img:
      img = img.convert('RGB').resize(
          (CELEBA_IMAGE_SIZE, CELEBA_IMAGE_SIZE), Image.Resampling.BILINEAR
      )
      array = np.asarray(img, dtype=np.float32)
  else:  # pragma: no cover
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    array = (
        tf.image.resize(
            image, (CELEBA_IMAGE_SIZE, CELEBA_IMAGE_SIZE), antialias=True
        )
        .numpy()
        .astype(np.float32)
    )
    array = np.clip(np.round(array), 0, 255)
  return array / np.float32(255.0)


def load_celeba(
    data_dir: str,
    images_dir: Optional[str] = None,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_clients: Optional[int] = None,
) -> FederatedDataset:
  """Loads LEAF CelebA (Smiling): x float32 [n, 84, 84, 3] in [0, 1], y 0/1.

  LEAF CelebA JSON has x = image file names and y = the Smiling attribute.
  Images are read from `images_dir`, or else from the first existing of
  `<data_dir>/raw/img_align_celeba` (LEAF's layout), `<data_dir>/
  img_align_celeba`, `<data_dir>/../raw/img_align_celeba`, converted to RGB,
  resized to 84x84 (bilinear, PIL) and divided by 255. All images are held in
  memory (about 85 KB per image as float32).
  """
  candidates = celeba_image_dir_candidates(data_dir, images_dir)
  found = next((c for c in candidates if os.path.isdir(c)), None)
  if found is None:
    raise DataError(
        'CelebA image directory (img_align_celeba) not found; looked in: '
        + ', '.join(candidates)
        + '. Download img_align_celeba from the '
        'CelebA site (see leaf_data/README.md) or pass images_dir.'
    )

  def converter(x, y, path, user):
    if not all(isinstance(name, str) for name in x):
      raise file_error(
          path, f'user {user!r}: CelebA x must be image file names.'
      )
    images = np.empty(
        (len(x), CELEBA_IMAGE_SIZE, CELEBA_IMAGE_SIZE, 3), np.float32
    )
    for i, image_name in enumerate(x):
      image_path = os.path.join(found, image_name)
      if not os.path.isfile(image_path):
        raise file_error(path, f'user {user!r}: image {image_path} not found.')
      try:
        images[i] = _read_image(image_path)
      except Exception as e:  # pylint: disable=broad-except
        raise file_error(
            path, f'user {user!r}: cannot decode image {image_path} ({e}).'
        ) from e
    return images, int_labels(y, 2, path, user)

  return load_leaf_json(
      data_dir,
      converter,
      name='celeba',
      num_classes=2,
      validation_fraction=validation_fraction,
      seed=seed,
      max_clients=max_clients,
      description=(
          f'LEAF CelebA, Smiling task; images from {found} resized '
          'to 84x84x3, float32 in [0, 1].'
      ),
  )
