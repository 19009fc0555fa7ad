"""Coordinate-wise trimmed mean (bucketing repo `TM`, Yin et al. 2018).

Weighted form: per coordinate the same b smallest and b largest values are
dropped (by count, ties in client order), and the remaining values are
averaged with their clients' weights.
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput
from tff_ditto.aggregators.gather import DEFAULT_GATHER
from tff_ditto.aggregators.median import order_statistic, sort_columns_with_weights


def weighted_trimmed_mean(
    updates: tf.Tensor, weights: tf.Tensor, b: tf.Tensor
) -> tf.Tensor:
  """Per coordinate: drop the b smallest and b largest values, weighted mean.

  Args:
    updates: The rows `[n, d]`, n > 2b.
    weights: Their weights `[n]`, > 0.
    b: Values dropped at each end (int32 scalar).

  Returns:
    The weighted trimmed mean `[d]`.
  """
  n = tf.shape(updates)[0]
  values, sorted_weights = sort_columns_with_weights(updates, weights)
  kept_values = values[:, b : n - b]
  kept_weights = sorted_weights[:, b : n - b]
  return tf.reduce_sum(kept_values * kept_weights, axis=1) / tf.reduce_sum(
      kept_weights, axis=1
  )


class TrimmedMeanRule(RobustRule):
  """Drop the b largest and b smallest values per coordinate, average the rest.

  The result divides by n - 2b. If n - 2b <= 0, b is reduced to
  (n - 1) // 2, so at least one value per coordinate remains (the median for
  odd n, the mean of the two middle values for even n). The b used is
  reported as `trimmed_b`. Weighted form: `weighted_trimmed_mean`.
  """

  has_weighted_form = True

  def __init__(self, b: int):
    if b < 0:
      raise ValueError(f'b must be >= 0, got {b}.')
    self.b = int(b)

  def aggregate(self, updates, state, weights=None):
    n = tf.shape(updates)[0]
    b = tf.minimum(tf.constant(self.b, tf.int32), (n - 1) // 2)
    if weights is not None:
      return RuleOutput(
          weighted_trimmed_mean(updates, weights, b),
          state,
          collections.OrderedDict(trimmed_b=b),
      )
    # Selection instead of a sort: with lo, hi the b-th smallest and b-th
    # largest values of a coordinate, clipping the column to [lo, hi] turns
    # the b trimmed values at each end into exactly b copies of lo and of hi
    # (ties included), so the kept sum is sum(clip) - b*(lo + hi). Outliers
    # are clipped before summing, so they cause no cancellation.
    transposed = tf.transpose(updates)
    lo = order_statistic(transposed, b)
    hi = order_statistic(transposed, n - 1 - b)
    clipped = tf.clip_by_value(transposed, lo[:, tf.newaxis], hi[:, tf.newaxis])
    b_float = tf.cast(b, tf.float32)
    kept_sum = tf.reduce_sum(clipped, axis=1) - b_float * (lo + hi)
    result = kept_sum / tf.cast(n - 2 * b, tf.float32)
    return RuleOutput(result, state, collections.OrderedDict(trimmed_b=b))


class TrimmedMeanFactory(RobustAggregatorFactory):
  """Coordinate-wise trimmed mean dropping `b` values at each end."""

  def __init__(
      self,
      b: int,
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    super().__init__(TrimmedMeanRule(b), gather=gather, gather_dir=gather_dir)
