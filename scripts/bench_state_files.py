"""Benchmarks writing and reading one client state, in both file formats.

A client's state (`tff_ditto.client_states`) is written and read inside the
client computation at every round it trains and at every evaluation. This
measures, in `tf.function`s as the client computation runs them, a state of
`--entries` float32 entries (default: the Fashion-MNIST paper-budget cell's,
four personal CNNs of 3.27 M parameters, 52 MB):

  bundle       the current format: `client_states.write_flat` (SaveV2) and
               `client_states.read_flat` (RestoreV2);
  tensor_file  the earlier format: `tf.io.serialize_tensor` + `write_file`,
               `read_file` + `parse_tensor` (the `.tensor` files runs
               started before still hold).

Each read assigns the state to a variable (as the client does); each write
first concatenates two halves (as `flatten_tensors` does). The formats
alternate file by file over `--files` files, `--repeats` times; medians in
milliseconds per state. Results: results/bench_state_files.csv.

  .venv/bin/python scripts/bench_state_files.py
"""

from __future__ import annotations

import datetime
import os
import subprocess
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402

from tff_ditto import client_states  # noqa: E402

_ENTRIES = flags.DEFINE_integer(
    'entries', 13_098_536, 'Float32 entries of the state (default 52 MB).'
)
_FILES = flags.DEFINE_integer('files', 10, 'State files per format.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Passes over the files.')
_OUTPUT = flags.DEFINE_string(
    'output', 'results/bench_state_files.csv', 'CSV written with the results.'
)


def _formats(variable: tf.Variable):
  """Per format: (suffix, write function, read-and-assign function)."""
  half = variable.shape[0] // 2

  def flat():
    return tf.concat([variable[:half], variable[half:]], axis=0)

  @tf.function
  def write_bundle(path):
    # SaveV2 runs only as a dependency (as in the client computation).
    with tf.control_dependencies([client_states.write_flat(path, flat())]):
      return tf.constant(0)

  @tf.function
  def read_bundle(path):
    variable.assign(client_states.read_flat(path))

  @tf.function
  def write_tensor_file(path):
    tf.io.write_file(path, tf.io.serialize_tensor(flat()))

  @tf.function
  def read_tensor_file(path):
    variable.assign(tf.io.parse_tensor(tf.io.read_file(path), tf.float32))

  return {
      'bundle': (client_states.STATE_SUFFIX, write_bundle, read_bundle),
      'tensor_file': (
          client_states.LEGACY_SUFFIX,
          write_tensor_file,
          read_tensor_file,
      ),
  }


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  variable = tf.Variable(rng.normal(size=[_ENTRIES.value]).astype(np.float32))
  expected = variable.numpy()
  formats = _formats(variable)
  times = {(name, op): [] for name in formats for op in ('write', 'read')}
  with tempfile.TemporaryDirectory() as directory:
    for repeat in range(_REPEATS.value + 1):  # the first pass warms up
      for index in range(_FILES.value):
        for name, (suffix, write, read) in formats.items():
          path = tf.constant(os.path.join(directory, f'{index}{suffix}'))
          for op, function in (('write', write), ('read', read)):
            start = time.perf_counter()
            function(path)
            if repeat:
              times[(name, op)].append(time.perf_counter() - start)
          np.testing.assert_array_equal(variable.numpy(), expected)
  commit = subprocess.run(
      ['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True
  ).stdout.strip()
  rows = [
      dict(
          format=name,
          operation=op,
          median_ms=1000 * float(np.median(values)),
          min_ms=1000 * float(np.min(values)),
          max_ms=1000 * float(np.max(values)),
          states=len(values),
          megabytes=4 * _ENTRIES.value / 1e6,
          date=datetime.date.today().isoformat(),
          commit=commit,
          cores=os.cpu_count(),
      )
      for (name, op), values in times.items()
  ]
  frame = pd.DataFrame(rows)
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  frame.to_csv(_OUTPUT.value, index=False)
  print(frame.to_string(index=False, float_format='%.1f'))


if __name__ == '__main__':
  app.run(main)
