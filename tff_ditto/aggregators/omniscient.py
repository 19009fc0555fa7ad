"""Omniscient attacks of the bucketing paper, as a server-side SIMULATION hook.

ALIE, IPM and mimic attackers craft their message from the honest clients'
updates of the round, which no real client sees. In simulation they are
applied where all updates meet: this factory wraps any gather-based robust
rule, replaces the rows of the malicious clients by the crafted message, then
runs the rule on all rows. Malicious clients mark themselves with a negative
weight (the Ditto client computation does this for attack code
`omniscient`; see `tff_ditto.attacks`). Wrapping an unweighted factory, the
weights are otherwise ignored. Wrapping an `ExampleWeightedFactory`
(`tff_ditto.aggregators.weighted`), |weight| is the client's example count:
clients of weight 0 are dropped, and the inner rule's weighted form runs on
the attacked rows with weights |w_i| (an attacker keeps its own count). The
message itself is crafted as in the unweighted case (from the unweighted
mean, std and principal direction of the honest rows), so both modes see
the same attacked rows.

* IPM (inner-product manipulation): -eps * mean(honest), eps = 0.1.
* ALIE ("a little is enough"): mu - z_max * sigma, coordinate-wise mean and
  std of the honest rows (the unbiased std, divisor h - 1, as `torch.std`
  in the reference), z_max = Phi^-1((n - m - s) / (n - m)) with
  s = floor(n / 2 + 1) - m, n rows of which m malicious.
* mimic (`MimicVariantAttacker` with its default warm-up of 1 round): in
  the first attacked round every attacker copies the honest row with the
  largest inner product with z, the top principal direction of the honest
  rows after one power-iteration step from a fixed seeded Gaussian vector;
  that target is then kept (in the aggregation state) and copied in every
  later round, as the reference fixes its target rank after warm-up.
  The target is stored as an index among the honest rows, so it names the
  same client only when the same clients arrive in the same order every
  round (full participation, as in the bucketing setup, where this holds
  because the gather keeps client order); an index out of range in a later
  round (fewer honest rows) re-chooses the target.
  Deviation: the seeded start vector is TF's stateless normal, not
  torch's `randn` with seed 0 (same distribution, different numbers).

The messages are computed from the updates as they arrive. This package's
client update is `initial - final` weights (lr * gradient for one SGD step),
i.e. the same sign as the reference's gradients, so ALIE's `- z_max * sigma`
and mimic's argmax act in the same direction as in the reference.
"""

from __future__ import annotations

import collections
from typing import Optional, Union

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory
from tff_ditto.aggregators.base import RobustRule
from tff_ditto.aggregators.base import RuleOutput
from tff_ditto.aggregators.base import WeightedRobustAggregatorFactory
from tff_ditto.aggregators.weighted import ExampleWeightedFactory
from tff_ditto.aggregators.weighted import check_has_weighted_form
from tff_ditto.names import OMNISCIENT_ATTACKS

IPM_EPSILON = 0.1
INNER_KEY = 'inner'
MIMIC_TARGET_KEY = 'mimic_target'


def alie_z_max(num_rows: tf.Tensor, num_malicious: tf.Tensor) -> tf.Tensor:
  """z_max of ALIE for n rows of which m are malicious (float32)."""
  n = tf.cast(num_rows, tf.float32)
  m = tf.cast(num_malicious, tf.float32)
  s = tf.floor(n / 2.0 + 1.0) - m
  probability = (n - m - s) / tf.maximum(n - m, 1.0)
  probability = tf.clip_by_value(probability, 1e-6, 1.0 - 1e-6)
  return tf.math.ndtri(probability)


def unbiased_std(rows: tf.Tensor) -> tf.Tensor:
  """Coordinate-wise std of `[h, d]` rows with divisor h - 1 (0 if h = 1)."""
  count = tf.cast(tf.shape(rows)[0], rows.dtype)
  correction = tf.sqrt(count / tf.maximum(count - 1.0, 1.0))
  return tf.math.reduce_std(rows, axis=0) * correction


def mimic_target_index(honest: tf.Tensor) -> tf.Tensor:
  """Index (int32) of the honest row that mimic copies (`argmax <g_i, z>`).

  z is the reference's initial direction: one power-iteration step,
  `z ∝ sum_i <g_i - mu, z0> (g_i - mu)`, from a seeded Gaussian `z0`
  (normalising z does not change the argmax).

  Args:
    honest: The honest rows `[h, d]`, h >= 1.

  Returns:
    A scalar int32 index into the rows.
  """
  mean = tf.reduce_mean(honest, axis=0)
  deviations = honest - mean
  start = tf.random.stateless_normal(tf.shape(mean), seed=[0, 0])
  direction = tf.linalg.matvec(
      deviations, tf.linalg.matvec(deviations, start), transpose_a=True
  )
  return tf.cast(tf.argmax(tf.linalg.matvec(honest, direction)), tf.int32)


