"""Keras models of the Ditto reference implementation, packaged for TFF.

Each dataset gets a `ModelSpec`: a builder for a fresh, built, uncompiled Keras
model, its loss and its single metric (`'accuracy'`), the element spec of one
batch (`OrderedDict(x=..., y=...)`) and a `tff_model_fn()` that wraps all of it
with `tff.learning.models.from_keras_model`.

The architectures follow litian96/ditto (`flearn/models/*`), see
shared/reference/reference_implementations.md, section A.7:

| spec        | model                                              | params    |
|-------------|----------------------------------------------------|-----------|
| `femnist`   | CNN 16-32 conv5x5, FC 128, 62 classes, 2 dropouts  |   222,078 |
| `fmnist`    | CNN 32-64 conv5x5, FC 1024, 10 classes             | 3,274,634 |
| `celeba`    | 4 x [conv3x3x32, BatchNorm, maxpool, ReLU], FC 2   |    31,202 |
| `vehicle`   | linear SVM 100 -> 1, hinge loss + 0.01 * ||W||^2   |       101 |
| `synthetic` | multinomial logistic regression 60 -> 10           |       610 |

(`params` counts trainable parameters; for CelebA it includes the batch
normalization's gamma/beta, its only weights.)

Deliberate deviations from the reference code:

* FEMNIST: the reference calls `tf.nn.dropout` unconditionally, so dropout is
  also active when it evaluates. Here dropout is active in training only
  (`training=True`, which is what TFF's `forward_pass` uses for training) and
  is the identity at evaluation. The dropout masks come from a stateless RNG
  seeded by the layer input (`DeterministicDropout`), so a client update gives
  bit-identical results whenever and in whichever process it is re-executed.
* CelebA: as the reference (`tf.layers.batch_normalization(...,
  training=True)`), batch normalization always uses the statistics of the
  batch it normalizes, in training and at evaluation
  (`BatchStatisticsNormalization`); the model keeps no moving statistics, so it
  has no non-trainable weights, and the global model, the personal models and
  every fine-tuning start normalize alike. Evaluation therefore depends on how
  the test data are batched: the reference normalizes each device's whole
  test set as one batch; here each batch of `eval_batch_size` (100) examples.
* Vehicle: labels are a vector `[None]` of +-1 (the reference feeds `[None,1]`);
  the loss and accuracy reshape predictions `[None,1]` accordingly. The L2 term
  is a Keras `kernel_regularizer`. TFF's `VariableModel.forward_pass` adds
  `keras_model.losses` to the batch loss (so gradients and `BatchOutput.loss`
  include `0.01 * ||W||^2`), but the `'loss'` *metric* that `from_keras_model`
  reports only calls the loss object and therefore excludes the L2 term.

Initial weights: Keras initializers are unseeded unless `get_model_spec(...,
seed=...)` is used (or `tf.keras.utils.set_random_seed` was called). With a
seed, every layer gets its own fixed initializer seed, so `keras_model_fn()`
returns identical weights in every process.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff

_PACKAGE = 'tff_ditto'

# Coefficient of the L2 penalty 0.01 * sum(W**2) of the Vehicle SVM
# (litian96/ditto, flearn/models/vehicle/svm.py at HEAD).
VEHICLE_L2 = 0.01


# ---------------------------------------------------------------------------
# Deterministic dropout.
# ---------------------------------------------------------------------------


def _input_fingerprint(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Two int64 scalars that depend exactly (bit for bit) on the values of `x`.

  The float values are reinterpreted as int32 bit patterns and summed as
  int64. Integer addition is associative, so the result does not depend on the
  order or threading of the reduction (a float `reduce_sum` could). |sum| <
  N * 2**31, which cannot overflow int64 for fewer than 2**32 elements.

  Args:
    x: A floating point tensor (cast to float32 first; exact for f16/bf16).

  Returns:
    (sum of the bit patterns of all of `x`, sum over its first row `x[:1]`).
  """
  x = tf.stop_gradient(tf.cast(x, tf.float32))
  bits = tf.cast(tf.bitcast(x, tf.int32), tf.int64)
  total = tf.reduce_sum(bits)
  first_row = tf.reduce_sum(bits[:1])
  return total, first_row


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class DeterministicDropout(tf.keras.layers.Layer):
  """Dropout whose mask is a pure function of (input values, salt).

  Keras' `Dropout` draws from a stateful RNG, so its masks depend on how often
  the kernel ran before (in this process). Here, in training, the mask is drawn
  with `tf.random.stateless_uniform` under the seed

      fold_in(fold_in([salt, 0x5eed], sum(bits(x))), sum(bits(x[0])))

  where `bits` reinterprets float32 values as int32 (see `_input_fingerprint`).
  The same input therefore always gets the same mask, in eager mode, inside a
  `tf.function`, or inside a TFF computation executed by another process;
  different inputs (e.g. the same batch after a weight update) get
  (pseudo-)independent masks. Kept units are scaled by 1 / (1 - rate), so the
  expected output equals the input. At inference (`training` False/None) the
  layer is the identity.

  Give different dropout layers of a model different `salt`s so that their
  masks are independent. Do not derive the salt from the layer name: Keras
  auto-generated names depend on how many layers were built before.
  """

  def __init__(self, rate: float, salt: int = 0, **kwargs):
    super().__init__(**kwargs)
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f'Dropout rate must be in [0, 1), got {rate}.')
    self.rate = rate
    self.salt = int(salt)
    self.supports_masking = True

  def _dropout(self, inputs: tf.Tensor) -> tf.Tensor:
    if self.rate == 0.0:
      return tf.identity(inputs)
    total, first_row = _input_fingerprint(inputs)
    seed = tf.constant([self.salt, 0x5EED], dtype=tf.int64)
    seed = tf.random.experimental.stateless_fold_in(seed, total)
    seed = tf.random.experimental.stateless_fold_in(seed, first_row)
    uniform = tf.random.stateless_uniform(
        tf.shape(inputs), seed=seed, dtype=tf.float32
    )
    keep = tf.cast(uniform >= self.rate, inputs.dtype)
    scale = tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
    return inputs * keep * scale

  def call(self, inputs, training=None):
    if training is None:
      training = tf.keras.backend.learning_phase()
    if isinstance(training, (bool, int)):
      return self._dropout(inputs) if training else tf.identity(inputs)
    return tf.cond(
        tf.cast(training, tf.bool),
        lambda: self._dropout(inputs),
        lambda: tf.identity(inputs),
    )

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(rate=self.rate, salt=self.salt)
    return config


