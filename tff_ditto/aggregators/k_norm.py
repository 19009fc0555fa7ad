"""k-norm (Ditto reference `k_norm`): average the n - E smallest-norm updates.

E is the number of excluded updates, the reference's expected number of
malicious clients per round `E = int(clients_per_round * num_corrupted / N)`
(`tff_ditto.aggregators.expected_byzantine_per_round`). At least one update
is kept. Ties in norm keep the lower client index. Weighted form: the
same rows are kept (by norm alone), and their weighted mean is returned.
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput, row_norms, weighted_mean
from tff_ditto.aggregators.gather import DEFAULT_GATHER


class KNormRule(RobustRule):
  """Mean of the `n - num_excluded` updates with the smallest norms."""

  has_weighted_form = True

  def __init__(self, num_excluded: int):
    if num_excluded < 0:
      raise ValueError(f'num_excluded must be >= 0, got {num_excluded}.')
    self.num_excluded = int(num_excluded)

  def aggregate(self, updates, state, weights=None):
    n = tf.shape(updates)[0]
    keep = tf.maximum(n - self.num_excluded, 1)
    kept = tf.math.top_k(-row_norms(updates), k=keep, sorted=True).indices
    if weights is None:
      result = tf.reduce_mean(tf.gather(updates, kept), axis=0)
    else:
      result = weighted_mean(tf.gather(updates, kept), tf.gather(weights, kept))
    return RuleOutput(result, state, collections.OrderedDict(k_norm_kept=keep))


class KNormFactory(RobustAggregatorFactory):
  """k-norm: drop the `num_excluded` largest-norm updates, average the rest."""

  def __init__(
      self,
      num_excluded: int,
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    super().__init__(
        KNormRule(num_excluded), gather=gather, gather_dir=gather_dir
    )
