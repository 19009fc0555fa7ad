"""Benchmarks training rounds against their SGD floor.

For each setting, measured in one run on this machine:

  floor      the round's model-steps (the same batches of the same sampled
             clients, the same model; both models for Ditto, one personal
             model per lambda candidate) in plain `tf.function` loops, no
             TFF, no per-client setup: the faster of one loop over every
             client's batches (TensorFlow's intra-op threads on all cores,
             `floor_one_loop`) and two such loops at once on two threads,
             each over every other client (`floor_two_threads`, the
             parallelism TFF's worker uses: two clients at a time);
  tff_ditto  the project's round as a run makes it
             (`ExperimentRunner.run_round`: client data, the TFF process on
             the local worker, client-state files), evaluation excluded;
  checkpoint the end-of-round checkpoint a run with `--checkpoint_every=1`
             adds (server state, batch-stream positions, client-state
             versions), timed on its own.

The floor and the round of a setting alternate round by round, so both see
the same machine load. Medians over the measured rounds; ratio = round /
floor. Results: results/bench_round.csv (one row per setting and variant) and
a markdown table on stdout.

  .venv/bin/python scripts/bench_round.py --data_dir=../shared/data
  .venv/bin/python scripts/bench_round.py --settings=vehicle_global,vehicle_ditto
"""

from __future__ import annotations

import collections
import copy
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
from tff_ditto import sampling  # noqa: E402
from tff_ditto import training  # noqa: E402
from tff_ditto import training_config  # noqa: E402
from tff_ditto.data import load_dataset  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Setting:
  """One benchmarked round: a dataset, a method and config overrides."""

  name: str
  dataset: str
  method: str
  overrides: tuple[tuple[str, object], ...] = ()
  has_floor: bool = True


SETTINGS = {
    setting.name: setting
    for setting in (
        Setting('femnist_ditto', 'femnist', 'ditto'),
        Setting('femnist_global', 'femnist', 'global'),
        Setting(
            'femnist_ditto_per_device',
            'femnist',
            'ditto',
            (('lam_selection', 'auto'),),
        ),
        Setting('fmnist_ditto', 'fmnist', 'ditto'),
        # The paper-budget column: candidates {0.1, 1, 2} and local (0).
        Setting(
            'fmnist_ditto_per_device',
            'fmnist',
            'ditto',
            (('lam_selection', 'auto'), ('report_lambdas', (0.0, 1.0))),
        ),
        Setting('vehicle_global', 'vehicle', 'global', has_floor=False),
        Setting('vehicle_ditto', 'vehicle', 'ditto', has_floor=False),
        Setting('synthetic_global', 'synthetic', 'global', has_floor=False),
        Setting('synthetic_ditto', 'synthetic', 'ditto', has_floor=False),
    )
}

_DATA_DIR = flags.DEFINE_string(
    'data_dir', '../shared/data', 'Parent of the datasets (femnist/, ...).'
)
_SETTINGS = flags.DEFINE_list(
    'settings', list(SETTINGS), f'Settings to measure, of {list(SETTINGS)}.'
)
_ROUNDS = flags.DEFINE_integer('rounds', 12, 'Measured rounds per setting.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Unmeasured warm-up rounds.')
_OUTPUT = flags.DEFINE_string(
    'output', 'results/bench_round.csv', 'CSV written with the results.'
)


def _config(setting: Setting, rounds: int) -> training_config.ExperimentConfig:
  values = experiment_defaults.preset_for(setting.dataset)
  values.update(
      method=setting.method,
      rounds=rounds,
      eval_every=10**9,
      checkpoint_every=0,
      seed=0,
  )
  values.update(dict(setting.overrides))
  fields = {
      field.name
      for field in dataclasses.fields(training_config.ExperimentConfig)
  }
  return training_config.ExperimentConfig(
      **{key: value for key, value in values.items() if key in fields}
  )


class Floor:
  """A round's model-steps in plain `tf.function` loops (see module doc)."""

  def __init__(self, spec: models.ModelSpec, config, lambdas):
    """Builds two copies of the models and their step loops.

    Args:
      spec: The dataset's model spec.
      config: The run's (effective) config: learning rates.
      lambdas: Personal models' lambdas (empty for a global-only round).
    """
    self._loops = [self._build_loop(spec, config, lambdas) for _ in range(2)]

  @staticmethod
  def _build_loop(spec, config, lambdas):
    global_model = spec.keras_model_fn()
    personal_models = [spec.keras_model_fn() for _ in lambdas]
    loss_fn = spec.loss_fn()
    center = [tf.constant(v.numpy()) for v in global_model.trainable_variables]
    client_lr = config.client_lr
    personal_lr = config.personal_lr or config.client_lr

    def sgd_step(model, batch, learning_rate, strength):
      with tf.GradientTape() as tape:
        loss = loss_fn(batch['y'], model(batch['x'], training=True))
      gradients = tape.gradient(loss, model.trainable_variables)
      for variable, gradient, anchor in zip(
          model.trainable_variables, gradients, center
      ):
        if strength:
          gradient = gradient + strength * (variable - anchor)
        variable.assign_sub(learning_rate * gradient)
      return loss

    @tf.function
    def run(stacked, sizes):
      batches = batch_loops.StackedBatches(stacked, sizes)

      def body(total, batch):
        for model, strength in zip(personal_models, lambdas):
          total += sgd_step(model, batch, personal_lr, strength)
        return total + sgd_step(global_model, batch, client_lr, 0.0)

      return batches.reduce(tf.constant(0.0), body)

    return run

  def one_loop(self, clients) -> None:
    """Every client's batches in one loop (TensorFlow's intra-op threads)."""
    floor_loops.one_loop(self._loops[0], clients)

  def two_threads(self, clients) -> None:
    """Two loops at once, on every other client each (as the TFF worker)."""
    floor_loops.two_threads(self._loops, clients)