class BatchStatisticsNormalization(tf.keras.layers.Layer):
  """Batch normalization with the batch's own statistics, always.

  The reference's CelebA normalization (`tf.layers.batch_normalization` with
  `training=True` in every forward pass): per channel (last axis),
  `gamma * (x - mean) / sqrt(var + epsilon) + beta` with the mean and
  variance of the batch being normalized, in training and at evaluation
  alike. There are no moving statistics: gamma and beta are the layer's only
  (trainable) weights.
  """

  def __init__(self, epsilon: float = 1e-3, **kwargs):
    super().__init__(**kwargs)
    self.epsilon = float(epsilon)

  def build(self, input_shape):
    channels = int(input_shape[-1])
    self.gamma = self.add_weight(
        name='gamma', shape=[channels], initializer='ones', trainable=True
    )
    self.beta = self.add_weight(
        name='beta', shape=[channels], initializer='zeros', trainable=True
    )
    super().build(input_shape)

  def call(self, inputs, training=None):
    del training  # Batch statistics in every mode.
    axes = list(range(len(inputs.shape) - 1))
    mean, variance = tf.nn.moments(inputs, axes=axes)
    return tf.nn.batch_normalization(
        inputs, mean, variance, self.beta, self.gamma, self.epsilon
    )

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self) -> dict[str, Any]:
    config = super().get_config()
    config.update(epsilon=self.epsilon)
    return config


# ---------------------------------------------------------------------------
# Vehicle SVM loss and accuracy.
# ---------------------------------------------------------------------------


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class SVMHingeLoss(tf.keras.losses.Loss):
  """Per-example hinge loss max(0, 1 - y * y_hat) for labels y in {-1, +1}.

  Accepts `y_pred` of shape [B, 1] or [B] and `y_true` of shape [B] or [B, 1];
  the default reduction averages over the batch. Unlike
  `tf.keras.losses.Hinge`, labels are never converted from {0, 1}. The L2
  penalty of the reference loss is not part of this object: it is the model's
  kernel regularizer (see the module docstring).
  """

  def __init__(self, name: str = 'svm_hinge', **kwargs):
    super().__init__(name=name, **kwargs)

  def call(self, y_true, y_pred):
    y_pred = tf.reshape(tf.convert_to_tensor(y_pred), [-1])
    y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), [-1])
    return tf.maximum(0.0, 1.0 - y_true * y_pred)


