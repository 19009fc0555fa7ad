"""Crash safety of a run's files, and the kills that test it.

A run may be killed at any moment and resumed (`tff_ditto.checkpoints`);
the files it writes whole are written through a temporary file and a rename
(`write_atomically`), so a kill leaves the old file or the new one, never a
torn one. The crash-recovery tests (tests/test_reliability.py) kill a run at
chosen points with `TFF_DITTO_FAULT=<point>:<round>` (`maybe_inject_fault`).
"""

from __future__ import annotations

import os
import signal

# Fault injection for the crash-recovery tests: TFF_DITTO_FAULT=<point>:<round>
# makes the process SIGKILL itself at that point of that round. Points:
# 'mid_round' (client states written, not yet committed), 'mid_checkpoint'
# (checkpoint saved, completion marker not yet written).
FAULT_ENVIRONMENT_VARIABLE = 'TFF_DITTO_FAULT'


def maybe_inject_fault(point: str, round_num: int) -> None:
  """SIGKILLs this process if `FAULT_ENVIRONMENT_VARIABLE` names this point.

  Args:
    point: The point of the run reached ('mid_round', 'mid_checkpoint').
    round_num: The round it is reached in.
  """
  if os.environ.get(FAULT_ENVIRONMENT_VARIABLE) == f'{point}:{round_num}':
    os.kill(os.getpid(), signal.SIGKILL)


def write_atomically(path: str, text: str) -> None:
  """Writes a file via a temporary file and a rename.

  Args:
    path: The file written.
    text: Its whole content.
  """
  temporary = f'{path}.tmp{os.getpid()}'
  with open(temporary, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temporary, path)
