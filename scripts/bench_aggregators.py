"""Benchmark of tff_ditto.aggregators: time per aggregation round.

For n = 10, 100, 1000 clients, each sending an update of the FEMNIST CNN's
trainable-weight structure (8 tensors, d = 222,078 float32), this times one
round of each aggregator's `AggregationProcess`:

* feed 'python': `process.next(state, values)` with the values fed from
  Python as lists of numpy arrays, so the time includes TFF's serialization
  of the values and their transfer to the local worker; `tff_mean`, TFF's
  own `UnweightedMeanFactory`, shows that floor.
* feed 'worker': the updates are produced inside the TFF worker by a
  client-side TF computation (seeded normals) and aggregated in the same
  federated computation, as in a real training round, so nothing crosses
  from Python; `tff_mean` again shows the floor (generation included).

Reported: the median of a few timed repetitions after one warm-up call
(`first_s` is the warm-up's time, which includes tracing and compiling).

Each configuration runs in its own subprocess with its own fresh TFF worker
(`tff_ditto.runtime`), and the worker's executor is cleared after every call,
so that the values of earlier calls (which TFF's RemoteExecutor disposes only
in batches of 20) do not pile up. The parent samples the memory of the
subprocess, its worker and its gather files; a configuration that goes past
--memory_limit_gb (default 12), that would leave the machine with less than
1.5 GB available, or that runs past --timeout_s is killed (its process group:
the subprocess and its worker) and written as 'skipped' with the reason; so
are configurations whose predicted memory or copying is out of reach. A
killed worker cannot hang the benchmark (TFF retries a lost worker forever).

Writes results/bench_aggregators.csv after every configuration and prints a
markdown table. Run it at low priority, e.g.
`nice -n 19 .venv/bin/python scripts/bench_aggregators.py`.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import shutil
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_federated as tff  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tff_ditto import aggregators as agg  # noqa: E402
from tff_ditto.models import architectures  # noqa: E402
from tff_ditto import runtime  # noqa: E402
from tff_ditto.aggregators import gather as gather_lib  # noqa: E402

GB = 1e9


def femnist_update_shapes() -> list[tuple[int, ...]]:
  model = architectures.build_femnist_cnn(62, seed=0)
  return [tuple(w.shape) for w in model.trainable_weights]


def make_values(n, shapes, seed=0):
  rng = np.random.default_rng(seed)
  return [
      [(0.01 * rng.standard_normal(s)).astype(np.float32) for s in shapes]
      for _ in range(n)
  ]


def aggregator_factories(n: int, gather: str, gather_dir=None):
  """name -> factory for n clients (f = b = E = n // 10, at least 1)."""
  f = max(1, n // 10)
  common = dict(gather=gather, gather_dir=gather_dir)
  return {
      'mean': lambda: agg.MeanFactory(**common),
      'median': lambda: agg.MedianFactory(**common),
      'trimmed_mean': lambda: agg.TrimmedMeanFactory(f, **common),
      'krum': lambda: agg.KrumFactory(f, **common),
      'multi_krum': lambda: agg.KrumFactory(f, m=None, **common),
      'rfa': lambda: agg.GeometricMedianFactory(**common),
      'cclip': lambda: agg.CenteredClippingFactory(10.0, **common),
      'norm_clip': lambda: agg.MedianNormClippingFactory(**common),
      'k_norm': lambda: agg.KNormFactory(f, **common),
      'bucketing2_rfa': lambda: agg.BucketingFactory(
          agg.GeometricMedianFactory(**common), 2
      ),
      'bucketing2_krum': lambda: agg.BucketingFactory(
          agg.KrumFactory(f, **common), 2
      ),
  }


# Extra memory of each rule, in copies of the [n, d] matrix (transpose,
# difference or clipped matrices), rough.
RULE_COPIES = {
    'tff_mean': 0.0,
    'mean': 0.0,
    'median': 1.5,
    'trimmed_mean': 2.5,
    'krum': 1.0,
    'multi_krum': 1.0,
    'rfa': 1.0,
    'cclip': 1.5,
    'norm_clip': 1.0,
    'k_norm': 0.5,
    'bucketing2_rfa': 2.0,
    'bucketing2_krum': 2.0,
}


def predicted_gb(n: int, dim: int, name: str, gather: str, feed: str) -> float:
  """Rough peak of this process + worker + gather files, in GB.

  Calibrated on this benchmark's measured peaks (d = 222k): feeding the
  values from Python, TFF's serialization and transfer alone (tff_mean)
  peaked at 10.2 GB for n = 1000 and 1.8 GB for n = 100, i.e. ~0.75 GB +
  10.8 copies of the values. Generated in the worker, the values are one
  copy. The watchdog is the actual guard; this only skips the hopeless.
  """
  copy = n * dim * 4 / GB
  gather_copies = 1.5 if name != 'tff_mean' else 0.0
  if gather == 'concat':
    # The worker keeps every intermediate accumulator (1, 2, ..., n rows)
    # until the aggregation ends: measured 6.2 GB at n = 100 against 1.8 GB
    # for the file gather, i.e. ~n/2 copies.
    gather_copies = 1.5 + n / 2
  compute = gather_copies + RULE_COPIES[name]
  if feed == 'python' and gather != 'concat':
    # The transfer's buffers are freed before the rule runs (measured: the
    # file-gather mean peaked only 0.6 GB above tff_mean at n = 1000), so the
    # peak is that of the transfer or of the computation (the Python list
    # and the worker's ~3 copies of the values, the gather and the rule).
    return 0.75 + max(10.8 + 0.5 * gather_copies, 4.0 + compute) * copy
  transfer = 10.8 if feed == 'python' else 1.0
  return 0.75 + (transfer + compute) * copy


def predicted_concat_memcpy_gb(n: int, dim: int) -> float:
  return n * (n + 1) / 2 * dim * 4 / GB


def _rss_gb(pid: int) -> float:
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmRSS'):
          return int(line.split()[1]) * 1e3 / GB
  except OSError:
    pass
  return 0.0


def _children(pid: int) -> list[int]:
  try:
    with open(f'/proc/{pid}/task/{pid}/children') as f:
      return [int(c) for c in f.read().split()]
  except OSError:
    return []


def _tree_rss_gb(pid: int) -> float:
  return _rss_gb(pid) + sum(_tree_rss_gb(c) for c in _children(pid))


def _available_gb() -> float:
  with open('/proc/meminfo') as f:
    for line in f:
      if line.startswith('MemAvailable'):
        return int(line.split()[1]) * 1e3 / GB
  return float('inf')


def _dir_gb(directory: str) -> float:
  total = 0
  for root, _, files in os.walk(directory):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:
        pass
  return total / GB


def fresh_worker():
  runtime.stop_started_workers()
  runtime.configure_local_execution()


def clear_worker_values(n: int):
  """Disposes the worker's executor for this cardinality (frees its values)."""
  context = tff.framework.get_context_stack().current
  context.executor_factory.clean_up_executor({tff.CLIENTS: n})


def worker_round_fn(process, shapes):
  """A federated round whose client updates are generated in the worker.

  Client i's update is `0.01 * stateless_normal(shape, seed=[i, leaf])`, made
  by a client-side TF computation, so no update crosses from Python: the
  time is the aggregator's (plus the generation, see `tff_mean`).
  """

  @tff.tensorflow.computation(tff.TensorType(np.int32))
  def make_update(seed):
    return [
        0.01 * tf.random.stateless_normal(shape, seed=tf.stack([seed, i]))
        for i, shape in enumerate(shapes)
    ]

  state_type = process.initialize.type_signature.result

  @tff.federated_computation(
      state_type, tff.FederatedType(np.int32, tff.CLIENTS)
  )
  def round_fn(state, seeds):
    out = process.next(state, tff.federated_map(make_update, seeds))
    return out.state, out.result, out.measurements

  return round_fn


def run_one(config: dict) -> dict:
  """Runs one configuration in this (child) process; returns its timings."""
  runtime.set_quiet_logs(0)
  shapes = femnist_update_shapes()
  value_type = tff.types.tensorflow_to_type(
      [tf.TensorSpec(s, tf.float32) for s in shapes]
  )
  n, name, gather, feed = (
      config['n'],
      config['aggregator'],
      config['gather'],
      config['feed'],
  )
  if feed == 'python':
    values = make_values(n, shapes)
  else:
    values = [np.int32(i) for i in range(n)]
  if name == 'tff_mean':
    factory = tff.aggregators.UnweightedMeanFactory()
  else:
    factory = aggregator_factories(n, gather, config['gather_dir'])[name]()
  fresh_worker()
  process = factory.create(value_type)
  state = process.initialize()
  if feed == 'worker':
    round_fn = worker_round_fn(process, shapes)
    call = lambda state: round_fn(state, values)[0]
  else:
    call = lambda state: process.next(state, values).state
  times = []
  for _ in range(config['reps'] + 1):
    start = time.perf_counter()
    state = call(state)
    times.append(time.perf_counter() - start)
    clear_worker_values(n)
  runtime.stop_started_workers()
  return dict(
      first_s=times[0],
      median_s=statistics.median(times[1:]),
      min_s=min(times[1:]),
      reps=config['reps'],
  )


def run_in_subprocess(config: dict, limit_gb: float, timeout_s: float) -> dict:
  """Runs `run_one` in a child process group, killed past the limits."""
  import json  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top

  child = subprocess.Popen(
      [
          sys.executable,
          os.path.abspath(__file__),
          '--run_one',
          json.dumps(config),
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      start_new_session=True,  # own process group: the child and its worker
      text=True,
  )
  peak, reason, start = 0.0, None, time.monotonic()
  while child.poll() is None:
    used = _tree_rss_gb(child.pid) + _dir_gb(config['gather_dir'])
    peak = max(peak, used)
    if used > limit_gb:
      reason = f'memory {used:.1f} GB > limit {limit_gb:g} GB'
    elif _available_gb() < 1.5:
      reason = f'machine memory available < 1.5 GB (at {used:.1f} GB used here)'
    elif time.monotonic() - start > timeout_s:
      reason = f'timeout after {timeout_s:g} s'
    if reason:
      os.killpg(child.pid, signal.SIGKILL)  # our own child's group, by id
      child.wait()
      break
    time.sleep(0.2)
  out = child.stdout.read()
  shutil.rmtree(config['gather_dir'], ignore_errors=True)
  if reason:
    return dict(status='skipped', peak_gb=peak, note=reason)
  lines = [l for l in out.splitlines() if l.startswith('RESULT ')]
  if child.returncode != 0 or not lines:
    return dict(
        status='failed', peak_gb=peak, note=f'exit code {child.returncode}'
    )
  result = json.loads(lines[-1][len('RESULT ') :])
  result.update(status='ok', peak_gb=peak, note='')
  return result


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='10,100,1000')
  parser.add_argument('--gather_sizes', default='10,100,1000')
  parser.add_argument(
      '--worker_sizes',
      default='100,1000',
      help='sizes also run with the updates generated inside the worker',
  )
  parser.add_argument(
      '--aggregators',
      default=(
          'tff_mean,mean,median,trimmed_mean,krum,multi_krum,rfa,cclip,'
          'norm_clip,k_norm,bucketing2_rfa,bucketing2_krum'
      ),
  )
  parser.add_argument('--gather_aggregators', default='mean,median,krum')
  parser.add_argument('--reps', type=int, default=3)
  parser.add_argument('--reps_large', type=int, default=2, help='for n >= 1000')
  parser.add_argument('--memory_limit_gb', type=float, default=12.0)
  parser.add_argument('--timeout_s', type=float, default=1200.0)
  parser.add_argument(
      '--max_concat_memcpy_gb',
      type=float,
      default=50.0,
      help='skip concat gathers whose O(n^2 d) copying exceeds this',
  )
  parser.add_argument(
      '--output', default=os.path.join(REPO, 'results', 'bench_aggregators.csv')
  )
  parser.add_argument(
      '--update',
      action='store_true',
      help='replace only the rows of the configurations run now in --output',
  )
  parser.add_argument('--run_one', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.run_one:
    import json  # pylint: disable=g-import-not-at-top

    print('RESULT ' + json.dumps(run_one(json.loads(args.run_one))), flush=True)
    return

  shapes = femnist_update_shapes()
  dim = int(sum(np.prod(s) for s in shapes))
  sizes = [int(s) for s in args.sizes.split(',') if s]
  gather_sizes = {int(s) for s in args.gather_sizes.split(',') if s}
  worker_sizes = [int(s) for s in args.worker_sizes.split(',') if s]
  names = [a for a in args.aggregators.split(',') if a]
  gather_names = [a for a in args.gather_aggregators.split(',') if a]
  bench_root = os.path.join(
      gather_lib.default_gather_root(), f'bench_{os.getpid()}'
  )
  date = datetime.datetime.now().isoformat(timespec='seconds')
  machine = f'{platform.node()} {os.cpu_count()} cpus'

  configs = []  # (feed, n, name, gather)
  for n in sizes:
    for name in names:
      configs.append(
          ('python', n, name, 'none' if name == 'tff_mean' else 'file')
      )
    if n in gather_sizes:
      for name in gather_names:
        configs.append(('python', n, name, 'concat'))
  for n in worker_sizes:
    for name in names:
      configs.append(
          ('worker', n, name, 'none' if name == 'tff_mean' else 'file')
      )

  old_rows = []
  if args.update and os.path.exists(args.output):
    with open(args.output, newline='') as f:
      old_rows = list(csv.DictReader(f))
  rows = []
  for index, (feed, n, name, gather) in enumerate(configs):
    row = dict(
        date=date,
        machine=machine,
        feed=feed,
        n=n,
        d=dim,
        aggregator=name,
        gather=gather,
        status='',
        median_s='',
        min_s='',
        first_s='',
        reps='',
        peak_gb='',
        load_avg=f'{os.getloadavg()[0]:.1f}',
        note='',
    )
    predicted = predicted_gb(n, dim, name, gather, feed)
    reps = args.reps_large if n >= 1000 else args.reps
    if predicted > args.memory_limit_gb:
      row.update(
          status='skipped',
          note=(
              f'predicted memory {predicted:.1f} GB >'
              f' {args.memory_limit_gb:g} GB'
          ),
      )
    elif (
        gather == 'concat'
        and predicted_concat_memcpy_gb(n, dim) > args.max_concat_memcpy_gb
    ):
      row.update(
          status='skipped',
          note=(
              f'concat gather copies {predicted_concat_memcpy_gb(n, dim):.0f}'
              f' GB (O(n^2 d)) per round, > {args.max_concat_memcpy_gb:g} GB'
          ),
      )
    else:
      config = dict(
          feed=feed,
          n=n,
          aggregator=name,
          gather=gather,
          reps=reps,
          gather_dir=os.path.join(bench_root, str(index)),
      )
      result = run_in_subprocess(config, args.memory_limit_gb, args.timeout_s)
      for key in ('median_s', 'min_s', 'first_s'):
        if key in result:
          result[key] = f'{result[key]:.3f}'
      result['peak_gb'] = f"{result['peak_gb']:.1f}"
      row.update(result)
    rows.append(row)
    print(
        f"{feed:6s} n={n:5d} {name:16s} {gather:6s} {row['status']:7s} "
        f"median={row['median_s']}s first={row['first_s']}s "
        f"peak={row['peak_gb']}GB {row['note']}",
        flush=True,
    )
    all_rows = write_csv(args.output, old_rows, rows)
  shutil.rmtree(bench_root, ignore_errors=True)

  for feed, title in (
      ('python', 'Updates fed from Python (lists of numpy arrays)'),
      ('worker', 'Updates generated in the TFF worker (no Python transfer)'),
  ):
    feed_rows = [r for r in all_rows if r['feed'] == feed]
    if feed_rows:
      feed_sizes = sorted({int(r['n']) for r in feed_rows})
      print(f'\n{title}: median seconds per round\n')
      print(markdown_table(feed_rows, feed_sizes))
  print(f'\nwritten: {args.output}')


def write_csv(path, old_rows, rows):
  """Writes `rows`, replacing rows of the same configuration in `old_rows`."""
  key = lambda r: (r['feed'], str(r['n']), r['aggregator'], r['gather'])
  new_by_key = {key(r): r for r in rows}
  merged = [new_by_key.pop(key(r), r) for r in old_rows]
  merged += [r for r in rows if key(r) in new_by_key]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(merged)
  return merged


def markdown_table(rows, sizes) -> str:
  keys = []
  for row in rows:
    key = (row['aggregator'], row['gather'])
    if key not in keys:
      keys.append(key)
  cell = {}
  for row in rows:
    if row['status'] == 'ok':
      value = f"{float(row['median_s']):.2f}"
    else:
      value = f"skipped ({row['note']})"
    cell[(row['aggregator'], row['gather'], int(row['n']))] = value
  header = (
      '| aggregator | gather | ' + ' | '.join(f'n={n}' for n in sizes) + ' |'
  )
  lines = [header, '|' + '---|' * (len(sizes) + 2)]
  for name, gather in keys:
    lines.append(
        f'| {name} | {gather} | '
        + ' | '.join(cell.get((name, gather, n), '') for n in sizes)
        + ' |'
    )
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
