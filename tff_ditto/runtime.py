"""TFF execution runtime: quiet logs and a local C++ worker we own and stop.

TFF 0.87 executes every computation in a separate `worker_binary` process
reached over gRPC. Its default context starts that process lazily and relies
on a `__del__` to stop it, which fails at interpreter exit and leaves the
worker running (see ../shared/reference/tff_0.87_probes.md, section 8). This
module installs an equivalent context whose worker this process starts itself,
knows by pid, and stops at exit.
"""

from __future__ import annotations

import atexit
import ctypes
import logging as python_logging
import os
import signal
import subprocess
import time
from typing import Optional

from absl import logging as absl_logging
import grpc
import portpicker

from tff_ditto import loopback_bind

LOOPBACK_ADDRESS = '127.0.0.1'

_GRPC_OPTIONS = [
    ('grpc.max_send_message_length', 2_000_000_000),
    ('grpc.max_receive_message_length', 2_000_000_000),
]
_WORKER_READY_TIMEOUT_SECONDS = 60.0

# Worker processes started by this Python process, stopped at exit.
_started_workers: list[subprocess.Popen] = []


def set_quiet_logs(verbosity: int = 0) -> None:
  """Silences TF, TFF and absl logs unless `verbosity` > 0.

  The C++ part (TF_CPP_MIN_LOG_LEVEL) only takes effect if this runs before
  TensorFlow is imported; `tff_ditto/__init__.py` sets it by default.

  Args:
    verbosity: 0 = errors only; 1 = warnings and info from Python; 2 = also
      TF's C++ info logs (for workers started after this call).
  """
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = {0: '3', 1: '1'}.get(verbosity, '0')
  import absl.logging  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  level = python_logging.ERROR if verbosity <= 0 else python_logging.INFO
  absl.logging.set_verbosity(
      absl.logging.ERROR if verbosity <= 0 else absl.logging.INFO
  )
  tf.get_logger().setLevel(level)
  python_logging.getLogger('tensorflow_federated').setLevel(level)


def worker_binary_path() -> str:
  import tensorflow_federated  # pylint: disable=g-import-not-at-top

  path = os.path.join(
      os.path.dirname(tensorflow_federated.__file__), 'data', 'worker_binary'
  )
  if not os.path.isfile(path):
    raise RuntimeError(f'TFF worker binary not found at {path}.')
  return path


def start_local_worker(
    port: Optional[int] = None,
    max_concurrent_computation_calls: int = 2,
    bind_address: Optional[str] = LOOPBACK_ADDRESS,
) -> tuple[subprocess.Popen, int]:
  """Starts a TFF `worker_binary` on this machine and registers it for exit.

  The binary itself listens on all interfaces with no authentication (it has
  no bind-address flag); `bind_address` makes it listen on one IPv4 address
  through `tff_ditto.loopback_bind`'s bind() shim.

  Args:
    port: TCP port; an unused one is picked when None.
    max_concurrent_computation_calls: Client computations the worker runs at
      once (-1 = unlimited). 2 matches the 2-core machines this was tuned on.
    bind_address: IPv4 address to listen on (default loopback only). None
      tries loopback but falls back to all interfaces, with a warning, where
      the shim cannot be built (no C compiler); '0.0.0.0' = all interfaces.

  Returns:
    (process, port).

  Raises:
    loopback_bind.BindShimUnavailable: `bind_address` is set and the shim
      cannot be built.
  """
  if port is None:
    port = portpicker.pick_unused_port()
  environment = dict(os.environ)
  try:
    environment.update(
        loopback_bind.bind_environment(bind_address or LOOPBACK_ADDRESS)
    )
  except loopback_bind.BindShimUnavailable as error:
    if bind_address is not None:
      raise
    absl_logging.warning(
        'TFF worker on port %d listens on ALL interfaces: %s', port, error
    )
  process = subprocess.Popen(
      [
          worker_binary_path(),
          f'--port={port}',
          f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
          '--grpc_max_message_length_megabytes=2000',
      ],
      env=environment,
      preexec_fn=_die_with_parent,
  )
  _started_workers.append(process)
  return process, port


