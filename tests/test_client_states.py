"""Tests for the file format of tff_ditto.client_states.

A client's state is a TF tensor bundle written by `SaveV2` and read by
`RestoreV2`; states of the earlier format (one serialized `TensorProto` in a
`.tensor` file) are still read, so that runs started before resume with the
same results. Real TFF computations on the toy model of `toy.py`.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import toy
from tff_ditto import client_states

W_T = toy.random_weights(1)
V_K = toy.random_weights(2)


def _write_legacy(path, flat):
  """A state in the earlier format, as tff-ditto wrote it before bundles."""
  tf.io.write_file(path, tf.io.serialize_tensor(tf.constant(flat, tf.float32)))


def _bits(flat):
  return np.asarray(flat, np.float32).view(np.uint32)


@pytest.mark.parametrize('size', [0, 1, 1000])
def test_state_round_trip_keeps_every_bit(tmp_path, size):
  rng = np.random.default_rng(size)
  flat = rng.normal(size=[size]).astype(np.float32)
  flat[: min(size, 4)] = [np.nan, -0.0, np.inf, 1e-45][: min(size, 4)]
  path = str(tmp_path / 'a.state')
  client_states.write_flat_state(path, flat)
  assert client_states.state_exists(path)
  assert sorted(os.listdir(tmp_path)) == toy.state_file_names('a')
  np.testing.assert_array_equal(
      _bits(client_states.read_flat_state(path)), _bits(flat)
  )


def test_earlier_format_is_read_but_not_written(tmp_path):
  flat = client_states.flatten_weights(V_K)
  legacy = str(tmp_path / 'old.tensor')
  _write_legacy(legacy, flat)
  assert client_states.state_exists(legacy)
  np.testing.assert_array_equal(
      _bits(client_states.read_flat_state(legacy)), _bits(flat)
  )
  with pytest.raises(ValueError, match='read only'):
    client_states.write_flat_state(str(tmp_path / 'new.tensor'), flat)


def test_store_reads_the_earlier_format_where_only_it_exists(tmp_path):
  directory = str(tmp_path / 'states')
  os.makedirs(os.path.join(directory, 'client_000000'))
  # A store left by the earlier code: its initial model and client 0's
  # round-3 state are `.tensor` files.
  _write_legacy(
      os.path.join(directory, 'initial.tensor'),
      client_states.flatten_weights(W_T),
  )
  _write_legacy(
      os.path.join(directory, 'client_000000', 'round_000003.tensor'),
      client_states.flatten_weights(V_K),
  )
  store = client_states.FileClientStateStore(directory, 2, W_T)
  # The initial model is not written again in the new format.
  assert sorted(os.listdir(directory)) == ['client_000000', 'initial.tensor']
  store.restore(np.array([3, client_states.INITIAL_VERSION], np.int32))
  assert store.read_path(0).endswith('round_000003.tensor')
  toy.assert_weights_equal(store.read(0), V_K)
  toy.assert_weights_equal(store.read(1), W_T)

  # Training client 0 in round 4 reads the old state, writes a bundle; a
  # prune that keeps only round 4 removes the old file.
  (handle,) = store.handles([0], 4)
  assert handle.read_path.endswith('round_000003.tensor')
  assert handle.write_path.endswith('round_000004' + client_states.STATE_SUFFIX)
  toy.write_state(handle.write_path, W_T)
  store.commit([0], 4)
  store.prune(np.array([4, client_states.INITIAL_VERSION], np.int32))
  assert sorted(
      os.listdir(os.path.join(directory, 'client_000000'))
  ) == toy.state_file_names('round_000004')
  toy.assert_weights_equal(store.read(0), W_T)


def test_round_from_an_earlier_format_state_equals_one_from_a_bundle(
    tmp_path,
):
  process = toy.build_process(lr=0.1, personal_lambda=0.5, local_steps=3)
  arrays = toy.client_arrays(5, 12)
  flat = client_states.flatten_weights(V_K)
  legacy = str(tmp_path / 'start.tensor')
  bundle = str(tmp_path / 'start.state')
  _write_legacy(legacy, flat)
  client_states.write_flat_state(bundle, flat)
  outputs, written = [], []
  for tag, read_path in [('legacy', legacy), ('bundle', bundle)]:
    write_path = str(tmp_path / f'{tag}_written.state')
    data = [
        toy.personal_client_data(
            toy.fixed_batches(arrays, 4), read_path, write_path
        )
    ]
    outputs.append(process.next(toy.with_global_weights(process, W_T), data))
    written.append(client_states.read_flat_state(write_path))
  np.testing.assert_array_equal(_bits(written[0]), _bits(written[1]))
  assert not np.array_equal(written[0], flat)  # the round trained
  for a, b in zip(
      toy.global_weights(process, outputs[0].state),
      toy.global_weights(process, outputs[1].state),
  ):
    np.testing.assert_array_equal(_bits(a), _bits(b))


def test_a_state_without_its_index_is_not_committed_and_is_pruned(tmp_path):
  store = client_states.FileClientStateStore(str(tmp_path), 1, W_T)
  (handle,) = store.handles([0], 0)
  toy.write_state(handle.write_path, V_K)
  index, data = client_states.state_files(handle.write_path)
  # A write cut before the rename of its index leaves the data file only.
  os.remove(index)
  with pytest.raises(RuntimeError, match='did not write'):
    store.commit([0], 0)
  store.prune(np.array([client_states.INITIAL_VERSION], np.int32))
  assert not os.path.exists(data)
  toy.assert_weights_equal(store.read(0), W_T)
