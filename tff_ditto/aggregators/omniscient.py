"""Omniscient attacks of the bucketing paper, as a server-side SIMULATION hook.

ALIE, IPM and mimic attackers craft their message from the honest clients'
updates of the round, which no real client sees. In simulation they are
applied where all updates meet: this factory wraps any gather-based robust
rule, replaces the rows of the malicious clients by the crafted message, then
runs the rule on all rows. Malicious clients mark themselves with a negative
weight (the Ditto client computation does this for attack code
`omniscient`; see `tff_ditto.attacks`); weights are otherwise ignored.

* IPM (inner-product manipulation): -eps * mean(honest), eps = 0.1.
* ALIE ("a little is enough"): mu - z_max * sigma, coordinate-wise mean and
  std of the honest rows, z_max = Phi^-1((n - m - s) / (n - m)) with
  s = floor(n / 2 + 1) - m, n rows of which m malicious.
* mimic: every attacker copies one honest row: the one with the largest
  inner product with the top principal direction of the honest rows (one
  power-iteration step from a fixed seeded vector). Deviation: the bucketing
  code fixes the target after a warm-up phase; here it is chosen per round.
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory
from tff_ditto.aggregators.base import RobustRule
from tff_ditto.aggregators.base import RuleOutput
from tff_ditto.aggregators.base import WeightedRobustAggregatorFactory

OMNISCIENT_ATTACKS = ('alie', 'ipm', 'mimic')
IPM_EPSILON = 0.1


def alie_z_max(num_rows: tf.Tensor, num_malicious: tf.Tensor) -> tf.Tensor:
  """z_max of ALIE for n rows of which m are malicious (float32)."""
  n = tf.cast(num_rows, tf.float32)
  m = tf.cast(num_malicious, tf.float32)
  s = tf.floor(n / 2.0 + 1.0) - m
  probability = (n - m - s) / tf.maximum(n - m, 1.0)
  probability = tf.clip_by_value(probability, 1e-6, 1.0 - 1e-6)
  return tf.math.ndtri(probability)


def craft_malicious_message(
    honest: tf.Tensor, num_rows: tf.Tensor, num_malicious: tf.Tensor,
    attack: str,
) -> tf.Tensor:
  """The [d] message every attacker sends, from the honest rows [h, d]."""
  mean = tf.reduce_mean(honest, axis=0)
  if attack == 'ipm':
    return -IPM_EPSILON * mean
  if attack == 'alie':
    std = tf.math.reduce_std(honest, axis=0)
    return mean - alie_z_max(num_rows, num_malicious) * std
  if attack == 'mimic':
    deviations = honest - mean
    start = tf.random.stateless_normal(tf.shape(mean), seed=[0, 0])
    direction = tf.linalg.matvec(
        deviations, tf.linalg.matvec(deviations, start), transpose_a=True
    )
    target = tf.argmax(tf.linalg.matvec(honest, direction))
    return tf.gather(honest, target)
  raise ValueError(f'unknown omniscient attack {attack!r}')


class OmniscientAttackRule(RobustRule):
  """Replaces negatively weighted rows by the crafted message, then `inner`."""

  uses_weights = True

  def __init__(self, inner: RobustRule, attack: str):
    if attack not in OMNISCIENT_ATTACKS:
      raise ValueError(f'attack must be one of {OMNISCIENT_ATTACKS}')
    if inner.uses_weights:
      raise ValueError('the inner rule must not use weights')
    self._inner = inner
    self._attack = attack

  def initial_state(self, dim: int):
    return self._inner.initial_state(dim)

  def aggregate(self, updates, state, weights=None):
    malicious = weights < 0.0
    num_malicious = tf.reduce_sum(tf.cast(malicious, tf.int32))
    honest = tf.boolean_mask(updates, tf.logical_not(malicious))
    num_honest = tf.shape(honest)[0]

    def attacked():
      message = craft_malicious_message(
          honest, tf.shape(updates)[0], num_malicious, self._attack
      )
      return tf.where(malicious[:, None], message[None, :], updates)

    rows = tf.cond(
        tf.logical_and(num_malicious > 0, num_honest > 0),
        attacked,
        lambda: updates,
    )
    out = self._inner.aggregate(rows, state, None)
    measurements = collections.OrderedDict(out.measurements)
    measurements['omniscient_attackers'] = num_malicious
    return RuleOutput(out.result, out.state, measurements)


class OmniscientAttackFactory(WeightedRobustAggregatorFactory):
  """Simulates an omniscient attack in front of a gather-based robust rule."""

  def __init__(
      self,
      inner: RobustAggregatorFactory,
      attack: str,
      *,
      gather: Optional[str] = None,
  ):
    """Wraps `inner` (e.g. `build_aggregator('median')`).

    Args:
      inner: A `RobustAggregatorFactory` (any rule but k_loss; bucketing is
        fine and then sees the attacked rows, as in the paper).
      attack: 'alie', 'ipm' or 'mimic'.
      gather: Gather method; default the inner factory's.
    """
    super().__init__(
        OmniscientAttackRule(inner.rule, attack),
        gather=gather or inner.gather,
        gather_dir=inner.gather_dir,
    )
