"""split_evaluation: every client in one computation, as the per-client one."""

import collections

import numpy as np
import pytest

import toy
from tff_ditto import evaluation
from tff_ditto import split_evaluation

BATCH_SIZE = 5
# Uneven clients: partial last batches, a client smaller than a batch, one
# with no examples at all.
CLIENTS = (
    toy.client_arrays(1, 13),
    toy.client_arrays(2, 3, label_shift=1),
    toy.client_arrays(3, 0),
    toy.client_arrays(4, 10, label_shift=2),
)


def test_client_split_batches_each_client_as_dataset_batch():
  split = split_evaluation.client_split(list(CLIENTS), BATCH_SIZE)
  np.testing.assert_array_equal(split.client_first_batch, [0, 3, 4, 4, 6])
  np.testing.assert_array_equal(split.batch_sizes, [5, 5, 3, 3, 5, 5])
  np.testing.assert_array_equal(split.batch_starts, [0, 5, 10, 13, 16, 21])
  assert split.examples['x'].shape[0] == 26
  # Client 3's second batch is its examples 5..9.
  np.testing.assert_array_equal(
      split.examples['y'][21:26], CLIENTS[3]['y'][5:10]
  )


def _records_equal(actual, expected):
  """Per-client records equal to the bit (float32 values, same keys)."""
  assert len(actual) == len(expected)
  for got, want in zip(actual, expected):
    assert list(got) == list(split_evaluation.METRIC_KEYS)
    for key in split_evaluation.METRIC_KEYS:
      np.testing.assert_array_equal(
          np.asarray(got[key], np.float32), np.asarray(want[key], np.float32)
      )


def test_global_split_evaluation_equals_per_client_evaluation():
  weights = toy.model_weights(toy.random_weights(5, scale=1.0))
  per_client = evaluation.build_global_evaluation(toy.model_fn)(
      weights, [toy.eval_dataset(a, BATCH_SIZE) for a in CLIENTS]
  )
  split = split_evaluation.client_split(list(CLIENTS), BATCH_SIZE)
  together = split_evaluation.build_global_split_evaluation(toy.model_fn)(
      weights, split.as_argument()
  )
  assert np.asarray(together['loss_sum']).shape == (4, 1)
  _records_equal(split_evaluation.per_client(together), per_client)
  # Not trivially equal: the clients' losses differ.
  losses = np.asarray(together['loss_sum'])[:, 0]
  assert losses[0] != losses[3] and losses[2] == 0.0


def _state_files(tmp_path, num_models):
  """A state file of `num_models` random models per client."""
  paths = []
  for client in range(len(CLIENTS)):
    weights = []
    for model in range(num_models):
      weights += toy.random_weights(10 * client + model, scale=1.0)
    path = str(tmp_path / f'client_{client}.state')
    toy.write_state(path, weights)
    paths.append(path)
  return paths


@pytest.mark.parametrize('num_models', [1, 3])
def test_personalized_split_evaluation_equals_per_client_evaluation(
    tmp_path, num_models
):
  paths = _state_files(tmp_path, num_models)
  per_client = evaluation.build_personalized_evaluation(
      toy.model_fn, num_personal_models=num_models
  )([
      toy.personal_client_data(toy.eval_dataset(a, BATCH_SIZE), p, '')
      for a, p in zip(CLIENTS, paths)
  ])
  split = split_evaluation.client_split(list(CLIENTS), BATCH_SIZE)
  evaluate = split_evaluation.build_personalized_split_evaluation(
      toy.model_fn, num_personal_models=num_models
  )
  (together,) = evaluate((split.as_argument(),), np.array(paths, dtype=object))
  _records_equal(split_evaluation.per_client(together), per_client)
  # Each client read its own file: the swapped order gives other numbers.
  (swapped,) = evaluate(
      (split.as_argument(),), np.array(paths[::-1], dtype=object)
  )
  assert not np.array_equal(
      np.asarray(swapped['loss_sum'])[0], np.asarray(together['loss_sum'])[0]
  )


def test_personalized_evaluation_of_two_splits_equals_one_at_a_time(tmp_path):
  """One read of each state file for two splits: each split's metrics as alone."""
  paths = np.array(_state_files(tmp_path, 2), dtype=object)
  first = split_evaluation.client_split(list(CLIENTS), BATCH_SIZE)
  # Another split: other examples per client, another batch size.
  second = split_evaluation.client_split(
      [toy.client_arrays(20 + c, n) for c, n in enumerate((4, 11, 7, 0))],
      3,
  )
  one = split_evaluation.build_personalized_split_evaluation(toy.model_fn, 2)
  two = split_evaluation.build_personalized_split_evaluation(
      toy.model_fn, 2, num_splits=2
  )
  both = two((first.as_argument(), second.as_argument()), paths)
  assert len(both) == 2
  for split, metrics in zip((first, second), both):
    (alone,) = one((split.as_argument(),), paths)
    _records_equal(
        split_evaluation.per_client(metrics),
        split_evaluation.per_client(alone),
    )
  assert not np.array_equal(
      np.asarray(both[0]['num_examples']), np.asarray(both[1]['num_examples'])
  )


def test_per_client_keeps_vectors_with_several_models():
  metrics = collections.OrderedDict(
      (key, np.arange(6, dtype=np.float32).reshape(2, 3))
      for key in split_evaluation.METRIC_KEYS
  )
  records = split_evaluation.per_client(metrics)
  np.testing.assert_array_equal(records[1]['num_correct'], [3, 4, 5])
  single = split_evaluation.per_client(
      {key: value[:, :1] for key, value in metrics.items()}
  )
  assert single[1]['loss_sum'] == 3.0


def test_personalized_split_evaluation_refuses_zero_models_or_splits():
  with pytest.raises(ValueError, match='num_personal_models'):
    split_evaluation.build_personalized_split_evaluation(toy.model_fn, 0)
  with pytest.raises(ValueError, match='num_splits'):
    split_evaluation.build_personalized_split_evaluation(
        toy.model_fn, 1, num_splits=0
    )
