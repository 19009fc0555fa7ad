"""Clipping at this round's median norm (Ditto reference `gradient_clipping`).

Every update whose L2 norm exceeds the median norm m of this round's updates
(exact median, average of the middle two for even n, as `np.median`) is
rescaled by m / (norm + 1e-10); the others are kept. The clipped updates are
then averaged, or passed to any inner rule (`inner=`).

Weighted form (when the inner rule has one): the median norm stays the
unweighted median of the clients' norms (so a client cannot move the
clipping threshold through its reported example count), and the clipped
updates go to the inner rule's weighted form (by default the weighted mean).
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput, count, row_norms
from tff_ditto.aggregators.gather import DEFAULT_GATHER
from tff_ditto.aggregators.mean import MeanRule
from tff_ditto.aggregators.median import median_1d


class MedianNormClippingRule(RobustRule):
  """Rescale above-median-norm updates to the median norm, then `inner`."""

  def __init__(self, inner: Optional[RobustRule] = None):
    self.inner = MeanRule() if inner is None else inner
    if self.inner.uses_weights:
      raise ValueError(
          'The inner rule of median-norm clipping must be unweighted.'
      )
    self.has_weighted_form = self.inner.has_weighted_form

  def initial_state(self, dim):
    return self.inner.initial_state(dim)

  def aggregate(self, updates, state, weights=None):
    norms = row_norms(updates)
    median_norm = median_1d(norms)
    above = norms > median_norm
    scale = tf.where(above, median_norm / (norms + 1e-10), tf.ones_like(norms))
    out = self.inner.aggregate(updates * scale[:, tf.newaxis], state, weights)
    measurements = collections.OrderedDict(
        median_norm=median_norm, norm_clipped=count(above)
    )
    measurements.update(out.measurements)
    return RuleOutput(out.result, out.state, measurements)


class MedianNormClippingFactory(RobustAggregatorFactory):
  """Median-norm clipping, then the mean (default) or an inner rule.

  `inner` is one of this package's unweighted factories or rules; its rule is
  applied to the clipped updates (its gather settings are not used).
  """

  def __init__(
      self,
      inner=None,
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    if isinstance(inner, RobustAggregatorFactory):
      inner = inner.rule
    super().__init__(
        MedianNormClippingRule(inner), gather=gather, gather_dir=gather_dir
    )
