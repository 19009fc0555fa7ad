"""Hostile clients through the real Ditto process, under every aggregator.

One of five clients sends its honest update times NaN, Inf or 1e30 (attack
code 2, model replacement with that scale, via `simulate_attacks`). What is
guaranteed, and checked here:

* NaN / Inf updates: the Ditto client computation replaces a non-finite
  update by zeros with weight 0 and counts it in the round's
  `client_work/train/non_finite_updates`. The aggregators therefore receive
  a zero row (robust rules see it as one more, harmless, vote; weighted means
  ignore it), so their own `non_finite_clients` stays 0 here; when
  non-finite rows do reach a robust rule (used outside this process), it
  drops and counts them (`tests/aggregators/test_aggregators.py`). The global model `w`
  stays finite under every aggregator.
* 1e30 (finite but huge): passes the client check. Every robust rule keeps
  `w` bounded (here within 10 of the start; honest updates are ~0.1).
  The plain mean (TFF's `MeanFactory`, the default, and ours) averages it
  in: `w` stays finite but is wrecked (~1e28). That is the documented
  guarantee for the mean: no NaN/Inf, no robustness; choose a robust
  `--aggregator` (or compose TFF's `zeroing_factory` / `clipping_factory`
  in front of the mean) when clients may be hostile.
* Wrong shapes: a client cannot return an update of another shape. The
  client computation is a `tff.tensorflow.computation` whose result type is
  the model's weight type; TFF checks every argument of `process.next`
  against the declared types and raises `TypeError` before anything runs
  (tested with a batch of 6 features for a 5-feature model, and with a
  wrong-shaped update given straight to an aggregation process). The one
  input whose size TFF cannot check is a client's state file (only its path
  crosses TFF): a file of the wrong size fails the round with TF's
  `ensure_shape` error naming the expected shape, never trains on garbage.
"""

import collections
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import toy
from tff_ditto import aggregators
from tff_ditto import client_states

NUM_CLIENTS = 5
BATCH = 4
INITIAL = toy.random_weights(3)
CLIENT_ARRAYS = [
    toy.client_arrays(40 + k, 2 * BATCH) for k in range(NUM_CLIENTS)
]
MODEL_REPLACEMENT = 2  # tff_ditto.attacks update-attack code: update * scale
HOSTILE_SCALES = {'nan': np.nan, 'inf': np.inf, '1e30': 1e30}
BOUND = 10.0

AGGREGATORS = {
    'tff_mean': lambda: tff.aggregators.MeanFactory(),
    'mean': lambda: aggregators.build_aggregator('mean'),
    'median': lambda: aggregators.build_aggregator('median'),
    'trimmed_mean': lambda: aggregators.build_aggregator('trimmed_mean', b=1),
    'krum': lambda: aggregators.build_aggregator('krum', f=1),
    'multi_krum': lambda: aggregators.build_aggregator('multi_krum', f=1),
    'rfa': lambda: aggregators.build_aggregator('rfa'),
    'cclip': lambda: aggregators.build_aggregator('cclip', tau=1.0),
    'norm_clip': lambda: aggregators.build_aggregator('norm_clip'),
    'k_norm': lambda: aggregators.build_aggregator('k_norm', num_excluded=1),
    'bucketing_median': lambda: aggregators.build_aggregator(
        'median', bucketing_size=2
    ),
}
MEANS = ('tff_mean', 'mean')


def _find(metrics, key):
  """The first value under `key` anywhere in nested metrics, or None."""
  if isinstance(metrics, dict):
    if key in metrics:
      return metrics[key]
    for value in metrics.values():
      found = _find(value, key)
      if found is not None:
        return found
  return None


def _attack(scale):
  return tf.data.Dataset.from_tensors(
      collections.OrderedDict(
          code=np.int32(MODEL_REPLACEMENT if scale is not None else 0),
          scale=np.float32(1.0 if scale is None else scale),
          seed=np.array([0, 0], np.int64),
      )
  )


def _client_data(store, round_num, scale):
  """Round data of all clients; client 0 is hostile with `scale`."""
  clients = list(range(NUM_CLIENTS))
  handles = store.handles(clients, round_num)
  return [
      collections.OrderedDict(
          batches=toy.fixed_batches(CLIENT_ARRAYS[k], BATCH),
          personal_state=toy.handle_dataset(h.read_path, h.write_path),
          attack=_attack(scale if k == 0 else None),
      )
      for k, h in zip(clients, handles)
  ]


