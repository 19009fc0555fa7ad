"""Coordinate-wise median (exact, the average of the two middle values for
even n, as `np.median` and the bucketing repo's `CM`).

Weighted form (`weighted_coordinate_median`): per coordinate, the value
where the cumulative weight of the sorted values crosses half the total
weight (the mean of the two values around it at an exact tie), which for
equal weights is `np.median`. It sorts every coordinate, so it is slower
than the unweighted rule's selection.
"""

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


def sort_columns_with_weights(
    updates: tf.Tensor, weights: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
  """Each coordinate's values sorted, with the weights of their rows.

  Args:
    updates: `[n, d]`.
    weights: `[n]`.

  Returns:
    `(values [d, n], weights [d, n])`: row j holds coordinate j's values in
    ascending order (stable: ties keep client order) and the matching
    client weights.
  """
  transposed = tf.transpose(updates)
  order = tf.argsort(transposed, axis=1, stable=True)
  values = tf.gather(transposed, order, batch_dims=1)
  return values, tf.gather(weights, order)


def _first_true(monotone_mask: tf.Tensor) -> tf.Tensor:
  """Per row of a `[d, n]` mask of the form False..False True..True, the
  index of the first True (n - 1 if none)."""
  num_false = tf.reduce_sum(
      tf.cast(tf.logical_not(monotone_mask), tf.int32), axis=1
  )
  return tf.minimum(num_false, tf.shape(monotone_mask)[1] - 1)


def weighted_coordinate_median(
    updates: tf.Tensor, weights: tf.Tensor
) -> tf.Tensor:
  """Weighted median over axis 0 of `[n, d]` (n >= 1) -> `[d]`.

  Per coordinate, with the values sorted and W the total weight: the lower
  weighted median is the first value whose cumulative weight reaches W / 2,
  the upper one the first whose cumulative weight exceeds W / 2; the result
  is their mean (one value unless the cumulative weight hits W / 2
  exactly). Equal weights give `np.median`. The cumulative sums are float64,
  exact for integer weights (example counts).

  Args:
    updates: The rows `[n, d]`.
    weights: Their weights `[n]`, >= 0 with a positive sum.

  Returns:
    The weighted median `[d]`.
  """
  values, sorted_weights = sort_columns_with_weights(
      updates, tf.cast(weights, tf.float64)
  )
  cumulative = tf.cumsum(sorted_weights, axis=1)
  half = 0.5 * cumulative[:, -1:]
  low = tf.gather(values, _first_true(cumulative >= half), batch_dims=1)
  high = tf.gather(values, _first_true(cumulative > half), batch_dims=1)
  return 0.5 * low + 0.5 * high


def median_1d(values: tf.Tensor) -> tf.Tensor:
  """Exact median of a `[n]` vector (n >= 1)."""
  return coordinate_median(values[:, tf.newaxis])[0]


class MedianRule(RobustRule):
  """Coordinate-wise median; weighted: the weighted coordinate-wise median."""

  has_weighted_form = True

  def aggregate(self, updates, state, weights=None):
    if weights is None:
      result = coordinate_median(updates)
    else:
      result = weighted_coordinate_median(updates, weights)
    return RuleOutput(result, state, collections.OrderedDict())


class MedianFactory(RobustAggregatorFactory):
  """Coordinate-wise median aggregator."""

  def __init__(
      self, *, gather: str = DEFAULT_GATHER, gather_dir: Optional[str] = None
  ):
    super().__init__(MedianRule(), gather=gather, gather_dir=gather_dir)
