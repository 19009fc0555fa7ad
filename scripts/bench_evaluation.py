"""Benchmarks the per-client evaluation against a plain forward pass.

For each dataset, measured in one run on this machine:

  forward_pass  the same test data (every client's test batches, batch size
                `eval_batch_size`) through the personal model and the global
                model, loss and correct predictions summed, in plain
                `tf.function` loops: no TFF, no per-client setup; the faster
                of one loop (intra-op threads) and two loops at once on two
                threads, each over every other client;
  tff_ditto     `ExperimentRunner.evaluate` of a Ditto run with one personal
                model: every client's personal model (read from its state
                file) and the global model, both as TFF computations over
                all clients, the summary and the per-client CSV.

Medians over repeats; ratio = tff_ditto / forward_pass. Results:
results/bench_evaluation.csv and a markdown table on stdout.

  .venv/bin/python scripts/bench_evaluation.py --data_dir=../shared/data
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import os
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

# Imported before app.run: Keras 2.14 fails to build Sequential models eagerly
# when TensorFlow is first imported inside an absl main.
import tensorflow as tf  # noqa: E402

import floor_loops  # noqa: E402  (scripts/floor_loops.py)
from tff_ditto import batch_loops  # noqa: E402
from tff_ditto import experiment_defaults  # noqa: E402
from tff_ditto import models  # noqa: E402
from tff_ditto import round_data  # noqa: E402
from tff_ditto import training  # noqa: E402
from tff_ditto import training_config  # noqa: E402
from tff_ditto.data import load_dataset  # noqa: E402

_DATA_DIR = flags.DEFINE_string(
    'data_dir', '../shared/data', 'Parent of the datasets (femnist/, ...).'
)
_DATASETS = flags.DEFINE_list(
    'datasets', ['femnist', 'synthetic'], 'Datasets to measure.'
)
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Measured repeats per variant.')
_OUTPUT = flags.DEFINE_string(
    'output', 'results/bench_evaluation.csv', 'CSV written with the results.'
)


def _runner(dataset_name: str, data_dir: str, output_dir: str):
  values = experiment_defaults.preset_for(dataset_name)
  values.update(
      method='ditto', rounds=1, eval_every=10**9, checkpoint_every=0, seed=0
  )
  fields = {
      field.name
      for field in dataclasses.fields(training_config.ExperimentConfig)
  }
  config = training_config.ExperimentConfig(
      **{key: value for key, value in values.items() if key in fields}
  )
  dataset = load_dataset(
      dataset_name, data_dir, validation_fraction=0.1, seed=config.seed
  )
  spec = models.get_model_spec(dataset_name, seed=config.seed)
  runner = training.ExperimentRunner(
      config,
      dataset,
      spec.tff_model_fn(),
      output_dir,
      log_fn=None,
  )
  return runner, spec


def _forward_loop(spec):
  """A loop of loss and correct predictions of two models over batches."""
  personal, global_model = spec.keras_model_fn(), spec.keras_model_fn()
  loss_fn = spec.loss_fn()
  metric = spec.metrics_fn()[0]

  @tf.function
  def run(stacked, sizes):
    batches = batch_loops.StackedBatches(stacked, sizes)

    def body(totals, batch):
      for model in (personal, global_model):
        predictions = model(batch['x'], training=False)
        count = tf.cast(tf.shape(batch['y'])[0], tf.float32)
        metric.update_state(batch['y'], predictions)
        totals += tf.stack([loss_fn(batch['y'], predictions) * count, count])
      return totals

    return batches.reduce(tf.zeros([2]), body)

  return run


def measure(dataset_name: str, data_dir: str, repeats: int, output_dir: str):
  """Median seconds of the forward-pass floor and of the evaluation."""
  runner, spec = _runner(dataset_name, data_dir, output_dir)
  runner.run_round(0)
  arrays = runner.dataset.test
  client_batches = [
      floor_loops.client_batches(
          round_data.eval_batches(arrays[client], runner.config.eval_batch_size)
      )
      for client in runner.dataset.client_ids
  ]
  loops = [_forward_loop(spec), _forward_loop(spec)]

  def one_loop():
    floor_loops.one_loop(loops[0], client_batches)

  def two_threads():
    floor_loops.two_threads(loops, client_batches)

  def evaluate():
    runner.evaluate(0)

  times = collections.defaultdict(list)
  for repeat in range(repeats + 1):
    for variant, function in (
        ('forward_pass_one_loop', one_loop),
        ('forward_pass_two_threads', two_threads),
        ('tff_ditto', evaluate),
    ):
      start = time.perf_counter()
      function()
      if repeat:  # The first repeat warms up (tracing, first TFF calls).
        times[variant].append(time.perf_counter() - start)
  medians = {
      variant: float(np.median(values)) for variant, values in times.items()
  }
  medians['forward_pass'] = min(
      medians['forward_pass_one_loop'], medians['forward_pass_two_threads']
  )
  examples = int(sum(int(np.sum(sizes)) for _, sizes in client_batches))
  return medians, runner.dataset.num_clients, examples


def main(argv):
  del argv
  commit = floor_loops.prepare()
  rows = []
  for name in _DATASETS.value:
    with tempfile.TemporaryDirectory(prefix='bench_evaluation_') as output_dir:
      medians, clients, examples = measure(
          name, _DATA_DIR.value, _REPEATS.value, output_dir
      )
    for variant, seconds in medians.items():
      rows.append(
          collections.OrderedDict(
              dataset=name,
              variant=variant,
              median_seconds=seconds,
              ratio_to_forward_pass=seconds / medians['forward_pass'],
              clients=clients,
              test_examples=examples,
              models=2,
              repeats=_REPEATS.value,
              date=datetime.date.today().isoformat(),
              commit=commit,
              cores=os.cpu_count(),
              cpu=floor_loops.cpu_description(),
          )
      )
    floor_loops.print_medians(name, medians)
  floor_loops.write_results(
      rows,
      _OUTPUT.value,
      [
          'dataset',
          'variant',
          'median_seconds',
          'ratio_to_forward_pass',
          'clients',
          'test_examples',
      ],
  )


if __name__ == '__main__':
  app.run(main)
