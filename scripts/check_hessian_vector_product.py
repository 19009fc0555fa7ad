"""Compares Per-FedAvg's finite-difference Hessian-vector product with autodiff.

Per-FedAvg (HF) approximates H g by (grad F(w + delta g) - grad F(w - delta g))
/ (2 delta) (`tff_ditto.baselines.perfedavg.finite_difference_hvp`). On a
smooth model the approximation converges to the exact product as delta
shrinks; on a ReLU / max-pool network (the FEMNIST CNN) the gradient jumps
where units switch, and the difference quotient does not converge. This
script measures how far apart the two are on real client batches, at the
initial model, exactly as one Per-FedAvg meta step forms them (g is the
gradient on batch 2 after one inner step of size --alpha on batch 1; the
product is taken on batch 3, in inference mode):

  .venv/bin/python scripts/check_hessian_vector_product.py \
      --dataset=femnist --data_dir=../shared/data

Where delta * g is tiny (a client whose softmax saturates has a gradient of
1e-4 or less), float32 round-off dominates the difference quotient on any
model; compare clients with a gradient of a sensible size.

One CSV row per (client, delta): the norms of g, of the finite-difference
product, of the autodiff product, and of their difference, written to
--output (default results/hvp_check_<dataset>.csv); a per-delta summary is
printed.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import collections  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

# Imported before app.run: Keras 2.14 fails to build Sequential models eagerly
# when TensorFlow is first imported inside an absl main.
import tensorflow as tf  # noqa: E402

_DATASET = flags.DEFINE_string('dataset', 'synthetic', 'Dataset name.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Data directory.')
_CLIENTS = flags.DEFINE_integer(
    'clients', 5, 'Clients measured (the first N with 3 full batches).'
)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 10, 'Batch size.')
_ALPHA = flags.DEFINE_float('alpha', 0.1, 'Inner step alpha of the meta step.')
_DELTAS = flags.DEFINE_list(
    'deltas',
    ['1e-1', '1e-2', '1e-3', '1e-4'],
    'Finite-difference steps (Per-FedAvg uses 1e-3).',
)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the initial model.')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'CSV path (default results/hvp_check_<dataset>.csv).'
)


def _norm(tensors) -> float:
  return float(tf.sqrt(tf.add_n([tf.reduce_sum(t * t) for t in tensors])))


def autodiff_hvp(model, trainable, batch, vector):
  """H v of the batch loss (inference mode) by forward-over-backward."""
  with tf.GradientTape() as outer:
    with tf.GradientTape() as inner:
      loss = model.forward_pass(batch, training=False).loss
    gradients = inner.gradient(loss, trainable)
    dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(gradients, vector)])
  return tuple(outer.gradient(dot, trainable))


def measure_client(model_fn, arrays, batch_size, alpha, deltas):
  """Rows (delta, norms) for one client's first three batches."""
  from tff_ditto import optimization  # pylint: disable=g-import-not-at-top
  from tff_ditto.baselines import perfedavg  # pylint: disable=g-import-not-at-top

  batches = list(
      tf.data.Dataset.from_tensor_slices(
          collections.OrderedDict(x=arrays['x'], y=arrays['y'])
      )
      .batch(batch_size, drop_remainder=True)
      .take(3)
  )
  if len(batches) < 3:
    return []
  model = model_fn()
  trainable = tuple(model.trainable_variables)
  start = [tf.identity(v) for v in trainable]
  inner_gradients, _, _ = optimization.gradient(model, trainable, batches[0])
  for variable, x, g in zip(trainable, start, inner_gradients):
    variable.assign(x - alpha * g)
  meta_gradients, _, _ = optimization.gradient(model, trainable, batches[1])
  for variable, x in zip(trainable, start):
    variable.assign(x)
  exact = autodiff_hvp(model, trainable, batches[2], meta_gradients)
  rows = []
  for delta in deltas:
    approximate = perfedavg.finite_difference_hvp(
        model, trainable, batches[2], meta_gradients, delta
    )
    rows.append(
        collections.OrderedDict(
            delta=delta,
            gradient_norm=_norm(meta_gradients),
            finite_difference_norm=_norm(approximate),
            autodiff_norm=_norm(exact),
            error_norm=_norm([a - e for a, e in zip(approximate, exact)]),
        )
    )
  return rows


def main(argv):
  del argv
  import pandas as pd  # pylint: disable=g-import-not-at-top
  from tff_ditto import models  # pylint: disable=g-import-not-at-top
  from tff_ditto.data import load_dataset  # pylint: disable=g-import-not-at-top

  dataset = load_dataset(_DATASET.value, _DATA_DIR.value, seed=_SEED.value)
  model_fn = models.get_model_spec(
      dataset.name, seed=_SEED.value
  ).tff_model_fn()
  deltas = [float(d) for d in _DELTAS.value]
  rows = []
  for client_id in dataset.client_ids:
    client_rows = measure_client(
        model_fn,
        dataset.train[client_id],
        _BATCH_SIZE.value,
        _ALPHA.value,
        deltas,
    )
    for row in client_rows:
      rows.append(collections.OrderedDict(client_id=client_id, **row))
    if len({row['client_id'] for row in rows}) >= _CLIENTS.value:
      break
  if not rows:
    raise app.UsageError(
        f'no client of {dataset.name} has 3 batches of {_BATCH_SIZE.value}'
    )
  frame = pd.DataFrame(rows)
  frame['relative_error'] = frame.error_norm / frame.autodiff_norm
  output = _OUTPUT.value or os.path.join(
      'results', f'hvp_check_{dataset.name}.csv'
  )
  os.makedirs(os.path.dirname(output) or '.', exist_ok=True)
  frame.to_csv(output, index=False)
  summary = frame.groupby('delta')[[
      'gradient_norm',
      'finite_difference_norm',
      'autodiff_norm',
      'relative_error',
  ]].median()
  print(
      f'{dataset.name}: median over {frame.client_id.nunique()} clients '
      f'(alpha {_ALPHA.value}, batch {_BATCH_SIZE.value})'
  )
  print(summary.to_string(float_format=lambda v: f'{v:.4g}'))
  print(f'wrote {output}')


if __name__ == '__main__':
  app.run(main)
