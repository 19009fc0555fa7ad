"""Ditto through several TFF workers (`tff_ditto.runtime`, `--workers`).

Two real `worker_binary` processes on 127.0.0.1 under TFF's mergeable
context, against the session's single worker. The mergeable context gives
each worker a contiguous chunk of the round's clients and merges the partial
aggregates in this process, in the order the workers finish; client data are
shipped as serialized graphs and the state files are on the same file system
(loopback). Sums are split differently (two partial sums, then one merge), so
results agree to float rounding, not bit for bit.

Robust aggregators gather every update; the default gather ('auto') becomes
the concatenating gather under a merging context, because the 'file' gather
names its files by slot within one sequential fold, which two workers repeat
(shown below: it fails loudly).
"""

import contextlib
import os
import signal
import subprocess
import sys

import pytest
import tensorflow_federated as tff

import process_output
import toy
from tff_ditto import aggregators
from tff_ditto import client_states
from tff_ditto import loopback_bind
from tff_ditto import runtime

NUM_CLIENTS = 6
BATCH = 4
INITIAL = toy.random_weights(7)
CLIENT_ARRAYS = [
    toy.client_arrays(20 + k, 3 * BATCH, label_shift=k % 3)
    for k in range(NUM_CLIENTS)
]
# Clients per round, in the order given to `next` (round 2 reorders them).
ROUNDS = [[0, 1, 2, 3, 4, 5], [5, 3, 1, 0, 2, 4]]


@pytest.fixture(scope='module')
def two_workers():
  """Addresses of two loopback workers started (and stopped) by this module."""
  processes, addresses = [], []
  for _ in range(2):
    process, port = runtime.start_local_worker(
        max_concurrent_computation_calls=1, bind_address='127.0.0.1'
    )
    loopback_bind.wait_until_listening(process, port)
    processes.append(process)
    addresses.append(f'127.0.0.1:{port}')
  yield processes, addresses
  for process in processes:
    process.terminate()
    process.wait(timeout=30)


@contextlib.contextmanager
def _execution_on(addresses):
  """Runs the block under `configure_remote_execution(addresses)`."""
  saved = runtime.current_context()
  runtime.configure_remote_execution(addresses)
  try:
    yield
  finally:
    runtime.restore_context(saved)


def _build_factory(name):
  if name == 'tff_mean':
    return tff.aggregators.MeanFactory()
  kwargs = {'krum': dict(f=1), 'bucketing_median': dict(bucketing_size=2)}
  rule = 'median' if name == 'bucketing_median' else name
  return aggregators.build_aggregator(rule, **kwargs.get(name, {}))


def _run_ditto(factory, directory):
  """Builds a Ditto process with `factory` (under the current context) and
  runs ROUNDS; returns (global weights, personal weights, last metrics)."""
  process = toy.build_process(model_aggregator=factory)
  state = toy.with_global_weights(process, INITIAL)
  store = client_states.FileClientStateStore(directory, NUM_CLIENTS, INITIAL)
  output = None
  for round_num, clients in enumerate(ROUNDS, start=1):
    handles = store.handles(clients, round_num)
    data = [
        toy.personal_client_data(
            toy.fixed_batches(CLIENT_ARRAYS[k], BATCH),
            handle.read_path,
            handle.write_path,
        )
        for k, handle in zip(clients, handles)
    ]
    output = process.next(state, data)
    state = output.state
    store.commit(clients, round_num)
  personal = [store.read(k) for k in range(NUM_CLIENTS)]
  return toy.global_weights(process, state), personal, output.metrics


def test_workers_listen_on_loopback_only(two_workers):
  processes, addresses = two_workers
  for process, address in zip(processes, addresses):
    port = int(address.rsplit(':', 1)[1])
    sockets = loopback_bind.listening_addresses(process.pid)
    assert [p for _, p in sockets] == [port], sockets
    assert all(loopback_bind.is_loopback(a) for a, _ in sockets), sockets


def test_without_the_shim_the_binary_listens_everywhere():
  # The control: what the bind() shim prevents (the binary's own default).
  process, port = runtime.start_local_worker(bind_address='0.0.0.0')
  try:
    sockets = loopback_bind.wait_until_listening(process, port)
    assert sockets == [('::', port)]
    assert not loopback_bind.is_loopback('::')
  finally:
    process.terminate()
    process.wait(timeout=30)


def test_shim_without_a_compiler_is_refused(tmp_path, monkeypatch):
  monkeypatch.setenv('CC', str(tmp_path / 'no_such_compiler'))
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'empty_cache'))
  with pytest.raises(loopback_bind.BindShimUnavailable, match='compiler'):
    loopback_bind.build_bind_shim(str(tmp_path / 'cache'))
  with pytest.raises(loopback_bind.BindShimUnavailable):
    runtime.start_local_worker(bind_address='127.0.0.1')


@pytest.mark.parametrize('name', ['tff_mean', 'median', 'krum'])
def test_two_workers_match_one(name, two_workers, tmp_path):
  _, addresses = two_workers
  one_global, one_personal, one_metrics = _run_ditto(
      _build_factory(name), str(tmp_path / 'one')
  )
  with _execution_on(addresses):
    assert runtime.merges_partial_aggregates()
    two_global, two_personal, two_metrics = _run_ditto(
        _build_factory(name), str(tmp_path / 'two')
    )
  assert not runtime.merges_partial_aggregates()  # context restored
  toy.assert_weights_close(two_global, one_global, atol=1e-6)
  for two, one in zip(two_personal, one_personal):
    toy.assert_weights_close(two, one, atol=1e-6)
  # The model moved, and both runs counted the same clients.
  assert toy.distance(one_global, INITIAL) > 1e-3
  train_one = one_metrics['client_work']['train']
  train_two = two_metrics['client_work']['train']
  assert train_two['num_clients'] == train_one['num_clients'] == NUM_CLIENTS


