"""Tests for tff_ditto.checkpoints: save, restore, torn and unusable ones.

Small structures stand in for a learning process's server state; the files
are the real ones (`tff.program.FileProgramStateManager`, the markers, a
`FileClientStateStore`).
"""

import collections
import os

import numpy as np
import pytest

import toy
from tff_ditto import checkpoints
from tff_ditto import client_states
from tff_ditto import crash_safety

NUM_CLIENTS = 3


def _state(value):
  return collections.OrderedDict(
      weights=[
          np.full([2, 3], value, np.float32),
          np.arange(3, dtype=np.float32) + value,
      ],
      step=np.int64(10 * value),
  )


def _positions(value):
  return np.arange(NUM_CLIENTS, dtype=np.int64) + 100 * value


def _checkpoints(output_dir, logs=None, checkpoint_every=1, store=None):
  return checkpoints.RunCheckpoints(
      str(output_dir),
      _state(0.0),
      NUM_CLIENTS,
      (logs if logs is not None else []).append,
      checkpoint_every=checkpoint_every,
      store=store,
  )


def _saved(output_dir, rounds, **kwargs):
  """Checkpoints saved after each of `rounds` (state and positions = round)."""
  saved = _checkpoints(output_dir, **kwargs)
  for round_num in rounds:
    saved.save(round_num, _state(float(round_num)), _positions(round_num))
  return saved


def _files(output_dir):
  return sorted(os.listdir(os.path.join(output_dir, 'checkpoints')))


def _assert_restored(restored, round_num):
  assert restored is not None
  assert restored.round_num == round_num
  expected = _state(float(round_num))
  assert len(restored.state['weights']) == 2
  for got, want in zip(restored.state['weights'], expected['weights']):
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.float32
  assert int(restored.state['step']) == 10 * round_num
  np.testing.assert_array_equal(
      restored.batch_stream_positions, _positions(round_num)
  )
  assert restored.batch_stream_positions.dtype == np.int64


def test_save_then_restore_round_trips(tmp_path):
  _saved(tmp_path, [0, 1])
  assert _files(tmp_path) == [
      'complete_0',
      'complete_1',
      'program_state_0',
      'program_state_1',
  ]
  logs = []
  restored = _checkpoints(tmp_path, logs).restore_latest()
  _assert_restored(restored, 1)
  assert logs == ['resumed from checkpoint after round 1']


def test_only_the_two_newest_checkpoints_and_their_markers_are_kept(tmp_path):
  saved = _saved(tmp_path, [0, 1, 2, 3])
  assert saved.versions() == [2, 3]
  assert _files(tmp_path) == [
      'complete_2',
      'complete_3',
      'program_state_2',
      'program_state_3',
  ]


def test_a_checkpoint_without_its_marker_is_skipped(tmp_path):
  _saved(tmp_path, [0, 1])
  os.remove(tmp_path / 'checkpoints' / 'complete_1')
  logs = []
  restored = _checkpoints(tmp_path, logs).restore_latest()
  _assert_restored(restored, 0)
  assert logs == [
      'checkpoint 1 is incomplete (torn write); skipped',
      'resumed from checkpoint after round 0',
  ]
  # The torn checkpoint is gone, so the resumed run can save round 1 again.
  assert _files(tmp_path) == ['complete_0', 'program_state_0']


def test_a_kill_between_checkpoint_and_marker_leaves_it_torn(
    tmp_path, monkeypatch
):
  class Killed(Exception):
    pass

  def inject(point, round_num):
    if (point, round_num) == ('mid_checkpoint', 1):
      raise Killed()

  monkeypatch.setattr(crash_safety, 'maybe_inject_fault', inject)
  saved = _saved(tmp_path, [0])
  with pytest.raises(Killed):
    saved.save(1, _state(1.0), _positions(1))
  assert _files(tmp_path) == [
      'complete_0',
      'program_state_0',
      'program_state_1',
  ]
  logs = []
  _assert_restored(_checkpoints(tmp_path, logs).restore_latest(), 0)
  assert 'checkpoint 1 is incomplete (torn write); skipped' in logs


def test_an_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path):
  _saved(tmp_path, [0, 1])
  damaged = 0
  for root, _, names in os.walk(tmp_path / 'checkpoints' / 'program_state_1'):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 3)
      damaged += 1
  assert damaged
  logs = []
  restored = _checkpoints(tmp_path, logs).restore_latest()
  _assert_restored(restored, 0)
  assert logs[0].startswith('checkpoint 1 unreadable (')
  assert logs[0].endswith('); trying the previous one')
  assert logs[1:] == ['resumed from checkpoint after round 0']
  assert _files(tmp_path) == ['complete_0', 'program_state_0']