def _sign_accuracy(y_true, y_pred):
  y_pred = tf.reshape(y_pred, [-1])
  y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), [-1])
  return tf.cast(tf.equal(tf.sign(y_pred), y_true), tf.float32)


@tf.keras.utils.register_keras_serializable(package=_PACKAGE)
class SignAccuracy(tf.keras.metrics.MeanMetricWrapper):
  """Mean of [sign(y_hat) == y] for labels y in {-1, +1}.

  As in the reference, a prediction of exactly 0 (sign 0) counts as wrong, so
  the zero-initialised SVM starts at accuracy 0.
  """

  def __init__(self, name: str = 'accuracy', dtype=None):
    super().__init__(_sign_accuracy, name=name, dtype=dtype)


# ---------------------------------------------------------------------------
# Model builders.
# ---------------------------------------------------------------------------


class _Initializers:
  """Glorot-uniform kernel initializers, seeded per layer when `seed` is set."""

  def __init__(self, seed: Optional[int]):
    self._seed = seed
    self._count = 0

  def kernel(self) -> tf.keras.initializers.Initializer:
    self._count += 1
    if self._seed is None:
      return tf.keras.initializers.GlorotUniform()
    return tf.keras.initializers.GlorotUniform(
        seed=int(self._seed) * 1000 + self._count
    )


def build_femnist_cnn(
    num_classes: int = 62, seed: Optional[int] = None
) -> tf.keras.Model:
  """LEAF/Ditto FEMNIST CNN on [28, 28, 1] images; 222,078 params for 62."""
  init = _Initializers(seed)
  return tf.keras.Sequential(
      [
          tf.keras.layers.InputLayer(input_shape=(28, 28, 1), dtype=tf.float32),
          tf.keras.layers.Conv2D(
              16, 5, padding='same', activation='relu',
              kernel_initializer=init.kernel(),
          ),
          tf.keras.layers.MaxPool2D(2, 2),
          tf.keras.layers.Conv2D(
              32, 5, padding='same', activation='relu',
              kernel_initializer=init.kernel(),
          ),
          tf.keras.layers.MaxPool2D(2, 2),
          DeterministicDropout(0.25, salt=1),
          tf.keras.layers.Flatten(),
          tf.keras.layers.Dense(
              128, activation='relu', kernel_initializer=init.kernel()
          ),
          DeterministicDropout(0.5, salt=2),
          tf.keras.layers.Dense(num_classes, kernel_initializer=init.kernel()),
      ],
      name='femnist_cnn',
  )


def build_fmnist_cnn(
    num_classes: int = 10, seed: Optional[int] = None
) -> tf.keras.Model:
  """Ditto Fashion-MNIST CNN on [28, 28, 1] images; 3,274,634 params."""
  init = _Initializers(seed)
  return tf.keras.Sequential(
      [
          tf.keras.layers.InputLayer(input_shape=(28, 28, 1), dtype=tf.float32),
          tf.keras.layers.Conv2D(
              32, 5, padding='same', activation='relu',
              kernel_initializer=init.kernel(),
          ),
          tf.keras.layers.MaxPool2D(2, 2),
          tf.keras.layers.Conv2D(
              64, 5, padding='same', activation='relu',
              kernel_initializer=init.kernel(),
          ),
          tf.keras.layers.MaxPool2D(2, 2),
          tf.keras.layers.Flatten(),
          tf.keras.layers.Dense(
              1024, activation='relu', kernel_initializer=init.kernel()
          ),
          tf.keras.layers.Dense(num_classes, kernel_initializer=init.kernel()),
      ],
      name='fmnist_cnn',
  )


