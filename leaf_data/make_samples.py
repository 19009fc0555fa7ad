"""Writes the tiny LEAF-format sample files under leaf_data/samples/.

The samples are random data in the exact on-disk formats the loaders read
(they are not real data): a 3-writer FEMNIST sample (two train files, one
test file), a 3-sensor Vehicle sample (labels as one-element lists like the
real file) and a 3-client synthetic sample. Deterministic; run from anywhere:

    python leaf_data/make_samples.py
"""

import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, 'samples')


def _dump(path, user_data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  users = list(user_data)
  blob = {
      'users': users,
      'num_samples': [len(user_data[u]['y']) for u in users],
      'user_data': user_data,
  }
  with open(path, 'w') as f:
    json.dump(blob, f, separators=(',', ':'))


def _femnist_user(rng, n):
  # Mostly background (1.0) with a few dark "ink" pixels, 2 decimals.
  x = np.ones((n, 784))
  ink = rng.random((n, 784)) < 0.15
  x[ink] = np.round(rng.random(int(ink.sum())), 2)
  return {'x': x.tolist(), 'y': rng.integers(0, 62, n).tolist()}


def make_femnist(rng):
  root = os.path.join(SAMPLES, 'femnist')
  train = {
      u: _femnist_user(rng, n)
      for u, n in (('f0000_00', 4), ('f0001_01', 3), ('f0002_02', 3))
  }
  test = {u: _femnist_user(rng, 1) for u in train}
  _dump(
      os.path.join(root, 'train', 'sample_0_train_9.json'),
      {u: train[u] for u in ('f0000_00', 'f0001_01')},
  )
  _dump(
      os.path.join(root, 'train', 'sample_1_train_9.json'),
      {'f0002_02': train['f0002_02']},
  )
  _dump(os.path.join(root, 'test', 'sample_0_test_9.json'), test)


def _features(rng, n, dim, decimals=3):
  return np.round(rng.standard_normal((n, dim)), decimals).tolist()


def make_vehicle(rng):
  root = os.path.join(SAMPLES, 'vehicle')
  sizes = {'f_00000': (8, 3), 'f_00001': (5, 2), 'f_00002': (6, 2)}

  def user(n):
    return {
        'x': _features(rng, n, 100, 2),
        'y': [[int(v)] for v in rng.choice([-1, 1], n)],
    }

  _dump(
      os.path.join(root, 'train', 'mytrain.json'),
      {u: user(n) for u, (n, _) in sizes.items()},
  )
  _dump(
      os.path.join(root, 'test', 'mytest.json'),
      {u: user(m) for u, (_, m) in sizes.items()},
  )


def make_synthetic(rng):
  root = os.path.join(SAMPLES, 'synthetic')
  sizes = {'f_00000': (10, 3), 'f_00001': (6, 2), 'f_00002': (8, 2)}

  def user(n):
    return {'x': _features(rng, n, 60), 'y': rng.integers(0, 10, n).tolist()}

  _dump(
      os.path.join(root, 'train', 'mytrain.json'),
      {u: user(n) for u, (n, _) in sizes.items()},
  )
  _dump(
      os.path.join(root, 'test', 'mytest.json'),
      {u: user(m) for u, (_, m) in sizes.items()},
  )


def main():
  rng = np.random.default_rng(20240101)
  make_femnist(rng)
  make_vehicle(rng)
  make_synthetic(rng)
  total = 0
  for dirpath, _, files in os.walk(SAMPLES):
    for f in sorted(files):
      path = os.path.join(dirpath, f)
      total += os.path.getsize(path)
      print(f'{os.path.relpath(path, HERE)}: {os.path.getsize(path)} bytes')
  print(f'total {total} bytes')


if __name__ == '__main__':
  main()