def test_refuses_to_restart_over_unusable_checkpoints(tmp_path):
  _saved(tmp_path, [0, 1])
  for name in ('complete_0', 'complete_1'):
    os.remove(tmp_path / 'checkpoints' / name)
  before = _files(tmp_path)
  logs = []
  with pytest.raises(
      checkpoints.OutputDirectoryError,
      match=r'has checkpoints \[0, 1\] but none is complete and readable; '
      'refusing to restart over them',
  ):
    _checkpoints(tmp_path, logs).restore_latest()
  assert _files(tmp_path) == before  # nothing deleted
  assert logs == [
      'checkpoint 1 is incomplete (torn write); skipped',
      'checkpoint 0 is incomplete (torn write); skipped',
  ]


def test_a_torn_first_checkpoint_starts_the_run_over(tmp_path):
  # Saved after round 4 with checkpoint_every=5: the run's first checkpoint.
  _saved(tmp_path, [4], checkpoint_every=5)
  os.remove(tmp_path / 'checkpoints' / 'complete_4')
  logs = []
  assert (
      _checkpoints(tmp_path, logs, checkpoint_every=5).restore_latest() is None
  )
  assert logs[-1] == 'no checkpoint found; starting from round 0'
  # The same torn checkpoint is not the first one with checkpoint_every=2.
  with pytest.raises(checkpoints.OutputDirectoryError):
    _checkpoints(tmp_path, checkpoint_every=2).restore_latest()


def test_no_checkpoint_starts_the_run_over(tmp_path):
  logs = []
  assert _checkpoints(tmp_path, logs).restore_latest() is None
  assert logs == ['no checkpoint found; starting from round 0']


def test_due_every_n_rounds_and_after_the_last(tmp_path):
  every_three = _checkpoints(tmp_path, checkpoint_every=3)
  assert [r for r in range(8) if every_three.due(r, is_last=r == 7)] == [
      2,
      5,
      7,
  ]
  every_round = _checkpoints(tmp_path, checkpoint_every=1)
  assert all(every_round.due(r, is_last=False) for r in range(8))
  never = _checkpoints(tmp_path, checkpoint_every=0)
  assert not any(never.due(r, is_last=r == 7) for r in range(8))


# ------------------------------------------------------------ client states


def _store(output_dir):
  return client_states.FileClientStateStore(
      os.path.join(output_dir, 'client_states'),
      NUM_CLIENTS,
      [np.zeros([2], np.float32)],
  )


def _train(store, client, round_num):
  (handle,) = store.handles([client], round_num)
  client_states.write_flat_state(
      handle.write_path, np.full([2], round_num, np.float32)
  )
  store.commit([client], round_num)


def _client_files(store, client):
  return sorted(os.listdir(os.path.dirname(store.read_path(client))))


def test_client_state_versions_are_saved_restored_and_pruned(tmp_path):
  store = _store(tmp_path)
  saved = _checkpoints(tmp_path, store=store)
  for round_num in range(3):
    _train(store, 0, round_num)
    if round_num == 1:
      _train(store, 2, round_num)
    saved.save(round_num, _state(float(round_num)), _positions(round_num))
  # Kept checkpoints 1 and 2 name client 0's versions 1 and 2: version 0 goes.
  assert _client_files(store, 0) == toy.state_file_names(
      'round_000001', 'round_000002'
  )
  assert _client_files(store, 2) == toy.state_file_names('round_000001')

  fresh = _store(tmp_path)
  _assert_restored(_checkpoints(tmp_path, store=fresh).restore_latest(), 2)
  np.testing.assert_array_equal(fresh.versions, [2, -1, 1])
  np.testing.assert_array_equal(fresh.read(0)[0], [2.0, 2.0])

  # Without checkpoint 2's marker, checkpoint 1's versions come back.
  os.remove(tmp_path / 'checkpoints' / 'complete_2')
  older = _store(tmp_path)
  _assert_restored(_checkpoints(tmp_path, store=older).restore_latest(), 1)
  np.testing.assert_array_equal(older.versions, [1, -1, 1])
  np.testing.assert_array_equal(older.read(0)[0], [1.0, 1.0])


def test_a_checkpoint_naming_a_missing_client_state_is_not_restored(tmp_path):
  store = _store(tmp_path)
  saved = _checkpoints(tmp_path, store=store)
  _train(store, 1, 0)
  saved.save(0, _state(0.0), _positions(0))
  os.remove(client_states.state_files(store.read_path(1))[0])
  with pytest.raises(FileNotFoundError, match='named by the checkpoint'):
    _checkpoints(tmp_path, store=_store(tmp_path)).restore_latest()