def _die_with_parent() -> None:
  """In the child: ask Linux to kill it when this Python process dies.

  `atexit` does not run when the parent is killed (SIGKILL, OOM); without
  this the worker would outlive it.
  """
  try:
    libc = ctypes.CDLL('libc.so.6', use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except OSError:  # Not Linux / no glibc: rely on atexit only.
    pass


_PR_SET_PDEATHSIG = 1


def started_worker_pids() -> list[int]:
  """The pids of the worker processes this process started (oldest first)."""
  return [worker.pid for worker in _started_workers]


def stop_started_workers() -> None:
  """Stops every worker this process started (by pid), waiting briefly."""
  while _started_workers:
    process = _started_workers.pop()
    if process.poll() is None:
      process.send_signal(signal.SIGINT)
      try:
        process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


atexit.register(stop_started_workers)


def _executor_factory(address: str, ensure_ready: bool):
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  channel = grpc.insecure_channel(address, _GRPC_OPTIONS)
  stub = tff.framework.RemoteExecutorGrpcStub(channel)
  if ensure_ready:
    deadline = time.monotonic() + _WORKER_READY_TIMEOUT_SECONDS
    while not stub.is_ready:
      if time.monotonic() > deadline:
        raise RuntimeError(f'TFF worker at {address} did not become ready.')
      time.sleep(0.05)

  def stack_fn(cardinalities):
    cardinalities.setdefault(tff.CLIENTS, 0)
    executor = tff.framework.RemoteExecutor(stub)
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.ResourceManagingExecutorFactory(stack_fn)


def _context_arguments(address: str) -> dict:
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  return dict(
      executor_fn=_executor_factory(address, ensure_ready=True),
      compiler_fn=tff.backends.native.desugar_and_transform_to_native,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


def configure_local_execution(max_concurrent_computation_calls: int = 2):
  """Makes TFF run computations on one local worker owned by this process.

  Args:
    max_concurrent_computation_calls: Passed to the worker binary.

  Returns:
    The installed `tff.framework.SyncExecutionContext`.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  _, port = start_local_worker(
      max_concurrent_computation_calls=max_concurrent_computation_calls,
      bind_address=None,
  )
  context = tff.framework.SyncExecutionContext(
      **_context_arguments(f'127.0.0.1:{port}')
  )
  tff.framework.set_default_context(context)
  return context


def configure_remote_execution(worker_addresses: list[str]):
  """Spreads the clients of each round over TFF workers at `worker_addresses`.

  One address gives a plain remote context. Several give TFF's mergeable
  context: the CLIENTS-placed arguments are split in contiguous chunks, one
  per worker, and the aggregation's merge runs in this process.

  Args:
    worker_addresses: 'host:port' strings of running `worker_binary`s.

  Returns:
    The installed execution context.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  if not worker_addresses:
    raise ValueError('worker_addresses is empty.')
  if len(worker_addresses) == 1:
    context = tff.framework.SyncExecutionContext(
        **_context_arguments(worker_addresses[0])
    )
  else:
    context = tff.backends.native.create_mergeable_comp_execution_context([
        tff.framework.AsyncExecutionContext(**_context_arguments(address))
        for address in worker_addresses
    ])
  tff.framework.set_default_context(context)
  return context


def parse_worker_addresses(text: str) -> list[str]:
  """'host:port,host:port' -> list of addresses, validated without TF.

  Args:
    text: Comma-separated `host:port` (IPv6 hosts in brackets, `[::1]:8000`).

  Returns:
    The addresses, stripped, in order.

  Raises:
    ValueError: Empty list, a missing or non-numeric port, a port outside
      1..65535, or the same address twice.
  """
  addresses = [part.strip() for part in text.split(',') if part.strip()]
  if not addresses:
    raise ValueError('--workers needs at least one host:port.')
  for address in addresses:
    host, separator, port = address.rpartition(':')
    if not separator or not host or not port.isdigit():
      raise ValueError(f'worker address {address!r} is not host:port.')
    if not 1 <= int(port) <= 65535:
      raise ValueError(f'worker address {address!r}: port out of range.')
  if len(set(addresses)) != len(addresses):
    raise ValueError(f'worker addresses repeat: {addresses}.')
  return addresses


def current_context():
  """The TFF execution context in force (to give back to `restore_context`)."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  return tff.framework.get_context_stack().current


def restore_context(context) -> None:
  """Makes `context` (from `current_context`) the default again."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  tff.framework.set_default_context(context)


def merges_partial_aggregates() -> bool:
  """True if the current context splits clients over several workers.

  TFF's mergeable context runs each worker's share of the clients
  separately and combines the partial aggregates with the aggregation's
  `merge`, in the order in which workers finish.
  """
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top

  return isinstance(
      current_context(), tff.framework.MergeableCompExecutionContext
  )
