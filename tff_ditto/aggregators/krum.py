"""Krum and Multi-Krum (Blanchard et al. 2017).

Pairwise squared L2 distances come from ONE matrix product,
`D = sq_i + sq_j - 2 X X^T` (clamped at 0; NaN/Inf from overflow become
+inf). Each update's score is the sum of its `n - f - 2` smallest distances
to the *other* updates (the bucketing repo's rule; the Ditto reference sums
the k + 1 smallest including the zero self-distance with k = n - E - 2, the
same number). `m = 1` returns the argmin update (Krum), `m > 1` the mean of
the m best-scoring updates (Multi-Krum), `m = None` uses m = n - f (the Ditto
reference's `mkrum`).

Fallback when n - f - 2 < 1 (too few updates for the requested f; n is only
known at run time, so this cannot be rejected when the factory is built):
the score uses the single nearest other update (k = 1); with n = 1 the only
update is returned. `krum_neighbours` reports the k actually used, so a
degraded round is visible in the measurements. m is clipped to [1, n].

Measurements: `krum_selected` (index of the best-scoring update among the
finite updates, in client order), `krum_num_selected` (m used) and
`krum_neighbours` (k used).

Weighted form (Multi-Krum only): the scores and the selection ignore the
weights, and the m selected updates are averaged with their weights. Krum
(m = 1) has none: it returns one update, which weights cannot change.

The matrix product is float32: for updates of very different magnitudes the
distance between two nearby large updates loses relative precision, which
only matters for near-ties. With bucketing, n is the number of buckets and f
is not rescaled (as in the bucketing repo).
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput, weighted_mean
from tff_ditto.aggregators.gather import DEFAULT_GATHER


def pairwise_squared_distances(updates: tf.Tensor) -> tf.Tensor:
  """`[n, d]` -> `[n, n]` squared L2 distances via one Gram matrix."""
  sq = tf.reduce_sum(tf.square(updates), axis=1)
  gram = tf.matmul(updates, updates, transpose_b=True)
  dist = sq[:, tf.newaxis] + sq[tf.newaxis, :] - 2.0 * gram
  dist = tf.maximum(dist, 0.0)
  return tf.where(tf.math.is_nan(dist), tf.constant(float('inf')), dist)


def krum_scores(updates: tf.Tensor, f: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Krum scores `[n]` and the number of neighbours k used."""
  n = tf.shape(updates)[0]
  dist = pairwise_squared_distances(updates)
  inf = tf.fill([n], float('inf'))
  dist = tf.linalg.set_diag(dist, inf)  # exclude self
  k = tf.maximum(tf.minimum(n - f - 2, n - 1), 1)
  nearest = -tf.math.top_k(-dist, k=k, sorted=False).values
  return tf.reduce_sum(nearest, axis=1), k


class KrumRule(RobustRule):
  """Krum (m=1) / Multi-Krum (m>1, or m=None for n-f).

  Multi-Krum has a weighted form (the weighted mean of the selected
  updates); Krum, which returns a single update, has none.
  """

  def __init__(self, f: int, m: Optional[int] = 1):
    if f < 0:
      raise ValueError(f'f must be >= 0, got {f}.')
    if m is not None and m < 1:
      raise ValueError(f'm must be >= 1 or None, got {m}.')
    self.f = int(f)
    self.m = None if m is None else int(m)
    self.has_weighted_form = self.m != 1

  def aggregate(self, updates, state, weights=None):
    n = tf.shape(updates)[0]
    scores, k = krum_scores(updates, self.f)
    m = n - self.f if self.m is None else tf.constant(self.m, tf.int32)
    m = tf.clip_by_value(m, 1, n)
    best = tf.math.top_k(-scores, k=m, sorted=True).indices
    if weights is None:
      result = tf.reduce_mean(tf.gather(updates, best), axis=0)
    else:
      result = weighted_mean(tf.gather(updates, best), tf.gather(weights, best))
    return RuleOutput(
        result,
        state,
        collections.OrderedDict(
            krum_selected=best[0], krum_num_selected=m, krum_neighbours=k
        ),
    )


class KrumFactory(RobustAggregatorFactory):
  """Krum with `f` presumed Byzantine updates; `m` > 1 gives Multi-Krum."""

  def __init__(
      self,
      f: int,
      m: Optional[int] = 1,
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    super().__init__(KrumRule(f, m), gather=gather, gather_dir=gather_dir)
