"""Tests for tff_ditto.evaluation: per-client evaluations and the summary."""

import collections
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import toy
from tff_ditto import evaluation


def _perfect_weights(label_shift: int) -> list[np.ndarray]:
  """Linear weights that classify `toy.client_arrays(.., label_shift)`."""
  kernel = np.zeros(toy.SHAPES[0], np.float32)
  for cluster in range(toy.NUM_CLASSES):
    kernel[cluster, (cluster + label_shift) % toy.NUM_CLASSES] = 2.0
  return [kernel, np.zeros(toy.SHAPES[1], np.float32)]


def _check_metrics(metrics, weights, arrays):
  """One client's evaluation record against the numpy reference."""
  loss, accuracy = toy.evaluate_reference(weights, arrays)
  n = int(arrays['y'].shape[0])
  assert float(metrics['num_examples']) == n
  assert float(metrics['num_correct']) == round(accuracy * n)
  np.testing.assert_allclose(float(metrics['loss_sum']) / n, loss, rtol=1e-5)


# ----------------------------------------------------------------- summarize


def test_summarize_hand_made_numbers():
  summary = evaluation.summarize(
      num_correct=[8, 1, 0, 5, 0],
      num_examples=[10, 2, 0, 5, 4],
      loss_sum=[2.0, 1.0, 7.0, 0.5, 4.0],
      prefix='benign_',
  )
  # Client 2 has no examples and is left out; accuracies 0.8, 0.5, 1.0, 0.0.
  assert list(summary) == [
      'benign_pooled_accuracy',
      'benign_mean_accuracy',
      'benign_std_accuracy',
      'benign_variance_accuracy',
      'benign_worst10_accuracy',
      'benign_pooled_loss',
      'benign_num_clients',
  ]
  assert summary['benign_pooled_accuracy'] == pytest.approx(14 / 21)
  assert summary['benign_mean_accuracy'] == pytest.approx(0.575)
  assert summary['benign_variance_accuracy'] == pytest.approx(0.141875)
  assert summary['benign_std_accuracy'] == pytest.approx(math.sqrt(0.141875))
  assert summary['benign_worst10_accuracy'] == 0.0  # ceil(0.4) = 1 client
  assert summary['benign_pooled_loss'] == pytest.approx(7.5 / 21)
  assert summary['benign_num_clients'] == 4


def test_summarize_worst_ten_percent_rounds_up():
  # 11 clients: ceil(1.1) = 2 worst clients; accuracies 0.0, 0.1, ..., 1.0.
  accuracies = np.arange(11) / 10
  summary = evaluation.summarize(
      num_correct=accuracies * 10,
      num_examples=np.full(11, 10),
      loss_sum=np.ones(11),
  )
  assert summary['worst10_accuracy'] == pytest.approx(0.05)
  assert summary['mean_accuracy'] == pytest.approx(0.5)
  assert summary['pooled_accuracy'] == pytest.approx(0.5)
  assert summary['num_clients'] == 11
  # Pooled and unweighted mean differ when clients differ in size.
  summary = evaluation.summarize([1, 90], [1, 100], [0.0, 0.0])
  assert summary['pooled_accuracy'] == pytest.approx(91 / 101)
  assert summary['mean_accuracy'] == pytest.approx(0.95)
  assert summary['worst10_accuracy'] == pytest.approx(0.9)


def test_summarize_without_examples():
  summary = evaluation.summarize([0, 0], [0, 0], [1.0, 2.0], prefix='m_')
  assert summary['m_num_clients'] == 0
  assert math.isnan(summary['m_pooled_accuracy'])
  assert math.isnan(summary['m_worst10_accuracy'])


def test_client_metrics_table_and_stacking():
  records = [
      collections.OrderedDict(
          loss_sum=np.float32(3.0),
          num_correct=np.float32(2.0),
          num_examples=np.float32(4.0),
      ),
      collections.OrderedDict(
          loss_sum=np.float32(0.0),
          num_correct=np.float32(0.0),
          num_examples=np.float32(0.0),
      ),
  ]
  table = evaluation.client_metrics_table(records, ['a', 'b'])
  assert list(table.columns) == [
      'client_id',
      'num_examples',
      'num_correct',
      'accuracy',
      'loss',
  ]
  assert table['accuracy'][0] == 0.5 and table['loss'][0] == 0.75
  assert math.isnan(table['accuracy'][1])
  stacked = evaluation.stack_client_metrics(records)
  np.testing.assert_array_equal(stacked['num_correct'], [2.0, 0.0])
  np.testing.assert_array_equal(stacked['loss_sum'], [3.0, 0.0])


