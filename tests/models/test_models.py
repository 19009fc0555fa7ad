"""Tests for tff_ditto.models (real TensorFlow / TFF, no mocks)."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import evaluation
from tff_ditto import initial_weights
from tff_ditto import models
from tff_ditto.models import layers
from tff_ditto.models import losses

EXPECTED = {
    # name: (trainable params, x shape without batch, number of outputs)
    'femnist': (222_078, (28, 28, 1), 62),
    'fmnist': (3_274_634, (28, 28, 1), 10),
    'celeba': (31_202, (84, 84, 3), 2),
    'vehicle': (101, (100,), 1),
    'synthetic': (610, (60,), 10),
}


def _count(variables):
  return sum(int(np.prod(v.shape)) for v in variables)


def _random_batch(spec, n, seed=0):
  rng = np.random.default_rng(seed)
  x_shape = (n,) + tuple(spec.input_spec['x'].shape[1:])
  x = rng.normal(size=x_shape).astype(np.float32)
  if spec.name == 'vehicle':
    y = rng.choice([-1.0, 1.0], size=n).astype(np.float32)
  else:
    num_classes = EXPECTED[spec.name][2]
    y = rng.integers(0, num_classes, size=n).astype(np.int32)
  return collections.OrderedDict(x=x, y=y)


def _dataset(spec, n, batch_size, seed=0):
  return tf.data.Dataset.from_tensor_slices(_random_batch(spec, n, seed)).batch(
      batch_size
  )


# --- ModelSpec / get_model_spec ---------------------------------------------


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_parameter_counts_and_output_shapes(name):
  spec = models.get_model_spec(name)
  params, x_shape, outputs = EXPECTED[name]
  model = spec.keras_model_fn()
  assert spec.name == name
  assert spec.num_parameters == params
  assert _count(model.trainable_variables) == params
  assert model.built and model.input_shape == (None,) + x_shape
  assert model.optimizer is None  # uncompiled
  assert tuple(spec.input_spec['x'].shape) == (None,) + x_shape
  assert tuple(spec.input_spec['y'].shape) == (None,)
  assert list(spec.input_spec) == ['x', 'y']
  y = model(np.zeros((3,) + x_shape, np.float32), training=False)
  assert y.shape == (3, outputs)
  metrics = spec.metrics_fn()
  assert [m.name for m in metrics] == ['accuracy']
  assert isinstance(spec.loss_fn(), tf.keras.losses.Loss)
  # Fresh objects on every call.
  assert spec.keras_model_fn() is not model
  assert spec.metrics_fn()[0] is not metrics[0]


def test_celeba_normalization_keeps_no_statistics():
  """As the reference: batch statistics always, so no moving statistics."""
  model = models.get_model_spec('celeba').keras_model_fn()
  assert model.non_trainable_variables == []


def test_batch_statistics_normalization_matches_numpy_in_every_mode():
  layer = layers.BatchStatisticsNormalization()
  x = np.random.default_rng(0).normal(5.0, 3.0, (4, 3, 3, 2)).astype(np.float32)
  layer.build(x.shape)
  layer.gamma.assign([2.0, 0.5])
  layer.beta.assign([1.0, -1.0])
  mean = x.mean(axis=(0, 1, 2))
  variance = x.var(axis=(0, 1, 2))
  expected = (x - mean) / np.sqrt(variance + 1e-3) * [2.0, 0.5] + [1.0, -1.0]
  for training in (True, False, None):
    np.testing.assert_allclose(
        layer(x, training=training), expected, rtol=1e-5, atol=1e-5
    )


def test_global_model_evaluation_normalizes_with_the_data_statistics():
  """The server's CelebA model, evaluated by TFF, uses batch statistics.

  Personal models train with batch statistics; the global model is
  evaluated the same way, so a shift of the data's mean and scale is
  normalized away at evaluation as in training (with moving statistics the
  global model never updated them and normalized with mean 0, variance 1).
  """

  spec = models.get_model_spec('celeba', seed=0)
  model_fn = spec.tff_model_fn()
  weights = initial_weights.initial_model_weights(model_fn, seed=0)
  rng = np.random.default_rng(1)
  x = rng.normal(5.0, 3.0, (6, 84, 84, 3)).astype(np.float32)
  y = rng.integers(0, 2, 6).astype(np.int32)
  batches = tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=x, y=y)
  ).batch(6)
  metrics = evaluation.build_global_evaluation(model_fn)(weights, [batches])
  keras_model = spec.keras_model_fn()
  keras_model.set_weights(list(weights.trainable))
  logits = keras_model(x, training=True)
  expected_loss = tf.keras.losses.SparseCategoricalCrossentropy(
      from_logits=True
  )(y, logits)
  np.testing.assert_allclose(
      metrics[0]['loss_sum'] / 6, float(expected_loss), rtol=1e-4
  )


def test_input_spec_dtypes():
  for name in ('femnist', 'fmnist', 'celeba', 'synthetic'):
    spec = models.get_model_spec(name)
    assert spec.input_spec['x'].dtype == tf.float32
    assert spec.input_spec['y'].dtype == tf.int32
  vehicle = models.get_model_spec('vehicle')
  assert vehicle.input_spec['y'].dtype == tf.float32


@pytest.mark.parametrize(
    'alias, name',
    [
        ('femnist', 'femnist'),
        ('emnist', 'femnist'),
        ('fmnist', 'fmnist'),
        ('celeba', 'celeba'),
        ('tff_celeba', 'celeba'),
        ('vehicle', 'vehicle'),
        ('synthetic', 'synthetic'),
        ('synthetic_1_1', 'synthetic'),
        ('synthetic_iid', 'synthetic'),
        ('leaf_synthetic', 'synthetic'),
    ],
)
def test_get_model_spec_aliases(alias, name):
  assert models.get_model_spec(alias).name == name


def test_get_model_spec_unknown_lists_names():
  with pytest.raises(ValueError) as error:
    models.get_model_spec('cifar10')
  message = str(error.value)
  for name in ('femnist', 'fmnist', 'celeba', 'vehicle', 'synthetic'):
    assert name in message


def test_seeded_specs_give_identical_initial_weights():
  a = models.get_model_spec('femnist', seed=3).keras_model_fn()
  b = models.get_model_spec('femnist', seed=3).keras_model_fn()
  c = models.get_model_spec('femnist', seed=4).keras_model_fn()
  for va, vb in zip(a.get_weights(), b.get_weights()):
    np.testing.assert_array_equal(va, vb)
  assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
  vehicle = models.get_model_spec('vehicle').keras_model_fn()
  assert all(not np.any(w) for w in vehicle.get_weights())  # zero init


# --- TFF wrapping -------------------------------------------------------------


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_tff_model_forward_pass(name):
  spec = models.get_model_spec(name)
  model = spec.tff_model_fn()()
  assert isinstance(model, tff.learning.models.VariableModel)
  assert _count(model.trainable_variables) == spec.num_parameters
  batch = _random_batch(spec, 4)
  output = model.forward_pass(batch, training=True)
  assert output.num_examples.numpy() == 4
  assert np.isfinite(output.loss.numpy())
  values = model.report_local_unfinalized_metrics()
  assert 'accuracy' in values and 'loss' in values
  # Unfinalized accuracy is [correct, count] (the finalizers are meant to run
  # inside TFF computations, not eagerly).
  correct, count = values['accuracy']
  assert count == 4 and 0 <= correct <= 4
  assert set(model.metric_finalizers()) >= {'accuracy', 'loss'}


def _one_fedavg_round(spec, num_clients=2, examples=8, batch_size=4):
  process = tff.learning.algorithms.build_weighted_fed_avg(
      spec.tff_model_fn(),
      client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.01),
  )
  state = process.initialize()
  data = [
      _dataset(spec, examples, batch_size, seed=i) for i in range(num_clients)
  ]
  output = process.next(state, data)
  return process, state, data, output


@pytest.mark.parametrize('name', ['synthetic', 'vehicle'])
def test_fedavg_round_runs(name):
  spec = models.get_model_spec(name)
  process, state, _, output = _one_fedavg_round(spec)
  train = output.metrics['client_work']['train']
  assert train['num_examples'] == 16
  assert np.isfinite(train['loss'])
  assert 0.0 <= train['accuracy'] <= 1.0
  before = process.get_model_weights(state).trainable
  after = process.get_model_weights(output.state).trainable
  assert [w.shape for w in before] == [w.shape for w in after]
  assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_femnist_fedavg_round_is_bit_reproducible():
  """Dropout masks depend on the data only: re-running a round is identical."""
  spec = models.get_model_spec('femnist', seed=1)
  process, state, data, first = _one_fedavg_round(
      spec, examples=6, batch_size=3
  )
  second = process.next(state, data)
  a = process.get_model_weights(first.state).trainable
  b = process.get_model_weights(second.state).trainable
  for wa, wb in zip(a, b):
    np.testing.assert_array_equal(wa, wb)
  assert any(
      not np.array_equal(w0, w1)
      for w0, w1 in zip(process.get_model_weights(state).trainable, a)
  )


# --- Vehicle SVM loss and accuracy -------------------------------------------


def _hand_vehicle_model():
  spec = models.get_model_spec('vehicle')
  model = spec.tff_model_fn()()
  kernel = np.zeros((100, 1), np.float32)
  kernel[0, 0], kernel[1, 0] = 1.0, -2.0
  weights = tff.learning.models.ModelWeights.from_model(model)
  weights.trainable[0].assign(kernel)
  weights.trainable[1].assign([0.5])
  x = np.zeros((2, 100), np.float32)
  x[0, 0] = 1.0  # y_hat = 1 + 0.5 = 1.5, y = +1 -> hinge 0
  x[1, 1] = 1.0  # y_hat = -2 + 0.5 = -1.5, y = +1 -> hinge 2.5
  batch = collections.OrderedDict(x=x, y=np.array([1.0, 1.0], np.float32))
  return model, batch


def test_vehicle_forward_pass_loss_includes_l2_term():
  model, batch = _hand_vehicle_model()
  output = model.forward_pass(batch, training=True)
  # mean hinge (0 + 2.5) / 2 = 1.25, plus 0.01 * (1^2 + (-2)^2) = 0.05.
  np.testing.assert_allclose(output.loss.numpy(), 1.30, rtol=1e-6)
  np.testing.assert_allclose(
      output.predictions.numpy(), [[1.5], [-1.5]], rtol=1e-6
  )
  # TFF's reported 'loss' metric calls only the loss object: no L2 term.
  loss_sum, count = model.report_local_unfinalized_metrics()['loss']
  np.testing.assert_allclose(loss_sum / count, 1.25, rtol=1e-6)


def test_vehicle_gradient_includes_l2_term():
  model, batch = _hand_vehicle_model()
  with tf.GradientTape() as tape:
    loss = model.forward_pass(batch, training=True).loss
  grad_kernel, grad_bias = tape.gradient(loss, model.trainable_variables)
  # d/dW: hinge active on example 2 only: -(1/2) * y * x2 = -0.5 e_1;
  # L2: 0.02 * W = (0.02, -0.04, 0, ...).
  expected = np.zeros((100, 1), np.float32)
  expected[0, 0] = 0.02
  expected[1, 0] = -0.04 - 0.5
  np.testing.assert_allclose(grad_kernel.numpy(), expected, atol=1e-6)
  np.testing.assert_allclose(grad_bias.numpy(), [-0.5], atol=1e-6)


def test_svm_hinge_loss_by_hand():
  loss = losses.SVMHingeLoss()
  y_true = tf.constant([1.0, -1.0, -1.0, 1.0])
  y_pred = tf.constant([[2.0], [0.5], [-3.0], [0.0]])
  # max(0, 1 - y*yhat): 0, 1.5, 0, 1 -> mean 0.625
  np.testing.assert_allclose(loss(y_true, y_pred).numpy(), 0.625, rtol=1e-6)


def test_vehicle_accuracy_by_hand():
  metric = models.get_model_spec('vehicle').metrics_fn()[0]
  assert metric.name == 'accuracy'
  metric.update_state(
      tf.constant([1.0, 1.0, -1.0, -1.0]),
      tf.constant([[1.5], [-0.2], [0.0], [3.0]]),
  )
  # sign: 1 (right), -1 (wrong), 0 (wrong: 0 is neither label), 1 (wrong).
  np.testing.assert_allclose(metric.result().numpy(), 0.25)
  metric.update_state(tf.constant([-1.0, 1.0]), tf.constant([[-4.0], [0.1]]))
  np.testing.assert_allclose(metric.result().numpy(), 0.5)  # 3 of 6
  # TFF re-creates constructed metrics from their config.
  clone = type(metric).from_config(metric.get_config())
  assert clone.name == 'accuracy' and isinstance(clone, losses.SignAccuracy)


# --- DeterministicDropout ------------------------------------------------------


def _positive_input(shape, seed):
  return tf.random.stateless_uniform(shape, seed=[seed, 7]) + 1.0


def test_dropout_same_input_same_mask():
  layer = layers.DeterministicDropout(0.5, salt=11)
  x = _positive_input([8, 64], seed=1)
  a = layer(x, training=True).numpy()
  b = layer(tf.identity(x), training=True).numpy()
  np.testing.assert_array_equal(a, b)
  # A separate layer object with the same rate and salt: same mask too.
  c = layers.DeterministicDropout(0.5, salt=11)(x, training=True).numpy()
  np.testing.assert_array_equal(a, c)
  assert 0 < np.count_nonzero(a) < a.size


def test_dropout_different_inputs_or_salts_different_masks():
  layer = layers.DeterministicDropout(0.5, salt=11)
  x = _positive_input([8, 64], seed=1)
  x2 = x + tf.one_hot([[3]], 64)[0] * 1e-3  # tiny change in one row
  mask = lambda t: t.numpy() != 0
  m1 = mask(layer(x, training=True))
  assert not np.array_equal(m1, mask(layer(x2, training=True)))
  other_salt = layers.DeterministicDropout(0.5, salt=12)
  assert not np.array_equal(m1, mask(other_salt(x, training=True)))


def test_dropout_is_identity_at_inference():
  layer = layers.DeterministicDropout(0.5, salt=1)
  x = _positive_input([4, 16], seed=2)
  np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
  np.testing.assert_array_equal(layer(x).numpy(), x.numpy())
  model = models.get_model_spec('femnist', seed=0).keras_model_fn()
  images = tf.random.stateless_uniform([2, 28, 28, 1], seed=[1, 2])
  np.testing.assert_array_equal(
      model(images, training=False).numpy(), model(images).numpy()
  )
  # Training mode drops units, so the logits differ from inference.
  assert not np.allclose(model(images, training=True), model(images))


def test_dropout_scaling_preserves_mean():
  rate = 0.25
  layer = layers.DeterministicDropout(rate, salt=5)
  x = tf.ones([200, 500])
  y = layer(x, training=True).numpy()
  kept = y[y != 0]
  np.testing.assert_allclose(kept, 1.0 / (1.0 - rate), rtol=1e-6)
  assert abs(kept.size / y.size - (1.0 - rate)) < 0.01
  assert abs(y.mean() - 1.0) < 0.02


def test_dropout_gradient_is_mask_times_scale():
  layer = layers.DeterministicDropout(0.5, salt=3)
  x = tf.Variable(_positive_input([4, 32], seed=4))
  with tf.GradientTape() as tape:
    y = layer(x, training=True)
    total = tf.reduce_sum(y)
  grad = tape.gradient(total, x).numpy()
  np.testing.assert_array_equal(grad, (y.numpy() != 0) * 2.0)


def test_dropout_same_in_tf_function_and_tff_worker():
  layer = layers.DeterministicDropout(0.5, salt=9)
  x = _positive_input([6, 40], seed=3)
  eager = layer(x, training=True).numpy()

  graph_fn = tf.function(lambda t: layer(t, training=True))
  np.testing.assert_array_equal(graph_fn(x).numpy(), eager)
  cond_fn = tf.function(lambda t, training: layer(t, training=training))
  np.testing.assert_array_equal(cond_fn(x, tf.constant(True)).numpy(), eager)
  np.testing.assert_array_equal(cond_fn(x, tf.constant(False)).numpy(), x)

  # Runs in TFF's separate worker process.
  @tff.tensorflow.computation(tff.TensorType(np.float32, [None, 40]))
  def in_worker(t):
    return layers.DeterministicDropout(0.5, salt=9)(t, training=True)

  np.testing.assert_array_equal(in_worker(x.numpy()), eager)
  np.testing.assert_array_equal(in_worker(x.numpy()), eager)


def test_dropout_config_round_trip():
  layer = layers.DeterministicDropout(0.3, salt=42, name='drop')
  config = layer.get_config()
  assert config['rate'] == 0.3 and config['salt'] == 42
  clone = layers.DeterministicDropout.from_config(config)
  x = _positive_input([3, 10], seed=5)
  np.testing.assert_array_equal(
      clone(x, training=True).numpy(), layer(x, training=True).numpy()
  )
  model = models.get_model_spec('femnist', seed=0).keras_model_fn()
  cloned = tf.keras.models.clone_model(model)
  assert _count(cloned.trainable_variables) == 222_078
  with pytest.raises(ValueError):
    layers.DeterministicDropout(1.0)
