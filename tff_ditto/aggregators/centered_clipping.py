"""Centered clipping (Karimireddy, He, Jaggi 2021), as the bucketing repo.

The center c is the previous round's aggregate, kept in the process state
(zeros before the first round). Each round, `iterations` times:

    c <- c + mean_k clip(x_k - c),   clip(v) = v * min(1, tau / ||v||),

and the final c is both the result and the next round's center. In FedAvg
and Ditto the "aggregate" is the aggregated model delta, so the center is the
previous round's aggregated delta (the analogue of the repo's momentum-based
aggregate). A round with no finite update keeps the center.

Weighted form: `c <- c + sum_k w_k clip(x_k - c) / sum_k w_k`.
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput, count, weighted_mean
from tff_ditto.aggregators.gather import DEFAULT_GATHER


class CenteredClippingRule(RobustRule):
  """Centered clipping with radius `tau`; state = the center `[d]`."""

  has_weighted_form = True

  def __init__(self, tau: float, iterations: int = 3):
    if tau <= 0:
      raise ValueError(f'tau must be > 0, got {tau}.')
    if iterations < 1:
      raise ValueError(f'iterations must be >= 1, got {iterations}.')
    self.tau = float(tau)
    self.iterations = int(iterations)

  def initial_state(self, dim):
    return tf.zeros([dim], tf.float32)

  def aggregate(self, updates, state, weights=None):
    center = state
    clipped = tf.constant(0, tf.int32)
    for _ in range(self.iterations):
      diff = updates - center[tf.newaxis, :]
      norms = tf.norm(diff, axis=1)
      # min(1, tau / ||v||) without dividing by zero.
      scale = self.tau / tf.maximum(norms, self.tau)
      clipped_diff = diff * scale[:, tf.newaxis]
      if weights is None:
        center = center + tf.reduce_mean(clipped_diff, axis=0)
      else:
        center = center + weighted_mean(clipped_diff, weights)
      clipped = count(norms > self.tau)
    return RuleOutput(
        center, center, collections.OrderedDict(cclip_clipped=clipped)
    )


class CenteredClippingFactory(RobustAggregatorFactory):
  """Centered clipping around the previous aggregate (stateful)."""

  def __init__(
      self,
      tau: float,
      iterations: int = 3,
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    super().__init__(
        CenteredClippingRule(tau, iterations),
        gather=gather,
        gather_dir=gather_dir,
    )