def test_bucketing_under_two_workers_does_not_depend_on_timing(
    two_workers, tmp_path
):
  # Bucketing permutes rows by position. With one worker rows come in client
  # order; under the mergeable context in the order workers finish, so the
  # gather sorts them by content first. Two runs then agree bit for bit (but
  # draw other buckets than a one-worker run: a different, equally seeded
  # bucketing).
  _, addresses = two_workers
  with _execution_on(addresses):
    first = _run_ditto(_build_factory('bucketing_median'), str(tmp_path / 'a'))
    second = _run_ditto(_build_factory('bucketing_median'), str(tmp_path / 'b'))
  toy.assert_weights_equal(first[0], second[0])
  assert toy.distance(first[0], INITIAL) > 1e-3


def test_one_remote_worker_matches_local_bit_for_bit(two_workers, tmp_path):
  _, addresses = two_workers
  local = _run_ditto(_build_factory('median'), str(tmp_path / 'local'))
  with _execution_on(addresses[:1]):
    assert not runtime.merges_partial_aggregates()
    remote = _run_ditto(_build_factory('median'), str(tmp_path / 'remote'))
  toy.assert_weights_equal(remote[0], local[0])
  for a, b in zip(remote[1], local[1]):
    toy.assert_weights_equal(a, b)


def test_file_gather_fails_loudly_under_two_workers(two_workers, tmp_path):
  _, addresses = two_workers
  with _execution_on(addresses):
    factory = aggregators.build_aggregator('median', gather='file')
    with pytest.raises(Exception, match='collide'):
      _run_ditto(factory, str(tmp_path / 'file'))


def test_bad_worker_addresses_are_rejected():
  with pytest.raises(ValueError, match='host:port'):
    runtime.parse_worker_addresses('127.0.0.1')
  with pytest.raises(ValueError, match='at least one'):
    runtime.parse_worker_addresses(' , ')
  assert runtime.parse_worker_addresses('127.0.0.1:1,127.0.0.1:2') == [
      '127.0.0.1:1',
      '127.0.0.1:2',
  ]
  assert os.path.isfile(runtime.worker_binary_path())


# --------------------------------------------- run_experiment.py --workers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_experiment(*args, timeout=600):
  environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run(
      [sys.executable, 'run_experiment.py', *args],
      cwd=REPO,
      env=environment,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


def test_run_experiment_rejects_a_bad_workers_flag_before_tensorflow():
  result = _run_experiment('--workers=127.0.0.1', timeout=60)
  assert result.returncode == 2
  assert "worker address '127.0.0.1' is not host:port" in result.stderr
  assert 'tensorflow' not in result.stderr.lower()


def test_run_experiment_on_two_workers(two_workers, tmp_path):
  _, addresses = two_workers
  output_dir = str(tmp_path / 'run')
  result = _run_experiment(
      '--method=ditto',
      '--rounds=2',
      '--eval_every=2',
      '--max_clients=6',
      '--clients_per_round=4',
      '--aggregator=median',
      f'--workers={",".join(addresses)}',
      f'--output_dir={output_dir}',
  )
  assert result.returncode == 0, process_output.failure_text(result.stderr)
  with open(os.path.join(output_dir, 'ditto', 'metrics.csv')) as file:
    rows = file.read().splitlines()
  assert len(rows) == 3  # header + 2 rounds


# ------------------------------------------------- start_local_workers.py


def test_start_local_workers_script_binds_loopback_and_stops_on_ctrl_c():
  script = subprocess.Popen(
      [
          sys.executable,
          'scripts/start_local_workers.py',
          '--num_workers=2',
          '--max_concurrent_computation_calls=1',
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      text=True,
  )
  try:
    lines = []
    for line in script.stdout:
      lines.append(line)
      if line.startswith('--workers='):
        break
    pids = [
        int(l.split()[3].rstrip(',')) for l in lines if l.startswith('worker ')
    ]
    addresses = lines[-1].strip()[len('--workers=') :].split(',')
    assert len(pids) == len(addresses) == 2, lines
    for pid, address in zip(pids, addresses):
      host, port = address.rsplit(':', 1)
      assert host == '127.0.0.1'
      sockets = loopback_bind.listening_addresses(pid)
      assert int(port) in [p for _, p in sockets], sockets
      assert all(loopback_bind.is_loopback(a) for a, _ in sockets), sockets
    script.send_signal(signal.SIGINT)
    assert script.wait(timeout=60) == 0
    for pid in pids:
      assert (
          not os.path.exists(f'/proc/{pid}')
          or open(f'/proc/{pid}/stat').read().split()[2] == 'Z'
      )
  finally:
    if script.poll() is None:
      script.kill()
      script.wait()


def test_start_local_workers_refuses_non_loopback_without_consent():
  result = subprocess.run(
      [
          sys.executable,
          'scripts/start_local_workers.py',
          '--bind_address=0.0.0.0',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=60,
  )
  assert result.returncode == 2
  assert 'i_understand_no_authentication' in result.stderr