def build_celeba_cnn(
    num_classes: int = 2, seed: Optional[int] = None
) -> tf.keras.Model:
  """LEAF/Ditto CelebA CNN on [84, 84, 3] images; 31,202 trainable params.

  Four blocks of conv3x3x32 (same) -> batch normalization with batch
  statistics (`BatchStatisticsNormalization`) -> maxpool 2 (same) -> ReLU,
  84 -> 42 -> 21 -> 11 -> 6, then a dense layer on 6*6*32 = 1152 features.
  """
  init = _Initializers(seed)
  layers = [tf.keras.layers.InputLayer(input_shape=(84, 84, 3), dtype=tf.float32)]
  for _ in range(4):
    layers += [
        tf.keras.layers.Conv2D(
            32, 3, padding='same', kernel_initializer=init.kernel()
        ),
        BatchStatisticsNormalization(),
        tf.keras.layers.MaxPool2D(2, 2, padding='same'),
        tf.keras.layers.ReLU(),
    ]
  layers += [
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(num_classes, kernel_initializer=init.kernel()),
  ]
  return tf.keras.Sequential(layers, name='celeba_cnn')


def build_vehicle_svm(
    num_features: int = 100, l2: float = VEHICLE_L2
) -> tf.keras.Model:
  """Linear SVM y_hat = x W + b with zero-initialised W, b; 101 params.

  `l2 * sum(W**2)` (not on b) is attached as a kernel regularizer, so it is in
  `model.losses` and in TFF's `forward_pass` loss.
  """
  return tf.keras.Sequential(
      [
          tf.keras.layers.InputLayer(input_shape=(num_features,), dtype=tf.float32),
          tf.keras.layers.Dense(
              1,
              kernel_initializer='zeros',
              bias_initializer='zeros',
              kernel_regularizer=tf.keras.regularizers.L2(l2),
          ),
      ],
      name='vehicle_svm',
  )


def build_logistic_regression(
    num_features: int = 60, num_classes: int = 10, seed: Optional[int] = None
) -> tf.keras.Model:
  """Multinomial logistic regression (logits); 610 params for 60 -> 10."""
  init = _Initializers(seed)
  return tf.keras.Sequential(
      [
          tf.keras.layers.InputLayer(input_shape=(num_features,), dtype=tf.float32),
          tf.keras.layers.Dense(num_classes, kernel_initializer=init.kernel()),
      ],
      name='logistic_regression',
  )


