"""The Keras architectures of the Ditto reference code (litian96/ditto).

`build_femnist_cnn`, `build_fmnist_cnn`, `build_celeba_cnn`,
`build_vehicle_svm` and `build_logistic_regression` return fresh, built,
uncompiled Keras models; see `tff_ditto.models` for the table of parameters
and the deliberate deviations. With a `seed`, every layer's kernel
initializer gets its own fixed seed (`KernelInitializers`), so a builder
returns identical weights in every process.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from tff_ditto.models import layers as layers_lib

# Coefficient of the L2 penalty 0.01 * sum(W**2) of the Vehicle SVM
# (litian96/ditto, flearn/models/vehicle/svm.py at HEAD).
VEHICLE_L2 = 0.01


class KernelInitializers:
  """Glorot-uniform kernel initializers, seeded per layer when `seed` is set."""

  def __init__(self, seed: Optional[int]):
    self._seed = seed
    self._count = 0

  def kernel(self) -> tf.keras.initializers.Initializer:
    """The next layer's kernel initializer (seed * 1000 + its number)."""
    self._count += 1
    if self._seed is None:
      return tf.keras.initializers.GlorotUniform()
    return tf.keras.initializers.GlorotUniform(
        seed=int(self._seed) * 1000 + self._count
    )


def _conv_relu_pool(
    filters: int, init: KernelInitializers
) -> list[tf.keras.layers.Layer]:
  """A 5x5 'same' convolution with ReLU, then 2x2 max pooling (both CNNs)."""
  return [
      tf.keras.layers.Conv2D(
          filters,
          5,
          padding='same',
          activation='relu',
          kernel_initializer=init.kernel(),
      ),
      tf.keras.layers.MaxPool2D(2, 2),
  ]


def build_femnist_cnn(
    num_classes: int = 62, seed: Optional[int] = None
) -> tf.keras.Model:
  """LEAF/Ditto FEMNIST CNN on [28, 28, 1] images; 222,078 params for 62."""
  init = KernelInitializers(seed)
  return tf.keras.Sequential(
      [
          tf.keras.layers.InputLayer(input_shape=(28, 28, 1), dtype=tf.float32),
          *_conv_relu_pool(16, init),
          *_conv_relu_pool(32, init),
          layers_lib.DeterministicDropout(0.25, salt=1),
          tf.keras.layers.Flatten(),
          tf.keras.layers.Dense(
              128, activation='relu', kernel_initializer=init.kernel()
          ),
          layers_lib.DeterministicDropout(0.5, salt=2),
          tf.keras.layers.Dense(num_classes, kernel_initializer=init.kernel()),
      ],
      name='femnist_cnn',
  )


def build_fmnist_cnn(
    num_classes: int = 10, seed: Optional[int] = None
) -> tf.keras.Model:
  """Ditto Fashion-MNIST CNN on [28, 28, 1] images; 3,274,634 params."""
  init = KernelInitializers(seed)
  return tf.keras.Sequential(
      [
          tf.keras.layers.InputLayer(input_shape=(28, 28, 1), dtype=tf.float32),
          *_conv_relu_pool(32, init),
          *_conv_relu_pool(64, init),
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
  init = KernelInitializers(seed)
  layers = [
      tf.keras.layers.InputLayer(input_shape=(84, 84, 3), dtype=tf.float32)
  ]
  for _ in range(4):
    layers += [
        tf.keras.layers.Conv2D(
            32, 3, padding='same', kernel_initializer=init.kernel()
        ),
        layers_lib.BatchStatisticsNormalization(),
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
          tf.keras.layers.InputLayer(
              input_shape=(num_features,), dtype=tf.float32
          ),
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
  init = KernelInitializers(seed)
  return tf.keras.Sequential(
      [
          tf.keras.layers.InputLayer(
              input_shape=(num_features,), dtype=tf.float32
          ),
          tf.keras.layers.Dense(num_classes, kernel_initializer=init.kernel()),
      ],
      name='logistic_regression',
  )
