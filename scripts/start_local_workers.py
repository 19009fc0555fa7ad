r"""Starts N TFF worker processes on this machine for `--workers` (demonstration).

Each worker is TFF 0.87's own `worker_binary` (tensorflow_federated/data/).
The script prints the value to pass as `run_experiment.py --workers=...`,
then waits; Ctrl-C (or SIGTERM, or this script exiting for any reason) stops
the workers, and Linux kills them if this script is killed
(`PR_SET_PDEATHSIG`).

SECURITY: the workers' gRPC service has NO authentication and NO encryption:
whoever can connect can run arbitrary TensorFlow computations (read and write
files) as the user running it. The binary itself always binds every interface
(`[::]:PORT`) and has no bind-address flag; this script makes it bind
127.0.0.1 only (the default `--bind_address`) through a small `LD_PRELOAD`
shim around `bind()` (`tff_ditto.loopback_bind`, compiled on first use with
the system C compiler), then checks in `/proc/net/tcp{,6}` that each worker
listens on loopback only. Where the shim cannot be built (no `cc`), the
script refuses to start rather than expose the workers. `--bind_address`
with another IPv4 address (or 0.0.0.0 = all interfaces) requires
`--i_understand_no_authentication`; then keep the ports firewalled.

  .venv/bin/python scripts/start_local_workers.py --num_workers=2
  # prints: --workers=127.0.0.1:PORT1,127.0.0.1:PORT2
  .venv/bin/python run_experiment.py --workers=127.0.0.1:PORT1,127.0.0.1:PORT2 ...
"""

from __future__ import annotations

import signal
import sys

from absl import app
from absl import flags

from tff_ditto import loopback_bind
from tff_ditto import runtime

_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', 2, 'Number of worker processes to start.', lower_bound=1
)
_BASE_PORT = flags.DEFINE_integer(
    'base_port',
    None,
    'First port (worker i listens on base_port + i); default: free ports.',
    lower_bound=1,
    upper_bound=65535,
)
_MAX_CONCURRENT_COMPUTATION_CALLS = flags.DEFINE_integer(
    'max_concurrent_computation_calls',
    2,
    'Client computations each worker runs at once (-1 = no limit); the '
    "binary's --max_concurrent_computation_calls.",
)
_BIND_ADDRESS = flags.DEFINE_string(
    'bind_address',
    '127.0.0.1',
    'IPv4 address the workers listen on. The default keeps them on loopback '
    '(the gRPC service has no authentication). Anything else, including '
    '0.0.0.0 (all interfaces), needs --i_understand_no_authentication.',
)
_I_UNDERSTAND = flags.DEFINE_bool(
    'i_understand_no_authentication',
    False,
    'Allow a non-loopback --bind_address: anyone who can reach the port can '
    'run any TensorFlow computation as this user.',
)
_READY_TIMEOUT_SECONDS = flags.DEFINE_float(
    'ready_timeout_seconds', 60.0, 'How long to wait for each worker to listen.'
)


def _fail(message: str) -> None:
  print(f'start_local_workers.py: error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}')
  try:
    address = loopback_bind.check_bind_address(_BIND_ADDRESS.value)
  except ValueError as error:
    _fail(str(error))
  loopback = loopback_bind.is_loopback(address)
  if not loopback and not _I_UNDERSTAND.value:
    _fail(
        f'--bind_address={address} exposes unauthenticated workers beyond this '
        'machine; add --i_understand_no_authentication to do it anyway.'
    )
  ports = None
  if _BASE_PORT.value is not None:
    ports = [_BASE_PORT.value + i for i in range(_NUM_WORKERS.value)]
    if ports[-1] > 65535:
      _fail('--base_port + --num_workers goes past port 65535.')

  def stop(signal_number, frame):
    del frame
    runtime.stop_started_workers()
    sys.exit(128 + signal_number)

  signal.signal(signal.SIGTERM, stop)
  # Ctrl-C must stop the workers even where SIGINT was ignored when this
  # process started (e.g. launched from a non-interactive shell with `&`).
  signal.signal(signal.SIGINT, signal.default_int_handler)
  addresses = []
  try:
    for i in range(_NUM_WORKERS.value):
      try:
        process, port = runtime.start_local_worker(
            port=None if ports is None else ports[i],
            max_concurrent_computation_calls=(
                _MAX_CONCURRENT_COMPUTATION_CALLS.value
            ),
            bind_address=address,
        )
      except loopback_bind.BindShimUnavailable as error:
        _fail(
            f'{error} Refusing to start workers that would listen on every '
            'interface without authentication.'
        )
      sockets = loopback_bind.wait_until_listening(
          process, port, _READY_TIMEOUT_SECONDS.value
      )
      exposed = [
          found
          for found in sockets
          if loopback and not loopback_bind.is_loopback(found[0])
      ]
      if exposed:
        _fail(f'worker {process.pid} listens on non-loopback {exposed}.')
      print(
          f'worker {i}: pid {process.pid}, listening on {sockets}', flush=True
      )
      host = '127.0.0.1' if address == '0.0.0.0' else address
      addresses.append(f'{host}:{port}')
    print(f'--workers={",".join(addresses)}', flush=True)
    print('Ctrl-C stops the workers.', flush=True)
    while True:
      signal.pause()
  except KeyboardInterrupt:
    pass
  finally:
    runtime.stop_started_workers()


if __name__ == '__main__':
  app.run(main)
