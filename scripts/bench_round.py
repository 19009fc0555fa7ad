"""Benchmarks one Ditto round against the compute bound and TFF's FedAvg.

On the FEMNIST CNN with real FEMNIST clients (10 clients per round, batch 10,
10 local steps), measured in one run:

  A. compute-only bound: the same SGD steps as a Ditto round (personal + global
     step on the same batches, per client) in plain `tf.function` code with no
     TFF; the better of a serial loop and two clients at once (two threads);
  B. a TFF FedAvg round (`tff.learning.algorithms.build_weighted_fed_avg`,
     same local steps; it trains one model, so half of A's steps);
  C. a tff-ditto Ditto round (`build_ditto_process`, file-backed v_k).

Medians over rounds after warm-up; ratios C/A and C/B. Results go to
results/bench_round.csv (one row per variant) and are printed as markdown.

  .venv/bin/python scripts/bench_round.py --data_dir=../shared/data
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import collections  # noqa: E402
import datetime  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
# Imported before app.run: Keras 2.14 fails to build Sequential models eagerly
# when TensorFlow is first imported inside an absl main.
import tensorflow as tf  # noqa: E402

_DATA_DIR = flags.DEFINE_string('data_dir', '../shared/data',
                                'Parent of the femnist/ LEAF folder.')
_ROUNDS = flags.DEFINE_integer('rounds', 8, 'Measured rounds per variant.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Unmeasured warm-up rounds.')
_CLIENTS = flags.DEFINE_integer('clients_per_round', 10, 'Clients per round.')
_LOCAL_STEPS = flags.DEFINE_integer('local_steps', 10, 'Local steps.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 10, 'Batch size.')
_OUTPUT = flags.DEFINE_string('output', 'results/bench_round.csv',
                              'CSV written with the results.')


def main(argv):
  del argv
  from tff_ditto import runtime  # pylint: disable=g-import-not-at-top
  runtime.set_quiet_logs(0)
  runtime.configure_local_execution(max_concurrent_computation_calls=2)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  from tff_ditto import batch_streams  # pylint: disable=g-import-not-at-top
  from tff_ditto import client_states  # pylint: disable=g-import-not-at-top
  from tff_ditto import ditto  # pylint: disable=g-import-not-at-top
  from tff_ditto import experiment  # pylint: disable=g-import-not-at-top
  from tff_ditto import models  # pylint: disable=g-import-not-at-top
  from tff_ditto import training  # pylint: disable=g-import-not-at-top
  from tff_ditto.data import load_dataset  # pylint: disable=g-import-not-at-top

  dataset = load_dataset('femnist', _DATA_DIR.value)
  spec = models.get_model_spec('femnist', seed=0)
  model_fn = spec.tff_model_fn()
  lr = 0.1
  steps, batch = _LOCAL_STEPS.value, _BATCH_SIZE.value
  total_rounds = _WARMUP.value + _ROUNDS.value
  sizes = dataset.num_train_examples()
  round_clients = [
      training.sample_clients(r, sizes, _CLIENTS.value, seed=0)
      for r in range(total_rounds)
  ]
  ids = dataset.client_ids

  def batches(index, round_num):
    return batch_streams.per_round_shuffle_batches(
        dataset.train[ids[index]], batch, seed=round_num * 1000 + int(index))

  def median_seconds(run_round):
    times = []
    for r in range(total_rounds):
      start = time.perf_counter()
      run_round(r)
      if r >= _WARMUP.value:
        times.append(time.perf_counter() - start)
    return float(np.median(times)), times

  # ---- A: plain TF, the same steps as a Ditto round.
  def make_trainer():
    personal, global_model = spec.keras_model_fn(), spec.keras_model_fn()
    loss_fn = spec.loss_fn()

    @tf.function
    def train_client(center, data):
      for v, c in zip(global_model.trainable_variables, center):
        v.assign(c)
      for batch_data in data:
        with tf.GradientTape() as tape:
          loss = loss_fn(batch_data['y'], personal(batch_data['x'],
                                                   training=True))
        grads = tape.gradient(loss, personal.trainable_variables)
        for v, g, c in zip(personal.trainable_variables, grads, center):
          v.assign_sub(lr * (g + 1.0 * (v - c)))
        with tf.GradientTape() as tape:
          loss = loss_fn(batch_data['y'], global_model(batch_data['x'],
                                                       training=True))
        grads = tape.gradient(loss, global_model.trainable_variables)
        for v, g in zip(global_model.trainable_variables, grads):
          v.assign_sub(lr * g)
      return [c - v for v, c in zip(global_model.trainable_variables, center)]

    return train_client

  # Variant A runs first: Keras invalidates eagerly built models once a model
  # has been built inside a tf.Graph, which every TFF computation does.
  trainers = [make_trainer(), make_trainer()]
  center = [tf.constant(v.numpy())
            for v in spec.keras_model_fn().trainable_variables]

  def plain_serial(r):
    for i in round_clients[r]:
      trainers[0](center, batches(i, r).take(steps))

  def plain_two_threads(r):
    clients = list(round_clients[r])

    def work(worker):
      for i in clients[worker::2]:
        trainers[worker](center, batches(i, r).take(steps))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()

  serial, _ = median_seconds(plain_serial)
  threaded, _ = median_seconds(plain_two_threads)
  compute_bound = min(serial, threaded)

  # ---- B: TFF FedAvg.
  fed_avg = tff.learning.algorithms.build_weighted_fed_avg(
      model_fn,
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(lr),
      server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0))
  fed_avg_state = [fed_avg.initialize()]

  def fed_avg_round(r):
    data = [batches(i, r).take(steps) for i in round_clients[r]]
    fed_avg_state[0] = fed_avg.next(fed_avg_state[0], data).state

  fed_avg_seconds, _ = median_seconds(fed_avg_round)

  # ---- C: tff-ditto Ditto.
  process = ditto.build_ditto_process(
      model_fn, client_optimizer=tff.learning.optimizers.build_sgdm(lr),
      personal_lambda=1.0, local_steps=steps)
  ditto_state = [process.initialize()]
  initial = process.get_model_weights(ditto_state[0])
  store = client_states.FileClientStateStore(
      tempfile.mkdtemp(prefix='bench_ditto_'), dataset.num_clients,
      list(initial.trainable) + list(initial.non_trainable))

  def ditto_round(r):
    clients = round_clients[r]
    handles = store.handles(clients, r)
    data = [collections.OrderedDict(
        batches=batches(i, r),
        personal_state=training.state_handle_dataset(h))
            for i, h in zip(clients, handles)]
    ditto_state[0] = process.next(ditto_state[0], data).state
    store.commit(clients, r)

  ditto_seconds, _ = median_seconds(ditto_round)

  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                          capture_output=True, text=True).stdout.strip()
  rows = [
      ('A_plain_tf_serial', serial),
      ('A_plain_tf_two_threads', threaded),
      ('A_compute_bound', compute_bound),
      ('B_tff_fedavg', fed_avg_seconds),
      ('C_tff_ditto', ditto_seconds),
  ]
  frame = pd.DataFrame(rows, columns=['variant', 'median_round_seconds'])
  frame['C_over_A'] = ditto_seconds / compute_bound
  frame['C_over_B'] = ditto_seconds / fed_avg_seconds
  frame['date'] = datetime.date.today().isoformat()
  frame['commit'] = commit
  frame['setup'] = (f'femnist cnn, {_CLIENTS.value} clients/round, batch '
                    f'{batch}, {steps} local steps, {_ROUNDS.value} rounds '
                    f'after {_WARMUP.value} warm-up, {os.cpu_count()} cores')
  os.makedirs(os.path.dirname(_OUTPUT.value) or '.', exist_ok=True)
  frame.to_csv(_OUTPUT.value, index=False)
  print(experiment.markdown_table(frame[['variant', 'median_round_seconds']]))
  print(f'\nC/A = {ditto_seconds / compute_bound:.2f} (target <= 1.2), '
        f'C/B = {ditto_seconds / fed_avg_seconds:.2f} (target <= 2.1)')


if __name__ == '__main__':
  app.run(main)
