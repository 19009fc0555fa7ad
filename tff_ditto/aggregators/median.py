"""Coordinate-wise median (exact, the average of the two middle values for
even n, as `np.median` and the bucketing repo's `CM`)."""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput
from tff_ditto.aggregators.gather import DEFAULT_GATHER


def order_statistic(transposed: tf.Tensor, k) -> tf.Tensor:
  """The k-th smallest (0-based) value of each row of `[d, n]` -> `[d]`.

  `NthElement` is a selection (O(n) per row), several times faster than the
  sort or top_k it replaces (measured on [222k, 300]: 0.8 s against 3.7 s
  for a full sort and 5.0 s for top_k of half the row).
  """
  return tf.raw_ops.NthElement(input=transposed, n=k)


def coordinate_median(updates: tf.Tensor) -> tf.Tensor:
  """Median over axis 0 of `[n, d]` (n >= 1) -> `[d]`.

  For odd n the middle order statistic; for even n the mean of the two
  middle ones (the lower one is only computed when n is even).
  """
  n = tf.shape(updates)[0]
  transposed = tf.transpose(updates)
  high = order_statistic(transposed, n // 2)
  low = tf.cond(
      tf.equal(n % 2, 0),
      lambda: order_statistic(transposed, n // 2 - 1),
      lambda: high,
  )
  return 0.5 * low + 0.5 * high  # exact for odd n, no overflow


def median_1d(values: tf.Tensor) -> tf.Tensor:
  """Exact median of a `[n]` vector (n >= 1)."""
  return coordinate_median(values[:, tf.newaxis])[0]


class MedianRule(RobustRule):
  """Coordinate-wise median."""

  def aggregate(self, updates, state, weights=None):
    del weights
    return RuleOutput(
        coordinate_median(updates), state, collections.OrderedDict()
    )


class MedianFactory(RobustAggregatorFactory):
  """Coordinate-wise median aggregator."""

  def __init__(self, *, gather: str = DEFAULT_GATHER, gather_dir: Optional[str] = None):
    super().__init__(MedianRule(), gather=gather, gather_dir=gather_dir)
