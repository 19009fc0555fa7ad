"""The floors of the benchmarks: plain `tf.function` loops over clients' batches.

Shared by scripts/bench_round.py and scripts/bench_evaluation.py. A floor is
the same model work as the measured TFF path in plain TensorFlow, with no TFF
and no per-client setup: the faster of one loop over every client's batches
(TensorFlow's intra-op threads) and two loops at once on two threads, each
over every other client (the parallelism TFF's worker uses: two clients at a
time, `max_concurrent_computation_calls=2`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import subprocess
import threading

import pandas as pd
import tensorflow as tf

from tff_ditto import batch_loops
from tff_ditto import experiment
from tff_ditto import runtime

# A client's batches as (stacked {'x', 'y'}, sizes), see `client_batches`.
ClientBatches = tuple[dict, tf.Tensor]
Loop = Callable[[dict, tf.Tensor], tf.Tensor]


def client_batches(batches: tf.data.Dataset) -> ClientBatches:
  """A client's dataset of batches read into (stacked, sizes) tensors."""
  stacked = batch_loops.stack_batches(batches)
  return ({key: stacked.stacked[key] for key in ('x', 'y')}, stacked.sizes)


def concatenate(clients: Sequence[ClientBatches]) -> ClientBatches:
  """Several clients' batches as one (stacked, sizes), in client order."""
  largest = max(int(stacked['y'].shape[1]) for stacked, _ in clients)

  def pad(tensor):
    padding = [[0, 0], [0, largest - int(tensor.shape[1])]] + [[0, 0]] * (
        len(tensor.shape) - 2
    )
    return tf.pad(tensor, padding)

  stacked = {
      key: tf.concat([pad(s[key]) for s, _ in clients], 0) for key in ('x', 'y')
  }
  return stacked, tf.concat([sizes for _, sizes in clients], 0)


def one_loop(loop: Loop, clients: Sequence[ClientBatches]) -> None:
  """`loop` over every client's batches at once."""
  loop(*concatenate(clients)).numpy()


def two_threads(
    loops: Sequence[Loop], clients: Sequence[ClientBatches]
) -> None:
  """`loops[k]` over clients k, k + 2, ... on thread k, both at once.

  The two loops must own separate models (they run concurrently).
  """
  halves = [concatenate(clients[start::2]) for start in (0, 1)]
  threads = [
      threading.Thread(target=lambda k=k: loops[k](*halves[k]).numpy())
      for k in (0, 1)
  ]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()


def prepare() -> str:
  """Quiet logs and a local TFF worker running two clients at once.

  Returns:
    The short git commit of the working tree (recorded with the results).
  """
  runtime.set_quiet_logs(0)
  runtime.configure_local_execution(max_concurrent_computation_calls=2)
  return subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True
  ).stdout.strip()


def cpu_description() -> str:
  """The CPU's model name and its widest vector extension, for the results.

  Round times differ between machines by more than any change measured here
  (the FEMNIST floor took 0.34 s on 2026-12-06 and 1.19 s on an AVX2-only
  AMD EPYC on 2026-12-07), so each benchmark row says where it ran.

  Returns:
    For example 'AMD EPYC (avx2)'; 'unknown' where /proc/cpuinfo is absent.
  """
  try:
    with open('/proc/cpuinfo') as cpuinfo:
      lines = cpuinfo.read().splitlines()
  except OSError:
    return 'unknown'
  fields = {}
  for line in lines:
    key, _, value = line.partition(':')
    fields.setdefault(key.strip(), value.strip())
  flags = set(fields.get('flags', '').split())
  widest = next(
      (flag for flag in ('avx512f', 'avx2', 'avx') if flag in flags), 'no avx'
  )
  return f"{fields.get('model name', 'unknown')} ({widest})"


def print_medians(name: str, medians: dict[str, float]) -> None:
  print(
      f'{name}: '
      + ', '.join(
          f'{variant} {seconds:.3f} s' for variant, seconds in medians.items()
      ),
      flush=True,
  )


def write_results(
    rows: Sequence[dict], output: str, shown: Sequence[str]
) -> None:
  """Writes the rows to the CSV `output` and prints columns `shown`."""
  frame = pd.DataFrame(rows)
  os.makedirs(os.path.dirname(output) or '.', exist_ok=True)
  frame.to_csv(output, index=False)
  print(experiment.markdown_table(frame[list(shown)]))