@pytest.mark.parametrize('name', list(AGGREGATORS))
def test_hostile_updates_never_make_w_non_finite(name, tmp_path):
  process = toy.build_process(
      model_aggregator=AGGREGATORS[name](), simulate_attacks=True
  )
  start = toy.with_global_weights(process, INITIAL)
  for label, scale in HOSTILE_SCALES.items():
    store = client_states.FileClientStateStore(
        str(tmp_path / label), NUM_CLIENTS, INITIAL
    )
    output = process.next(start, _client_data(store, 1, scale))
    store.commit(list(range(NUM_CLIENTS)), 1)
    weights = toy.global_weights(process, output.state)
    assert all(np.all(np.isfinite(w)) for w in weights), (name, label)
    train = output.metrics['client_work']['train']
    counted = float(train['non_finite_updates'])
    assert counted == (0.0 if label == '1e30' else 1.0), (name, label)
    assert float(train['num_clients']) == NUM_CLIENTS
    # Only the hostile client's update counts as an attacker's: a zeroed one
    # as 0, the 1e30 one as the round's largest (Inf: its square overflows).
    if label == '1e30':
      assert float(train['max_attacker_update_norm']) == np.inf, name
      assert float(train['max_update_norm']) == np.inf, name
    else:
      assert float(train['max_attacker_update_norm']) == 0.0, (name, label)
      assert float(train['max_update_norm']) > 0.0, (name, label)
    robust_count = _find(output.metrics, aggregators.NON_FINITE_CLIENTS)
    if name != 'tff_mean':
      # Zeroed by the client computation before it reaches the rule.
      assert robust_count == 0, (name, label)
    largest = max(float(np.max(np.abs(w))) for w in weights)
    if name in MEANS and label == '1e30':
      assert largest > 1e20, (name, largest)  # the mean is not robust
    else:
      assert largest < BOUND, (name, label, largest)
    # The honest clients still trained their personal models.
    assert np.all(np.isfinite(client_states.flatten_weights(store.read(1))))
    # Round 2 from the resulting state: training goes on, w stays finite.
    output = process.next(output.state, _client_data(store, 2, None))
    train = output.metrics['client_work']['train']
    assert float(train['max_attacker_update_norm']) == 0.0, (name, label)
    weights = toy.global_weights(process, output.state)
    assert all(np.all(np.isfinite(w)) for w in weights), (name, label)


def test_attacker_update_norm_is_the_attacking_clients_own(tmp_path):
  # Client 0 replaces its update by itself times 1 (attack code 2): the same
  # update it would send honestly, now counted as an attacker's.
  process = toy.build_process(simulate_attacks=True)
  start = toy.with_global_weights(process, INITIAL)
  store = client_states.FileClientStateStore(
      str(tmp_path / 'all'), NUM_CLIENTS, INITIAL
  )
  train = process.next(start, _client_data(store, 1, 1.0)).metrics[
      'client_work'
  ]['train']
  alone_store = client_states.FileClientStateStore(
      str(tmp_path / 'alone'), NUM_CLIENTS, INITIAL
  )
  alone = process.next(start, _client_data(alone_store, 1, None)[:1])
  own_norm = float(alone.metrics['client_work']['train']['max_update_norm'])
  assert own_norm > 0.0
  np.testing.assert_allclose(
      float(train['max_attacker_update_norm']), own_norm, rtol=1e-6
  )
  assert float(train['max_update_norm']) >= own_norm


def test_nan_pixels_in_client_data_are_counted(tmp_path):
  # A hostile client need not know the protocol: poisoned inputs do it too.
  process = toy.build_process(
      model_aggregator=aggregators.build_aggregator('median')
  )
  store = client_states.FileClientStateStore(str(tmp_path), 3, INITIAL)
  handles = store.handles([0, 1, 2], 1)
  bad = collections.OrderedDict(
      x=np.full_like(CLIENT_ARRAYS[0]['x'], 1e30), y=CLIENT_ARRAYS[0]['y']
  )
  bad['x'][0, 0] = np.nan
  data = [
      toy.personal_client_data(
          toy.fixed_batches(arrays, BATCH), h.read_path, h.write_path
      )
      for arrays, h in zip([bad, CLIENT_ARRAYS[1], CLIENT_ARRAYS[2]], handles)
  ]
  output = process.next(toy.with_global_weights(process, INITIAL), data)
  assert output.metrics['client_work']['train']['non_finite_updates'] == 1.0
  weights = toy.global_weights(process, output.state)
  assert all(np.all(np.isfinite(w)) for w in weights)
  assert max(float(np.max(np.abs(w))) for w in weights) < BOUND


def test_state_file_of_the_wrong_size_fails_the_round(tmp_path):
  process = toy.build_process()
  read_path = os.path.join(tmp_path, 'short.state')
  client_states.write_flat_state(read_path, np.zeros([7], np.float32))
  data = [
      toy.personal_client_data(
          toy.fixed_batches(CLIENT_ARRAYS[0], BATCH),
          read_path,
          os.path.join(tmp_path, 'written.state'),
      )
  ]
  expected_size = sum(int(np.prod(s)) for s in toy.SHAPES)
  with pytest.raises(Exception, match=rf'\[{expected_size}\]'):
    process.next(toy.with_global_weights(process, INITIAL), data)
  assert not client_states.state_exists(os.path.join(tmp_path, 'written.state'))


def test_wrong_shaped_inputs_are_rejected_by_tff_types(tmp_path):
  process = toy.build_process()
  wide = collections.OrderedDict(
      x=np.zeros([BATCH, toy.NUM_FEATURES + 1], np.float32),
      y=np.zeros([BATCH], np.int32),
  )
  read_path = os.path.join(tmp_path, 'state.state')
  toy.write_state(read_path, INITIAL)
  data = [
      toy.personal_client_data(
          tf.data.Dataset.from_tensor_slices(wide).batch(BATCH),
          read_path,
          os.path.join(tmp_path, 'written.state'),
      )
  ]
  with pytest.raises(TypeError):
    process.next(toy.with_global_weights(process, INITIAL), data)

  vector = tff.TensorType(np.float32, [3])
  aggregation = aggregators.build_aggregator('median').create(vector)
  with pytest.raises(TypeError):
    aggregation.next(aggregation.initialize(), [np.zeros([4], np.float32)] * 3)
