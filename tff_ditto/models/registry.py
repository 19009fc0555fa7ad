"""The model of each dataset as a `ModelSpec` (`get_model_spec`)."""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto.models import architectures
from tff_ditto.models import losses


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
      `losses.SVMHingeLoss` for vehicle).
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
  return [losses.SignAccuracy(name='accuracy')]


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
      keras_model_fn=lambda: architectures.build_femnist_cnn(62, seed=seed),
      loss_fn=_classifier_loss,
      metrics_fn=_classifier_metrics,
      input_spec=_spec((28, 28, 1)),
      # conv 5*5*1*16+16 + conv 5*5*16*32+32 + fc 1568*128+128 + fc 128*62+62
      num_parameters=416 + 12_832 + 200_832 + 7_998,  # 222,078
  )


def _fmnist(seed):
  return ModelSpec(
      name='fmnist',
      keras_model_fn=lambda: architectures.build_fmnist_cnn(10, seed=seed),
      loss_fn=_classifier_loss,
      metrics_fn=_classifier_metrics,
      input_spec=_spec((28, 28, 1)),
      # conv 832 + conv 51,264 + fc 3136*1024+1024 + fc 1024*10+10
      num_parameters=832 + 51_264 + 3_212_288 + 10_250,  # 3,274,634
  )


def _celeba(seed):
  return ModelSpec(
      name='celeba',
      keras_model_fn=lambda: architectures.build_celeba_cnn(2, seed=seed),
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
      keras_model_fn=architectures.build_vehicle_svm,
      loss_fn=losses.SVMHingeLoss,
      metrics_fn=_vehicle_metrics,
      input_spec=_spec((100,), tf.float32),
      num_parameters=100 + 1,
  )


def _synthetic(seed):
  return ModelSpec(
      name='synthetic',
      keras_model_fn=lambda: architectures.build_logistic_regression(
          60, 10, seed=seed
      ),
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
