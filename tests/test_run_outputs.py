"""A run's TFF-native outputs: TensorBoard scalars and the curves PNG.

Tiny real runs (the first 6 clients of the embedded Synthetic(1, 1) data):
the event file under `<output_dir>/tensorboard/` holds every round's finite
numeric metrics at step = round, equal to `metrics.csv`'s, and
`<output_dir>/curves.png` is a PNG of the run's curves.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import math
import os

from matplotlib import image as image_lib
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tff_ditto import run_curves
from tff_ditto import run_outputs
from tff_ditto import training
from tff_ditto import training_config

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _run(dataset, model_fn, output_dir, **overrides):
  values = dict(
      rounds=3,
      clients_per_round=3,
      local_steps=2,
      batch_size=10,
      eval_every=2,
      checkpoint_every=0,
      seed=0,
  )
  values.update(overrides)
  runner = training.ExperimentRunner(
      training_config.ExperimentConfig(**values),
      dataset,
      model_fn,
      str(output_dir),
      log_fn=None,
  )
  runner.run()
  return runner


def _scalar_events(output_dir) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of every event file under `tensorboard/`."""
  found = collections.defaultdict(dict)
  paths = glob.glob(
      os.path.join(
          output_dir, run_outputs.TENSORBOARD_DIRECTORY, 'events.out.tfevents.*'
      )
  )
  assert paths, 'no event file'
  for path in paths:
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        found[value.tag][event.step] = float(tf.make_ndarray(value.tensor))
  return dict(found)


@pytest.fixture(scope='module')
def runs(tmp_path_factory, synthetic_six_clients, synthetic_model_fn):
  root = tmp_path_factory.mktemp('run_outputs')
  return {
      method: _run(
          synthetic_six_clients,
          synthetic_model_fn,
          root / method,
          method=method,
      )
      for method in ('global', 'ditto')
  }


@pytest.mark.parametrize('method', ['global', 'ditto'])
def test_tensorboard_holds_every_rounds_metrics(runs, method):
  runner = runs[method]
  metrics = pd.read_csv(os.path.join(runner.output_dir, 'metrics.csv'))
  events = _scalar_events(runner.output_dir)
  assert 'round' not in events  # the step
  for column in metrics.columns.drop('round'):
    present = metrics[column].notna()
    if not present.any():  # e.g. a global run's personal train loss
      assert column not in events, column
      continue
    expected = {
        int(r): float(np.float32(v))
        for r, v in zip(metrics['round'][present], metrics[column][present])
    }
    assert events[column] == expected, column
  assert set(events['global_train_loss']) == {0, 1, 2}
  assert set(events['benign_mean_accuracy']) == {1, 2}  # evaluated rounds
  if method == 'ditto':
    assert set(events['personal_train_loss']) == {0, 1, 2}
    assert 'global_model_benign_mean_accuracy' in events
  else:
    assert 'personal_train_loss' not in events


@pytest.mark.parametrize('method', ['global', 'ditto'])
def test_curves_png_is_written(runs, method):
  path = os.path.join(runs[method].output_dir, run_outputs.CURVES_FILE)
  with open(path, 'rb') as f:
    assert f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
  height, width, _ = image_lib.imread(path).shape
  assert (width, height) == (1000, 380)
  assert not [
      name for name in os.listdir(runs[method].output_dir) if '.tmp' in name
  ]


def test_a_resumed_run_continues_the_event_steps(
    tmp_path, synthetic_six_clients, synthetic_model_fn
):
  first = _run(
      synthetic_six_clients,
      synthetic_model_fn,
      tmp_path / 'run',
      method='global',
      rounds=2,
      checkpoint_every=1,
  )
  config = dataclasses.replace(first.config, rounds=4)
  resumed = training.ExperimentRunner(
      config,
      synthetic_six_clients,
      synthetic_model_fn,
      first.output_dir,
      resume=True,
      log_fn=None,
  )
  resumed.run()
  events = _scalar_events(first.output_dir)
  assert set(events['global_train_loss']) == {0, 1, 2, 3}
  metrics = pd.read_csv(os.path.join(first.output_dir, 'metrics.csv'))
  assert list(metrics['round']) == [0, 1, 2, 3]


def test_finite_scalars_keeps_numbers_only():
  row = collections.OrderedDict(
      round=3,
      seconds=0.5,
      loss=np.float32(1.5),
      count=np.int64(2),
      flag=True,
      missing=math.nan,
      infinite=-math.inf,
      name='ditto',
      vector=np.zeros([2]),
  )
  assert run_outputs.finite_scalars(row) == dict(
      seconds=0.5, loss=np.float32(1.5), count=np.int64(2), flag=True
  )


def test_plot_curves_leaves_out_what_a_run_lacks():
  metrics = pd.DataFrame(
      dict(
          round=[0, 1, 2],
          global_train_loss=[2.0, 1.5, 1.2],
          personal_train_loss=[math.nan] * 3,
          benign_mean_accuracy=[math.nan, 0.5, 0.6],
      )
  )
  figure = run_curves.plot_curves(metrics, 'title')
  loss_axes, accuracy_axes = figure.axes
  assert [line.get_label() for line in loss_axes.get_lines()] == [
      'global model, train'
  ]
  assert [line.get_label() for line in accuracy_axes.get_lines()] == [
      'benign, mean over clients'
  ]
  np.testing.assert_array_equal(
      accuracy_axes.get_lines()[0].get_xdata(), [2, 3]
  )