# ---------------------------------------------------------------------------
# ModelSpec.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """Everything needed to build one dataset's model for Keras and TFF.

  Attributes:
    name: Canonical name: 'femnist', 'fmnist', 'celeba', 'vehicle' or
      'synthetic'.
    keras_model_fn: No-arg callable returning a fresh, built (input shape
      known), uncompiled `tf.keras.Model` that outputs logits (classifiers) or
      the SVM score [B, 1] (vehicle).
    loss_fn: No-arg callable returning a fresh loss object
      (`SparseCategoricalCrossentropy(from_logits=True)` for classifiers,
      `SVMHingeLoss` for vehicle).
    metrics_fn: No-arg callable returning a list with exactly one fresh metric
      named 'accuracy'.
    input_spec: `OrderedDict(x=TensorSpec([None, ...]), y=TensorSpec([None]))`
      of one batch.
    num_parameters: Number of trainable parameters of the Keras model.
  """

  name: str
  keras_model_fn: Callable[[], tf.keras.Model]
  loss_fn: Callable[[], tf.keras.losses.Loss]
  metrics_fn: Callable[[], list[tf.keras.metrics.Metric]]
  input_spec: collections.OrderedDict
  num_parameters: int

  def tff_model_fn(self) -> Callable[[], tff.learning.models.VariableModel]:
    """A no-arg `model_fn` for `tff.learning` algorithms.

    Each call builds a fresh Keras model, loss and metrics and wraps them with
    `tff.learning.models.from_keras_model` (as TFF requires, inside the caller's
    graph context when called from a TFF computation).
    """

    def model_fn() -> tff.learning.models.VariableModel:
      return tff.learning.models.from_keras_model(
          self.keras_model_fn(),
          loss=self.loss_fn(),
          input_spec=self.input_spec,
          metrics=self.metrics_fn(),
      )

    return model_fn


def _classifier_loss() -> tf.keras.losses.Loss:
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _classifier_metrics() -> list[tf.keras.metrics.Metric]:
  return [tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')]


def _vehicle_metrics() -> list[tf.keras.metrics.Metric]:
  return [SignAccuracy(name='accuracy')]


def _spec(
    x_shape: tuple[int, ...], y_dtype: tf.DType = tf.int32
) -> collections.OrderedDict:
  return collections.OrderedDict(
      x=tf.TensorSpec((None,) + tuple(x_shape), tf.float32),
      y=tf.TensorSpec((None,), y_dtype),
  )


def _femnist(seed):
  return ModelSpec(
      name='femnist',
      keras_model_fn=lambda: build_femnist_cnn(62, seed=seed),
      loss_fn=_classifier_loss,
      metrics_fn=_classifier_metrics,
      input_spec=_spec((28, 28, 1)),
      # conv 5*5*1*16+16 + conv 5*5*16*32+32 + fc 1568*128+128 + fc 128*62+62
      num_parameters=416 + 12_832 + 200_832 + 7_998,  # 222,078
  )


def _fmnist(seed):
  return ModelSpec(
      name='fmnist',
      keras_model_fn=lambda: build_fmnist_cnn(10, seed=seed),
      loss_fn=_classifier_loss,
      metrics_fn=_classifier_metrics,
      input_spec=_spec((28, 28, 1)),
      # conv 832 + conv 51,264 + fc 3136*1024+1024 + fc 1024*10+10
      num_parameters=832 + 51_264 + 3_212_288 + 10_250,  # 3,274,634
  )


def _celeba(seed):
  return ModelSpec(
      name='celeba',
      keras_model_fn=lambda: build_celeba_cnn(2, seed=seed),
      loss_fn=_classifier_loss,
      metrics_fn=_classifier_metrics,
      input_spec=_spec((84, 84, 3)),
      # conv 896 + 3 * conv 9,248 + 4 * BN gamma/beta 64 + fc 1152*2+2
      num_parameters=896 + 3 * 9_248 + 4 * 64 + 2_306,  # 31,202
  )


def _vehicle(seed):
  del seed  # Zero-initialised, like the reference.
  return ModelSpec(
      name='vehicle',
      keras_model_fn=build_vehicle_svm,
      loss_fn=SVMHingeLoss,
      metrics_fn=_vehicle_metrics,
      input_spec=_spec((100,), tf.float32),
      num_parameters=100 + 1,
  )


def _synthetic(seed):
  return ModelSpec(
      name='synthetic',
      keras_model_fn=lambda: build_logistic_regression(60, 10, seed=seed),
      loss_fn=_classifier_loss,
      metrics_fn=_classifier_metrics,
      input_spec=_spec((60,)),
      num_parameters=60 * 10 + 10,  # 610
  )


_BUILDERS: dict[str, Callable[[Optional[int]], ModelSpec]] = {
    'femnist': _femnist,
    'emnist': _femnist,
    'fmnist': _fmnist,
    'celeba': _celeba,
    'tff_celeba': _celeba,
    'vehicle': _vehicle,
    'synthetic': _synthetic,
    'leaf_synthetic': _synthetic,
}


def model_names() -> list[str]:
  """Accepted dataset names (any name starting with 'synthetic' also works)."""
  return sorted(_BUILDERS)


def get_model_spec(dataset_name: str, seed: Optional[int] = None) -> ModelSpec:
  """Returns the `ModelSpec` for a dataset.

  Args:
    dataset_name: 'femnist' or 'emnist' (FEMNIST CNN), 'fmnist', 'celeba' or
      'tff_celeba', 'vehicle', 'synthetic', 'leaf_synthetic' or any name
      starting with 'synthetic' (e.g. 'synthetic_1_1'). Case-insensitive.
    seed: Optional seed for the kernel initializers, making `keras_model_fn()`
      return identical initial weights in every process. None keeps Keras'
      default (unseeded) initializers. Ignored by 'vehicle' (zero init).

  Raises:
    ValueError: For an unknown name; the message lists the accepted names.
  """
  key = str(dataset_name).strip().lower()
  if key.startswith('synthetic'):
    key = 'synthetic'
  builder = _BUILDERS.get(key)
  if builder is None:
    raise ValueError(
        f'Unknown dataset name {dataset_name!r} for a model; expected one of '
        f'{model_names()} (or any name starting with "synthetic").'
    )
  return builder(seed)