def craft_malicious_message(
    honest: tf.Tensor,
    num_rows: tf.Tensor,
    num_malicious: tf.Tensor,
    attack: str,
) -> tf.Tensor:
  """The [d] message every attacker sends, from the honest rows [h, d].

  For 'mimic' this is the copy of the per-round target
  (`mimic_target_index`); `OmniscientAttackRule` keeps the first round's
  target instead, as the reference does.
  """
  mean = tf.reduce_mean(honest, axis=0)
  if attack == 'ipm':
    return -IPM_EPSILON * mean
  if attack == 'alie':
    return mean - alie_z_max(num_rows, num_malicious) * unbiased_std(honest)
  if attack == 'mimic':
    return tf.gather(honest, mimic_target_index(honest))
  raise ValueError(f'unknown omniscient attack {attack!r}')


class OmniscientAttackRule(RobustRule):
  """Replaces negatively weighted rows by the crafted message, then `inner`."""

  uses_weights = True

  def __init__(self, inner: RobustRule, attack: str, weighted: bool = False):
    """Wraps `inner`.

    Args:
      inner: An unweighted rule.
      attack: 'alie', 'ipm' or 'mimic'.
      weighted: Run `inner`'s weighted form with the weights |w_i| (clients
        of weight 0 dropped); False ignores the weights but their sign.

    Raises:
      ValueError: On an unknown attack, an inner rule that uses weights, or
        `weighted` with an inner rule that has no weighted form.
    """
    if attack not in OMNISCIENT_ATTACKS:
      raise ValueError(f'attack must be one of {OMNISCIENT_ATTACKS}')
    if inner.uses_weights:
      raise ValueError('the inner rule must not use weights')
    if weighted:
      check_has_weighted_form(inner)
    self._inner = inner
    self._attack = attack
    self._weighted = bool(weighted)

  @property
  def weighted(self) -> bool:
    """Whether the inner rule's weighted form runs (with weights |w_i|)."""
    return self._weighted

  def client_mask(self, weights):
    """Weighted: the clients with a non-zero weight; else all (None)."""
    if not self._weighted:
      return None
    return tf.not_equal(weights, 0.0)

  def initial_state(self, dim: int):
    """The inner rule's state, plus the mimic target (-1 = not chosen)."""
    return collections.OrderedDict([
        (INNER_KEY, self._inner.initial_state(dim)),
        (MIMIC_TARGET_KEY, tf.constant(-1, tf.int32)),
    ])

  def aggregate(self, updates, state, weights=None):
    malicious = weights < 0.0
    num_malicious = tf.reduce_sum(tf.cast(malicious, tf.int32))
    honest = tf.boolean_mask(updates, tf.logical_not(malicious))
    num_honest = tf.shape(honest)[0]
    target = tf.cast(state[MIMIC_TARGET_KEY], tf.int32)

    def attacked():
      if self._attack == 'mimic':
        keep = tf.logical_and(target >= 0, target < num_honest)
        new_target = tf.cond(
            keep, lambda: target, lambda: mimic_target_index(honest)
        )
        message = tf.gather(honest, new_target)
      else:
        new_target = target
        message = craft_malicious_message(
            honest, tf.shape(updates)[0], num_malicious, self._attack
        )
      return (
          tf.where(malicious[:, None], message[None, :], updates),
          new_target,
      )

    rows, target = tf.cond(
        tf.logical_and(num_malicious > 0, num_honest > 0),
        attacked,
        lambda: (updates, target),
    )
    inner_weights = tf.abs(weights) if self._weighted else None
    out = self._inner.aggregate(rows, state[INNER_KEY], inner_weights)
    measurements = collections.OrderedDict(out.measurements)
    measurements['omniscient_attackers'] = num_malicious
    measurements[MIMIC_TARGET_KEY] = target
    new_state = collections.OrderedDict(
        [(INNER_KEY, out.state), (MIMIC_TARGET_KEY, target)]
    )
    return RuleOutput(out.result, new_state, measurements)


class OmniscientAttackFactory(WeightedRobustAggregatorFactory):
  """Simulates an omniscient attack in front of a gather-based robust rule."""

  def __init__(
      self,
      inner: Union[RobustAggregatorFactory, ExampleWeightedFactory],
      attack: str,
      *,
      gather: Optional[str] = None,
  ):
    """Wraps `inner` (e.g. `build_aggregator('median')`).

    Args:
      inner: A `RobustAggregatorFactory` (any rule but k_loss; bucketing is
        fine and then sees the attacked rows, as in the paper), or an
        `ExampleWeightedFactory` of one, whose weighted form then runs on
        the attacked rows (see module doc).
      attack: 'alie', 'ipm' or 'mimic'.
      gather: Gather method; default the inner factory's.

    Raises:
      TypeError: If `inner` is neither kind of factory.
    """
    if isinstance(inner, ExampleWeightedFactory):
      rule = OmniscientAttackRule(inner.weighted_rule, attack, weighted=True)
    elif isinstance(inner, RobustAggregatorFactory):
      rule = OmniscientAttackRule(inner.rule, attack)
    else:
      raise TypeError(
          'OmniscientAttackFactory wraps a RobustAggregatorFactory or an '
          f'ExampleWeightedFactory, got {type(inner).__name__}.'
      )
    super().__init__(
        rule,
        gather=gather or inner.gather,
        gather_dir=inner.gather_dir,
    )
