"""The Vehicle SVM's loss and accuracy for labels in {-1, +1}.

The L2 penalty of the reference loss is not part of `SVMHingeLoss`: it is the
model's kernel regularizer (`tff_ditto.models.architectures.build_vehicle_svm`),
so TFF's `forward_pass` loss includes it but the `'loss'` metric that
`from_keras_model` reports does not.
"""

from __future__ import annotations

import tensorflow as tf

# Keras registers the serializable classes as 'tff_ditto>ClassName'.
_KERAS_PACKAGE = 'tff_ditto'


@tf.keras.utils.register_keras_serializable(package=_KERAS_PACKAGE)
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


@tf.keras.utils.register_keras_serializable(package=_KERAS_PACKAGE)
class SignAccuracy(tf.keras.metrics.MeanMetricWrapper):
  """Mean of [sign(y_hat) == y] for labels y in {-1, +1}.

  As in the reference, a prediction of exactly 0 (sign 0) counts as wrong, so
  the zero-initialised SVM starts at accuracy 0.
  """

  def __init__(self, name: str = 'accuracy', dtype=None):
    super().__init__(_sign_accuracy, name=name, dtype=dtype)
