"""The models' custom Keras layers: deterministic dropout, batch statistics.

`DeterministicDropout` draws its masks from a stateless RNG seeded by the
layer's input, so a client update gives bit-identical results whenever and in
whichever process it is re-executed (FEMNIST). `BatchStatisticsNormalization`
normalizes with the statistics of the batch itself, always, as the reference's
CelebA model.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

# Keras registers the serializable classes as 'tff_ditto>ClassName'.
_KERAS_PACKAGE = 'tff_ditto'


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


@tf.keras.utils.register_keras_serializable(package=_KERAS_PACKAGE)
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
