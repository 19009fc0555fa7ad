"""Geometric median by smoothed Weiszfeld (RFA, Pillutla et al. 2019).

As the bucketing repo's `RFA(T=8, nu=0.1)`: start at z0 = 0 (or, as an
option, at the mean), then T times

    beta_k = (1/n) / max(||z - x_k||, nu);   z = sum_k beta_k x_k / sum_k beta_k.

The smoothing nu bounds every weight, so the iteration is defined even when z
coincides with an update.

Weighted form (the RFA paper's weights alpha_k): `1/n` becomes
`alpha_k = w_k / sum_j w_j`, and the 'mean' start the weighted mean.
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput, weighted_mean
from tff_ditto.aggregators.gather import DEFAULT_GATHER

RFA_INITS = ('zero', 'mean')


class GeometricMedianRule(RobustRule):
  """Smoothed Weiszfeld with `num_iterations` steps and smoothing `nu`."""

  has_weighted_form = True

  def __init__(
      self, num_iterations: int = 8, nu: float = 0.1, init: str = 'zero'
  ):
    if num_iterations < 1:
      raise ValueError(f'num_iterations must be >= 1, got {num_iterations}.')
    if nu <= 0:
      raise ValueError(f'nu must be > 0, got {nu}.')
    if init not in RFA_INITS:
      raise ValueError(f'init must be one of {RFA_INITS}, got {init!r}.')
    self.num_iterations = int(num_iterations)
    self.nu = float(nu)
    self.init = init

  def aggregate(self, updates, state, weights=None):
    if weights is None:
      n = tf.cast(tf.shape(updates)[0], tf.float32)
      alpha = 1.0 / n
    else:
      alpha = weights / tf.reduce_sum(weights)
    if self.init == 'zero':
      z = tf.zeros_like(updates[0])
    elif weights is None:
      z = tf.reduce_mean(updates, axis=0)
    else:
      z = weighted_mean(updates, weights)
    for _ in range(self.num_iterations):
      dist = tf.norm(updates - z[tf.newaxis, :], axis=1)
      beta = alpha / tf.maximum(dist, self.nu)
      z = tf.linalg.matvec(updates, beta, transpose_a=True) / tf.reduce_sum(
          beta
      )
    final_dist = tf.norm(updates - z[tf.newaxis, :], axis=1)
    return RuleOutput(
        z,
        state,
        collections.OrderedDict(rfa_mean_distance=tf.reduce_mean(final_dist)),
    )


class GeometricMedianFactory(RobustAggregatorFactory):
  """RFA: smoothed-Weiszfeld geometric median (T=8, nu=0.1, z0=0 default)."""

  def __init__(
      self,
      num_iterations: int = 8,
      nu: float = 0.1,
      init: str = 'zero',
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    super().__init__(
        GeometricMedianRule(num_iterations, nu, init),
        gather=gather,
        gather_dir=gather_dir,
    )


RFAFactory = GeometricMedianFactory
