"""Which clients take part in a round, and the per-client seeds of a run.

Every random draw of a run's driver is a function of the experiment seed and
of what it is for: the clients of a round (`sample_clients`) and, per client,
the seeds of its training and fine-tuning batch streams and of its attack
instruction (`client_seed` with one of the seed streams). None depends on
earlier draws or on NumPy's global generator, so a resumed run draws the same.
NumPy only: no TensorFlow.
"""

from __future__ import annotations

import numpy as np

# Seed streams: independent random draws keyed by purpose.
TRAIN_STREAM = 1
FINETUNE_STREAM = 2
ATTACK_STREAM = 3
# The client sampling's stream (the last entry of its generator's seed).
SAMPLING_STREAM = 4


def client_seed(seed: int, stream: int, *keys: int) -> int:
  """A seed in [0, 2**31 - 1) determined by the experiment seed and keys.

  Args:
    seed: The experiment seed.
    stream: What the seed is for (`TRAIN_STREAM`, `FINETUNE_STREAM`,
      `ATTACK_STREAM`).
    *keys: Further keys (round, client index, pass).

  Returns:
    The seed.
  """
  return int(np.random.default_rng([seed, stream, *keys]).integers(2**31 - 1))


def clients_in_round(clients_per_round: int, num_clients: int) -> int:
  """How many clients a round samples: `clients_per_round`, capped at the run's."""
  return min(clients_per_round, num_clients)


def sample_clients(
    round_num: int,
    num_train_examples: np.ndarray,
    clients_per_round: int,
    seed: int,
    mode: str = 'weighted',
) -> np.ndarray:
  """The clients of a round, seeded by (seed, round_num) alone.

  Args:
    round_num: Round index (0-based).
    num_train_examples: Training examples per client.
    clients_per_round: How many to draw (capped at the number of clients).
    seed: Experiment seed.
    mode: 'weighted' = without replacement with probability proportional to
      training examples (the reference's default sampling); 'uniform'.

  Returns:
    Sorted int array of client indices.
  """
  num_clients = len(num_train_examples)
  count = clients_in_round(clients_per_round, num_clients)
  rng = np.random.default_rng([seed, round_num, SAMPLING_STREAM])
  if mode == 'weighted':
    probabilities = np.asarray(num_train_examples, np.float64)
    probabilities = probabilities / probabilities.sum()
  else:
    probabilities = None
  return np.sort(
      rng.choice(num_clients, size=count, replace=False, p=probabilities)
  )