# ---------------------------------------------------------- TFF evaluations


@pytest.fixture(scope='module')
def global_evaluation():
  return evaluation.build_global_evaluation(toy.model_fn)


@pytest.fixture(scope='module')
def personalized_evaluation():
  return evaluation.build_personalized_evaluation(toy.model_fn)


def test_global_evaluation_matches_keras(global_evaluation):
  weights = toy.random_weights(3, scale=1.0)
  clients = [toy.client_arrays(1, 13), toy.client_arrays(2, 7, label_shift=1)]
  # Uneven batches (13 = 5 + 5 + 3) to catch a wrongly weighted batch mean.
  metrics = global_evaluation(
      toy.model_weights(weights), [toy.eval_dataset(a, 5) for a in clients]
  )
  assert len(metrics) == 2
  keras_model = toy.keras_model()
  keras_model.set_weights(weights)
  for record, arrays in zip(metrics, clients):
    logits = keras_model(arrays['x'], training=False)
    keras_loss = tf.keras.losses.SparseCategoricalCrossentropy(
        from_logits=True
    )(arrays['y'], logits)
    keras_accuracy = tf.keras.metrics.SparseCategoricalAccuracy()
    keras_accuracy.update_state(arrays['y'], logits)
    n = arrays['y'].shape[0]
    assert float(record['num_examples']) == n
    np.testing.assert_allclose(
        float(record['num_correct']) / n,
        float(keras_accuracy.result()),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        float(record['loss_sum']) / n, float(keras_loss), rtol=1e-5
    )
    _check_metrics(record, weights, arrays)
  # Not a trivial answer: the two clients' numbers differ.
  assert float(metrics[0]['loss_sum']) / 13 != float(metrics[1]['loss_sum']) / 7


def test_personalized_evaluation_reads_each_clients_file(
    personalized_evaluation, tmp_path
):
  clients = [toy.client_arrays(3, 20), toy.client_arrays(4, 15, label_shift=1)]
  weights = [_perfect_weights(0), _perfect_weights(1)]
  paths = [str(tmp_path / f'client_{k}.state') for k in range(2)]
  for path, w in zip(paths, weights):
    toy.write_state(path, w)

  def evaluate(read_paths):
    return personalized_evaluation([
        toy.personal_client_data(toy.eval_dataset(a, 6), p, '')
        for a, p in zip(clients, read_paths)
    ])

  own = evaluate(paths)
  for record, w, arrays in zip(own, weights, clients):
    _check_metrics(record, w, arrays)
    assert float(record['num_correct']) == float(record['num_examples'])
  # Swapped files: each client now evaluates the other's model, and fails.
  swapped = evaluate(paths[::-1])
  for record, w, arrays in zip(swapped, weights[::-1], clients):
    _check_metrics(record, w, arrays)
    assert float(record['num_correct']) == 0.0
  # Nothing was written by the evaluation.
  assert sorted(os.listdir(tmp_path)) == toy.state_file_names(
      'client_0', 'client_1'
  )


def test_finetune_evaluation_matches_sgd_then_evaluate(tmp_path):
  lr = 0.3
  finetune = evaluation.build_finetune_evaluation(
      toy.model_fn, toy.sgd(lr), proximal_strength=0.0
  )
  prox = evaluation.build_finetune_evaluation(
      toy.model_fn, toy.sgd(lr), proximal_strength=5.0
  )
  start = toy.random_weights(6)
  train = toy.client_arrays(7, 12, label_shift=2)
  test = toy.client_arrays(8, 30, label_shift=2)
  train_batches = toy.split_batches(train, 4)
  data = [
      collections.OrderedDict(
          train=toy.fixed_batches(train, 4), test=toy.eval_dataset(test, 8)
      ),
      collections.OrderedDict(
          train=toy.fixed_batches(train, 4).take(0),
          test=toy.eval_dataset(test, 8),
      ),
  ]
  tuned, untouched = finetune(toy.model_weights(start), data)
  _check_metrics(tuned, toy.sgd_reference(start, train_batches, lr), test)
  _check_metrics(untouched, start, test)
  tuned_prox, _ = prox(toy.model_weights(start), data)
  _check_metrics(
      tuned_prox,
      toy.sgd_reference(start, train_batches, lr, center=start, lam=5.0),
      test,
  )


