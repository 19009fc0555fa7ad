"""The checkpoints of one run: save, and restore the latest usable one.

A checkpoint, saved after a round, holds what the run needs to go on from the
next round exactly as if it had not stopped: the learning process's server
state, the round, the clients' state-file versions
(`tff_ditto.client_states.FileClientStateStore.versions`) and their batch
stream positions (`tff_ditto.batch_streams.ClientBatchStreams.positions`).
On disk, under `<output_dir>/checkpoints/`:

* `program_state_<round>/`: the checkpoint (a `tff.program`
  `FileProgramStateManager` SavedModel; the two newest are kept);
* `complete_<round>`: its marker, written (atomically) only once the
  checkpoint is completely saved. A checkpoint without a marker is a torn
  write (the run was killed while saving it) and is never restored.

Restoring takes the newest checkpoint that has its marker and loads; a run
whose checkpoints are all unusable is not restarted over them
(`OutputDirectoryError`). The client-state files that neither the current
state nor a kept checkpoint names are deleted after each save.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import shutil
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from tff_ditto import client_states
from tff_ditto import crash_safety

# Checkpoints kept: the newest and the one before it (a fallback if the
# newest turns out unreadable).
_KEEP_TOTAL = 2
_STATE_PREFIX = 'program_state_'
_MARKER_PREFIX = 'complete_'


class OutputDirectoryError(RuntimeError):
  """The output directory holds results and neither resume nor overwrite."""


@dataclasses.dataclass(frozen=True)
class RestoredCheckpoint:
  """What a restored checkpoint gives back to the run (client states aside).

  Attributes:
    round_num: The round after which the checkpoint was saved.
    state: The learning process's server state.
    batch_stream_positions: int64 [clients], the clients' batch stream
      positions.
  """

  round_num: int
  state: Any
  batch_stream_positions: np.ndarray


class RunCheckpoints:
  """The checkpoints of one run in `<output_dir>/checkpoints`.

  See the module docstring for what a checkpoint holds and its files.
  """

  def __init__(
      self,
      output_dir: str,
      state_template: Any,
      num_clients: int,
      log_fn: Callable[[str], None],
      *,
      checkpoint_every: int,
      store: Optional[client_states.FileClientStateStore] = None,
  ):
    """Opens (creates) the run's checkpoint directory.

    Args:
      output_dir: The run's output directory.
      state_template: A server state of the run's learning process: the
        structure checkpoints are loaded into.
      num_clients: The clients of the run.
      log_fn: Receives a line for each checkpoint skipped or restored.
      checkpoint_every: Save every this many rounds and after the last (0 =
        never; `due`).
      store: The run's client-state store, whose versions each checkpoint
        saves and restores and whose unneeded files it prunes; None for a
        method that keeps no client state.
    """
    self.output_dir = output_dir
    self.directory = os.path.join(output_dir, 'checkpoints')
    self.checkpoint_every = checkpoint_every
    self.store = store
    self._num_clients = num_clients
    self._state_template = state_template
    self._log_fn = log_fn
    # The client-state versions of each kept checkpoint, oldest first.
    self._kept_client_versions: list[np.ndarray] = []
    self._manager = tff.program.FileProgramStateManager(
        self.directory,
        prefix=_STATE_PREFIX,
        keep_total=_KEEP_TOTAL,
        keep_first=False,
    )

  def due(self, round_num: int, is_last: bool) -> bool:
    """Whether a checkpoint is saved after `round_num`.

    Args:
      round_num: The round just trained (0-based).
      is_last: Whether it is the run's last round.

    Returns:
      True every `checkpoint_every` rounds and after the last round, unless
      `checkpoint_every` is 0.
    """
    return bool(self.checkpoint_every) and (
        (round_num + 1) % self.checkpoint_every == 0 or is_last
    )

  def versions(self) -> list[int]:
    """The rounds of the saved checkpoints (complete or not), ascending."""
    return asyncio.run(self._manager.get_versions()) or []

  def marker_path(self, version: int) -> str:
    """The marker file of checkpoint `version`.

    Args:
      version: The round of the checkpoint.

    Returns:
      `<output_dir>/checkpoints/complete_<version>`, written (atomically)
      only after that checkpoint is completely saved.
    """
    return os.path.join(self.directory, f'{_MARKER_PREFIX}{version}')

  def save(
      self, round_num: int, state: Any, batch_stream_positions: np.ndarray
  ) -> None:
    """Saves the run after `round_num`, then drops what is no longer needed.

    The checkpoint is saved, then its marker written; the markers of
    checkpoints the manager dropped are deleted, and so are the client-state
    files that neither the current state nor a kept checkpoint names
    (`FileClientStateStore.prune`). A process killed between the save and
    the marker (fault point 'mid_checkpoint') leaves a torn checkpoint that
    `restore_latest` skips.

    Args:
      round_num: The round just trained.
      state: The learning process's server state after it.
      batch_stream_positions: The clients' batch stream positions after it.
    """
    versions = (
        self.store.versions.copy()
        if self.store is not None
        else np.zeros([self._num_clients], np.int32)
    )
    asyncio.run(
        self._manager.save(
            collections.OrderedDict(
                state=state,
                round_num=np.int32(round_num),
                client_state_versions=versions,
                batch_stream_positions=batch_stream_positions.copy(),
            ),
            round_num,
        )
    )
    crash_safety.maybe_inject_fault('mid_checkpoint', round_num)
    crash_safety.write_atomically(self.marker_path(round_num), 'complete\n')
    kept = set(self.versions())
    for name in os.listdir(self.directory):
      suffix = name[len(_MARKER_PREFIX) :]
      if (
          name.startswith(_MARKER_PREFIX)
          and suffix.isdigit()
          and int(suffix) not in kept
      ):
        os.remove(os.path.join(self.directory, name))
    if self.store is not None:
      self._kept_client_versions = (self._kept_client_versions + [versions])[
          -_KEEP_TOTAL:
      ]
      self.store.prune(self._kept_client_versions[0])

  def restore_latest(self) -> Optional[RestoredCheckpoint]:
    """Restores the newest complete, readable checkpoint.

    Newer checkpoints than the one restored (torn or unreadable) are
    deleted, and the store's versions are reset to the checkpoint's.

    Returns:
      The restored checkpoint, or None if there is none to resume from (no
      checkpoint, or only a torn first one: the run starts from round 0).

    Raises:
      OutputDirectoryError: If checkpoints after the first exist but none is
        complete and readable (starting over would overwrite the results
        and client states of the run they belong to).
      FileNotFoundError: If a client-state file the restored checkpoint
        names is missing (`FileClientStateStore.restore`).
    """
    versions = self.versions()
    for version in sorted(versions, reverse=True):
      if not os.path.exists(self.marker_path(version)):
        self._log_fn(
            f'checkpoint {version} is incomplete (torn write); skipped'
        )
        continue
      try:
        loaded = asyncio.run(self._manager.load(version, self._structure()))
      except Exception as error:  # pylint: disable=broad-except
        self._log_fn(
            f'checkpoint {version} unreadable ({type(error).__name__}); '
            'trying the previous one'
        )
        continue
      if self.store is not None:
        self.store.restore(loaded['client_state_versions'])
        self._kept_client_versions = [self.store.versions.copy()]
      self._remove_after(version)
      self._log_fn(f'resumed from checkpoint after round {version}')
      return RestoredCheckpoint(
          round_num=int(loaded['round_num']),
          state=loaded['state'],
          batch_stream_positions=np.array(
              loaded['batch_stream_positions'], np.int64
          ),
      )
    first_checkpoint = max(self.checkpoint_every, 1) - 1
    if any(version > first_checkpoint for version in versions):
      # Only a kill during the very first checkpoint leaves nothing to resume
      # from; otherwise starting over would overwrite the results and client
      # states of the run these checkpoints belong to.
      raise OutputDirectoryError(
          f'{self.output_dir} has checkpoints {sorted(versions)} but none is '
          'complete and readable; refusing to restart over them. Move the '
          'directory away, or pass --overwrite to start afresh.'
      )
    self._log_fn('no checkpoint found; starting from round 0')
    return None

  def _structure(self) -> collections.OrderedDict:
    """The structure a checkpoint is loaded into."""
    return collections.OrderedDict(
        state=self._state_template,
        round_num=np.int32(0),
        client_state_versions=np.zeros([self._num_clients], np.int32),
        batch_stream_positions=np.zeros([self._num_clients], np.int64),
    )

  def _remove_after(self, version: int) -> None:
    """Deletes checkpoints newer than `version` (torn or from a lost future)."""
    for newer in self.versions():
      if newer > version:
        shutil.rmtree(os.path.join(self.directory, f'{_STATE_PREFIX}{newer}'))
        if os.path.exists(self.marker_path(newer)):
          os.remove(self.marker_path(newer))
