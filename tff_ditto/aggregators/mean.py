"""Plain mean of the gathered updates (baseline with non-finite filtering).

Unlike `tff.aggregators.UnweightedMeanFactory`, this drops clients with
NaN/Inf entries and can be wrapped by bucketing; it pays for the gather.
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput, weighted_mean
from tff_ditto.aggregators.gather import DEFAULT_GATHER


class MeanRule(RobustRule):
  """Coordinate-wise mean of the rows; weighted: `sum w_i x_i / sum w_i`."""

  has_weighted_form = True

  def aggregate(self, updates, state, weights=None):
    if weights is None:
      result = tf.reduce_mean(updates, axis=0)
    else:
      result = weighted_mean(updates, weights)
    return RuleOutput(result, state, collections.OrderedDict())


class MeanFactory(RobustAggregatorFactory):
  """Gather-based unweighted mean."""

  def __init__(
      self, *, gather: str = DEFAULT_GATHER, gather_dir: Optional[str] = None
  ):
    super().__init__(MeanRule(), gather=gather, gather_dir=gather_dir)
