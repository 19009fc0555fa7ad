"""Which of the paper's datasets can run from a data directory."""

from __future__ import annotations

import os
from typing import Optional

from tff_ditto.data import fashion_mnist

NOT_RUN_DATASETS = {
    'celeba': (
        'LEAF CelebA needs the img_align_celeba images (not in the '
        'data directory)'
    ),
}


def available_datasets(
    data_dir: Optional[str],
) -> tuple[list[str], dict[str, str]]:
  """Which of the paper's datasets can run from `data_dir`.

  Returns:
    (datasets to run, {dataset: why not} for the others). Synthetic(1, 1)
    replaces the real data only when none of it is present.
  """
  present, absent = [], {}
  base = data_dir or ''
  femnist = os.path.join(base, 'femnist', 'train')
  if data_dir and os.path.isdir(femnist):
    present.append('femnist')
  else:
    absent['femnist'] = f'{femnist} not found'
  vehicle = os.path.join(base, 'vehicle', 'train')
  if data_dir and os.path.isdir(vehicle):
    present.append('vehicle')
  else:
    absent['vehicle'] = f'{vehicle} not found'
  fmnist_source = None
  if data_dir:
    for folder in ('fmnist', 'fashion_mnist', 'fashion-mnist'):
      candidate = os.path.join(base, folder)
      if os.path.isdir(candidate):
        fmnist_source = fashion_mnist.detect_source(candidate)
        if fmnist_source:
          break
  if fmnist_source:
    present.append('fmnist')
  else:
    absent['fmnist'] = 'no Fashion-MNIST raw files (idx or npz) found'
  celeba_images = os.path.join(
      base, 'celeba', 'data', 'raw', 'img_align_celeba'
  )
  if data_dir and os.path.isdir(celeba_images):
    present.append('celeba')
  else:
    absent['celeba'] = NOT_RUN_DATASETS['celeba']
  if not [d for d in present if d != 'celeba']:
    present.append('synthetic')
  return present, absent
