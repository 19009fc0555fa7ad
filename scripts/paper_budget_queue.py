"""Runs one queue of the paper-budget cells, niced, resuming where it stopped.

Each queue is one `scripts/reproduce.py` invocation (or a few, one after the
other) with the flags docs/reproduction.md gives for it; a finished cell is
skipped and a half-finished one continues from its last checkpoint, so the
same command restarts a queue after any stop. The queue runs the code of the
checkout the script is in, and its cells run in that checkout's
`results/paper_budget/runs/`: start it from a worktree at a fixed commit, so
that a cell never mixes code:

  git worktree add --detach ../runs-femnist HEAD
  nohup setsid .venv/bin/python ../runs-femnist/scripts/paper_budget_queue.py \\
      --queue=femnist_table1 --data_dir=../shared/data >> ../runs-femnist.log 2>&1 &

It lowers its own priority first: `nice` 10 and, where the kernel schedules
by autogroup, the autogroup's nice 19 (otherwise each background session gets
an equal share of the cores beside the test suite, docs/reproduction.md).
The Fashion-MNIST queues set glibc's allocator to keep its large buffers
mapped (docs/performance.md). `--dry_run` prints the commands.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence

from absl import app
from absl import flags

# The checkout this script is in: the queue runs its code (PYTHONPATH, over
# whatever checkout the virtual environment installed) and writes there.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REPRODUCE = os.path.join(_REPO_ROOT, 'scripts', 'reproduce.py')

# Flags every paper-budget cell runs with.
_COMMON = ('--curve_split=validation',)
# The runs folder of the paper-budget cells; a sensitivity grid has its own.
_PAPER_BUDGET_RUNS = ('--runs_dir=results/paper_budget/runs',)
_FEMNIST_CELLS = (
    '--datasets=femnist',
    '--rounds=femnist:3000',
    '--eval_every=200',
)
_FEMNIST = (
    _FEMNIST_CELLS + _PAPER_BUDGET_RUNS + ('--output_dir=results/paper_budget',)
)
_FMNIST = _PAPER_BUDGET_RUNS + (
    '--datasets=fmnist',
    '--output_dir=results/paper_budget_fmnist',
)
_VEHICLE = _PAPER_BUDGET_RUNS + (
    '--datasets=vehicle',
    '--rounds=vehicle:600',
    '--eval_every=50',
    '--skip_theory',
    '--discussion_dir=',
    '--output_dir=results/paper_budget',
)
# Malicious clients train only the global model: no reported number changes
# (docs/experiments.md); the attacked columns started from 2026-12-07 use it.
_FROZEN_MALICIOUS = ('--nomalicious_personal_training',)
# glibc keeps Fashion-MNIST's 52-78 MB buffers mapped (docs/performance.md).
_FMNIST_ENVIRONMENT = dict(
    MALLOC_MMAP_MAX_='0', MALLOC_TRIM_THRESHOLD_='17179869184'
)


@dataclasses.dataclass(frozen=True)
class Queue:
  """One queue: reproduce.py invocations run one after the other.

  Attributes:
    description: What it runs (for --help).
    invocations: Each invocation's flags (besides `_COMMON` and
      --data_dir).
    environment: Extra environment variables.
  """

  description: str
  invocations: tuple[tuple[str, ...], ...]
  environment: tuple[tuple[str, str], ...] = ()


QUEUES = {
    # The longest cells first: one that needs more than a session's hours
    # finishes only while the working folder survives from one session to
    # the next; a shorter one can run on a fresh machine.
    'femnist_table1': Queue(
        "FEMNIST Table 1's three remaining Ditto columns (A2 50 %, A3 15 %, "
        'A2 80 %), 3,000 rounds',
        (
            _FEMNIST
            + (
                '--tables=table1',
                '--methods=ditto',
                '--columns=a2:0.5,a3:0.15,a2:0.8',
            )
            + _FROZEN_MALICIOUS,
        ),
    ),
    'fmnist_table1': Queue(
        "Fashion-MNIST Table 1's attacked Ditto columns (A3 50 %, A3 20 %, "
        'A1 80 %) at its 2,750-round budget',
        (
            _FMNIST
            + (
                '--rounds=fmnist:2750',
                '--eval_every=500',
                '--tables=table1',
                '--methods=ditto',
                '--columns=a3:0.5,a3:0.2,a1:0.8',
            )
            + _FROZEN_MALICIOUS,
        ),
        tuple(_FMNIST_ENVIRONMENT.items()),
    ),
    'femnist_lr003': Queue(
        "FEMNIST Table 1's A1 and A2 columns at client lr 0.03 (the "
        "sensitivity of their verdicts to the global model's collapse or "
        'divergence at lr 0.1), 3,000 rounds, in results/paper_budget_lr003/',
        (
            _FEMNIST_CELLS
            + (
                '--runs_dir=results/paper_budget_lr003/runs',
                '--output_dir=results/paper_budget_lr003',
                '--tables=table1',
                '--methods=ditto',
                '--columns=a1:0.5,a1:0.8,a1:0.2,a2:0.5,a2:0.2',
                '--client_lr=0.03',
            )
            + _FROZEN_MALICIOUS,
        ),
    ),
    'femnist_table3': Queue(
        "FEMNIST Table 3's Ditto cells (one per robust aggregator and "
        'column: A1 80 %, A2 80 %, A3 20 %), 3,000 rounds',
        (
            _FEMNIST
            + (
                '--tables=table3',
                '--methods=ditto',
                '--columns=a1:0.8,a2:0.8,a3:0.2',
                # Not the mean: its cells are Table 1's (femnist_table1).
                '--aggregators=median,krum,multi_krum,k_norm,norm_clip',
            )
            + _FROZEN_MALICIOUS,
        ),
    ),
    'femnist_term': Queue(
        "FEMNIST Table 1's TERM (t = 1) row, 3,000 rounds, strongest "
        'columns first',
        (
            _FEMNIST
            + (
                '--tables=table1',
                '--methods=term',
                (
                    '--columns=a3:0.2,a1:0.8,a3:0.1,a1:0.5,none,a1:0.2,a2:0.2,'
                    'a2:0.5,a2:0.8,a3:0.15'
                ),
            ),
        ),
    ),
    'femnist_figure4': Queue(
        "FEMNIST Figure 4's TERM tilts under A1, 3,000 rounds",
        (
            _FEMNIST
            + (
                '--tables=figure4',
                '--methods=term',
                '--columns=a1:0.2,a1:0.5,a1:0.8',
            ),
        ),
    ),
    'vehicle_rest': Queue(
        "Vehicle's Table 1 global and robust-aggregator rows, 600 rounds",
        (_VEHICLE + ('--tables=table1', '--methods=global'),),
    ),
}

_QUEUE = flags.DEFINE_enum(
    'queue',
    None,
    sorted(QUEUES),
    'The queue to run: '
    + '; '.join(
        f'{name}: {queue.description}' for name, queue in QUEUES.items()
    )
    + '.',
)
_DATA_DIR = flags.DEFINE_string(
    'data_dir', '../shared/data', 'Parent of the datasets.'
)
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Print the commands and their environment; run nothing.'
)
flags.mark_flag_as_required('queue')


def commands(name: str, data_dir: str) -> list[list[str]]:
  """The queue's reproduce.py command lines, in order."""
  return [
      [sys.executable, _REPRODUCE, f'--data_dir={data_dir}', *_COMMON, *flags_]
      for flags_ in QUEUES[name].invocations
  ]


def lower_priority() -> None:
  """nice 10 for this process and its children, autogroup 19 where there is one."""
  os.nice(10)
  try:
    with open('/proc/self/autogroup', 'w') as f:
      f.write('19')
  except OSError:
    pass  # No autogroup scheduling here: nice alone ranks the process.


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  queue = QUEUES[_QUEUE.value]
  environment = dict(
      os.environ, PYTHONPATH=_REPO_ROOT, **dict(queue.environment)
  )
  lines = commands(_QUEUE.value, os.path.abspath(_DATA_DIR.value))
  if _DRY_RUN.value:
    print(f'cd {shlex.quote(_REPO_ROOT)}')
    for name, value in (('PYTHONPATH', _REPO_ROOT),) + queue.environment:
      print(f'export {name}={shlex.quote(value)}')
    for line in lines:
      print(shlex.join(line))
    return
  lower_priority()
  for line in lines:
    print(shlex.join(line), flush=True)
    completed = subprocess.run(
        line, env=environment, cwd=_REPO_ROOT, check=False
    )
    if completed.returncode:
      sys.exit(completed.returncode)


if __name__ == '__main__':
  app.run(main)