# -------------------------------------- TFF's personalization evaluation


def _baseline_evaluate_fn():
  @tf.function
  def baseline_evaluate(model, dataset):
    model.reset_metrics()

    def accumulate(totals, batch):
      output = model.forward_pass(batch, training=False)
      count = tf.cast(output.num_examples, tf.float32)
      return totals + tf.stack([output.loss * count, count])

    totals = dataset.batch(7).reduce(tf.zeros([2], tf.float32), accumulate)
    correct, count = tf.unstack(
        tf.cast(
            model.report_local_unfinalized_metrics()['accuracy'], tf.float32
        )
    )
    return collections.OrderedDict(
        accuracy=correct / count, loss=totals[0] / totals[1]
    )

  return baseline_evaluate


def _personalization_data(clients):
  return [
      collections.OrderedDict(
          train_data=tf.data.Dataset.from_tensor_slices(train),
          test_data=tf.data.Dataset.from_tensor_slices(test),
      )
      for train, test in clients
  ]


def test_finetune_personalize_fn_improves_clients_with_different_labels():
  computation = tff.learning.algorithms.build_personalization_eval_computation(
      toy.model_fn,
      collections.OrderedDict(
          finetune=evaluation.build_finetune_personalize_fn(
              learning_rate=0.5, num_steps=30, batch_size=10
          )
      ),
      _baseline_evaluate_fn(),
      max_num_clients=10,
  )
  # Same features, a different label map per client: no global model fits all.
  clients = [
      (
          toy.client_arrays(k, 60, label_shift=k),
          toy.client_arrays(100 + k, 30, label_shift=k),
      )
      for k in range(3)
  ]
  global_weights = _perfect_weights(0)
  result = computation(
      toy.model_weights(global_weights), _personalization_data(clients)
  )
  baseline = result['baseline_metrics']
  tuned = result['finetune']
  assert len(tuned['accuracy']) == 3
  np.testing.assert_array_equal(tuned['num_test_examples'], [30.0] * 3)
  # The baseline is the global model's accuracy: 1 on the client whose labels
  # it was made for, 0 on the others.
  expected_baseline = sorted(
      toy.evaluate_reference(global_weights, test)[1] for _, test in clients
  )
  np.testing.assert_allclose(
      sorted(baseline['accuracy']), expected_baseline, atol=1e-6
  )
  assert np.mean(baseline['accuracy']) < 0.4
  assert np.all(tuned['accuracy'] >= baseline['accuracy'])
  assert np.mean(tuned['accuracy']) > np.mean(baseline['accuracy']) + 0.5
  assert np.all(tuned['accuracy'] > 0.9)
  assert np.mean(tuned['loss']) < np.mean(baseline['loss'])


def test_finetune_personalize_fn_takes_num_steps_sgd_steps():
  """Full-batch steps (batch = client data) make the result reproducible."""
  lr, steps, lam = 0.2, 4, 3.0
  computation = tff.learning.algorithms.build_personalization_eval_computation(
      toy.model_fn,
      collections.OrderedDict(
          plain=evaluation.build_finetune_personalize_fn(
              learning_rate=lr, num_steps=steps, batch_size=10
          ),
          prox=evaluation.build_finetune_personalize_fn(
              learning_rate=lr,
              num_steps=steps,
              batch_size=10,
              proximal_strength=lam,
          ),
      ),
      _baseline_evaluate_fn(),
      max_num_clients=1,
  )
  start = toy.random_weights(12)
  train = toy.client_arrays(13, 10, label_shift=1)
  test = toy.client_arrays(14, 25, label_shift=1)
  result = computation(
      toy.model_weights(start), _personalization_data([(train, test)])
  )
  for name, center, strength in (('plain', None, 0.0), ('prox', start, lam)):
    expected = toy.sgd_reference(
        start, [train] * steps, lr, center=center, lam=strength
    )
    loss, accuracy = toy.evaluate_reference(expected, test)
    np.testing.assert_allclose(result[name]['loss'][0], loss, rtol=1e-4)
    np.testing.assert_allclose(result[name]['accuracy'][0], accuracy, atol=1e-6)
  loss, accuracy = toy.evaluate_reference(start, test)
  np.testing.assert_allclose(
      result['baseline_metrics']['loss'][0], loss, rtol=1e-5
  )
  assert result['prox']['loss'][0] != result['plain']['loss'][0]
