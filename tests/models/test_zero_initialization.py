"""Tests for tff_ditto.models.zero_initialization (real TensorFlow / TFF)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import models
from tff_ditto.models import zero_initialization


@pytest.mark.parametrize('name', ['femnist', 'synthetic'])
def test_models_built_inside_start_at_zeros(name):
  spec = models.get_model_spec(name, seed=0)
  with zero_initialization.zero_initialized_variables():
    inside = spec.keras_model_fn()
  outside = spec.keras_model_fn()
  assert inside.weights
  for variable in inside.weights:
    np.testing.assert_array_equal(variable.numpy(), 0.0)
  # The scope ends with the block: the next model has its seeded weights.
  assert any(np.any(variable.numpy() != 0.0) for variable in outside.weights)
  for built, seeded in zip(outside.weights, spec.keras_model_fn().weights):
    np.testing.assert_array_equal(built.numpy(), seeded.numpy())


def test_unshaped_variables_keep_their_initial_values():
  with zero_initialization.zero_initialized_variables():
    variable = tf.Variable(3.0)
  assert float(variable.numpy()) == 3.0


def test_inside_a_tff_computation_the_variables_are_zeros():
  model_fn = models.get_model_spec('synthetic', seed=0).tff_model_fn()

  def total_of_variables(zero):
    @tff.tensorflow.computation
    def total():
      if zero:
        with zero_initialization.zero_initialized_variables():
          model = model_fn()
      else:
        model = model_fn()
      return tf.add_n(
          [tf.reduce_sum(tf.abs(v)) for v in model.trainable_variables]
      )

    return float(total())

  assert total_of_variables(zero=True) == 0.0
  assert total_of_variables(zero=False) > 0.0