def _round_batches(runner, round_num: int):
  """Each sampled client's batches of the round, stacked, in client order.

  Drawn from a copy of the runner's batch streams, so the runner's own round
  draws the very same batches afterwards.

  Returns:
    A list of `(stacked, sizes)`, one per client.
  """
  config = runner.config
  streams = copy.deepcopy(runner.batch_streams)
  clients = sampling.sample_clients(
      round_num,
      runner.dataset.num_train_examples(),
      config.clients_per_round,
      config.seed,
      config.sampling,
  )
  ids = runner.dataset.client_ids
  return [
      floor_loops.client_batches(
          streams.round_batches(
              round_num,
              int(i),
              runner.dataset.train[ids[i]],
              config.local_steps,
          ).take(config.local_steps)
      )
      for i in clients
  ]


def _checkpoint_seconds(runner, round_num: int) -> float:
  start = time.perf_counter()
  runner.save_checkpoint(round_num)
  return time.perf_counter() - start


def measure(
    setting: Setting, data_dir: str, rounds: int, warmup: int, output_dir: str
):
  """Median seconds per variant of one setting (the run writes to `output_dir`)."""
  config = _config(setting, warmup + rounds)
  dataset = load_dataset(
      setting.dataset, data_dir, validation_fraction=0.1, seed=config.seed
  )
  spec = models.get_model_spec(setting.dataset, seed=config.seed)
  runner = training.ExperimentRunner(
      config,
      dataset,
      spec.tff_model_fn(),
      output_dir,
      log_fn=None,
  )
  floor = None
  if setting.has_floor:
    lambdas = runner.personal_models.lambdas if runner.personalize else []
    floor = Floor(spec, runner.config, list(lambdas))
  times = collections.defaultdict(list)
  model_steps = 0
  for round_num in range(warmup + rounds):
    measured = round_num >= warmup
    if floor is not None:
      client_batches = _round_batches(runner, round_num)
      model_steps = sum(int(sizes.shape[0]) for _, sizes in client_batches) * (
          1 + (runner.personal_models.count if runner.personalize else 0)
      )
      for variant, run_floor in (
          ('floor_one_loop', floor.one_loop),
          ('floor_two_threads', floor.two_threads),
      ):
        start = time.perf_counter()
        run_floor(client_batches)
        if measured:
          times[variant].append(time.perf_counter() - start)
    start = time.perf_counter()
    runner.run_round(round_num)
    seconds = time.perf_counter() - start
    checkpoint = _checkpoint_seconds(runner, round_num)
    if measured:
      times['tff_ditto'].append(seconds)
      times['checkpoint'].append(checkpoint)
  medians = {
      variant: float(np.median(values)) for variant, values in times.items()
  }
  if floor is not None:
    medians['floor'] = min(
        medians['floor_one_loop'], medians['floor_two_threads']
    )
  return medians, model_steps


def main(argv):
  del argv
  commit = floor_loops.prepare()
  rows = []
  for name in _SETTINGS.value:
    setting = SETTINGS[name]
    # The run's state files (about 5 GB for Fashion-MNIST) go with the setting.
    with tempfile.TemporaryDirectory(prefix='bench_round_') as output_dir:
      medians, model_steps = measure(
          setting, _DATA_DIR.value, _ROUNDS.value, _WARMUP.value, output_dir
      )
    floor = medians.get('floor')
    for variant, seconds in medians.items():
      rows.append(
          collections.OrderedDict(
              setting=name,
              variant=variant,
              median_round_seconds=seconds,
              ratio_to_floor=(seconds / floor if floor else float('nan')),
              model_steps_per_round=model_steps if floor else float('nan'),
              rounds=_ROUNDS.value,
              warmup=_WARMUP.value,
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
          'setting',
          'variant',
          'median_round_seconds',
          'ratio_to_floor',
          'model_steps_per_round',
      ],
  )


if __name__ == '__main__':
  app.run(main)
