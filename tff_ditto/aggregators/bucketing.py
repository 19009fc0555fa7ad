"""Bucketing (Karimireddy, He, Jaggi, ICLR 2022), as `utils.bucketing_wrapper`.

Every round: draw a fresh random permutation of the n (finite) updates, cut
the permuted sequence into ceil(n / s) buckets of s consecutive updates (the
last may be smaller), replace each bucket by its mean, and apply the inner
robust rule to the bucket means. s = 0 or 1 is the identity (no bucketing):
the factory then runs the inner rule unchanged.

The permutation is reproducible: it is
`tf.random.experimental.stateless_shuffle(tf.range(n), seed=[seed, round],
alg='philox')`, where `round` counts the process's rounds with at least one
finite update (0 for the first) and is kept in the state next to the inner
rule's state. `bucketing_permutation(n, seed, round)` returns it.

Krum inside bucketing sees n = number of buckets, with f not rescaled (as in
the bucketing repo).

Weighted form (when the inner rule has one): the same permutation and
buckets; each bucket's weight is the sum of its members' weights, its value
their weighted mean, and the inner rule's weighted form runs on the bucket
values with the bucket weights.
"""

from __future__ import annotations

import collections
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory, RobustRule, RuleOutput, rule_and_gather
from tff_ditto.aggregators.gather import DEFAULT_GATHER

ROUND_KEY = 'round'
INNER_KEY = 'inner'


def permutation_op(num_updates, seed: int, round_num) -> tf.Tensor:
  """The bucketing permutation as a TF op (int32 `[num_updates]`)."""
  seed_pair = tf.stack(
      [tf.constant(seed, tf.int64), tf.cast(round_num, tf.int64)]
  )
  return tf.random.experimental.stateless_shuffle(
      tf.range(num_updates), seed=seed_pair, alg='philox'
  )


def weighted_bucket_means(
    updates: tf.Tensor, weights: tf.Tensor, buckets: tf.Tensor, num_buckets
) -> tuple[tf.Tensor, tf.Tensor]:
  """Weighted mean and total weight of each bucket.

  Args:
    updates: The rows `[n, d]`.
    weights: Their weights `[n]`, >= 0.
    buckets: The bucket of each row `[n]` (int32 in [0, num_buckets)).
    num_buckets: Number of buckets.

  Returns:
    `(means [num_buckets, d], bucket_weights [num_buckets])`; a bucket of
    total weight 0 has mean 0.
  """
  bucket_weights = tf.math.unsorted_segment_sum(weights, buckets, num_buckets)
  sums = tf.math.unsorted_segment_sum(
      updates * weights[:, tf.newaxis], buckets, num_buckets
  )
  return (
      tf.math.divide_no_nan(sums, bucket_weights[:, tf.newaxis]),
      bucket_weights,
  )


def bucketing_permutation(
    num_updates: int, seed: int, round_num: int
) -> np.ndarray:
  """The permutation used in round `round_num` (0-based) for n updates.

  Position j of the permuted sequence holds update `perm[j]`; bucket b is
  `perm[b*s : (b+1)*s]`.
  """
  return permutation_op(num_updates, seed, round_num).numpy()


class BucketingRule(RobustRule):
  """Apply `inner` to the means of buckets of `bucket_size` permuted updates."""

  def __init__(self, inner: RobustRule, bucket_size: int, seed: int = 0):
    if bucket_size < 2:
      raise ValueError(
          f'BucketingRule needs bucket_size >= 2, got {bucket_size}.'
      )
    if inner.uses_weights:
      raise ValueError(
          'Bucketing wraps unweighted rules only (bucket means of updates).'
      )
    self.inner = inner
    self.has_weighted_form = inner.has_weighted_form
    self.bucket_size = int(bucket_size)
    self.seed = int(seed)

  def initial_state(self, dim):
    return collections.OrderedDict([
        (ROUND_KEY, tf.constant(0, tf.int64)),
        (INNER_KEY, self.inner.initial_state(dim)),
    ])

  def aggregate(self, updates, state, weights=None):
    n = tf.shape(updates)[0]
    s = self.bucket_size
    num_buckets = (n + s - 1) // s
    perm = permutation_op(n, self.seed, state[ROUND_KEY])
    if weights is None:
      means = tf.math.unsorted_segment_mean(
          tf.gather(updates, perm), tf.range(n) // s, num_segments=num_buckets
      )
      out = self.inner.aggregate(means, state[INNER_KEY])
    else:
      means, bucket_weights = weighted_bucket_means(
          tf.gather(updates, perm),
          tf.gather(weights, perm),
          tf.range(n) // s,
          num_buckets,
      )
      out = self.inner.aggregate(means, state[INNER_KEY], bucket_weights)
    new_state = collections.OrderedDict([
        (ROUND_KEY, state[ROUND_KEY] + 1),
        (INNER_KEY, out.state),
    ])
    measurements = collections.OrderedDict(bucketing_num_buckets=num_buckets)
    measurements.update(out.measurements)
    return RuleOutput(out.result, new_state, measurements)


class BucketingFactory(RobustAggregatorFactory):
  """Wraps one of this package's unweighted rules/factories with bucketing.

  Args:
    inner: A `RobustAggregatorFactory` of this package (its gather settings
      are inherited unless given here) or a `RobustRule`.
    bucket_size: s; 0 or 1 disables bucketing.
    seed: Seed of the per-round permutations.
    gather: Gather method; default: the inner factory's (or 'auto').
    gather_dir: Gather directory; default: the inner factory's.
  """

  def __init__(
      self,
      inner: Union[RobustAggregatorFactory, RobustRule],
      bucket_size: int,
      seed: int = 0,
      *,
      gather: Optional[str] = None,
      gather_dir: Optional[str] = None,
  ):
    rule, gather, gather_dir = rule_and_gather(
        inner, gather, gather_dir, 'BucketingFactory'
    )
    if bucket_size < 0:
      raise ValueError(f'bucket_size must be >= 0, got {bucket_size}.')
    if bucket_size >= 2:
      rule = BucketingRule(rule, bucket_size, seed)
    self.bucket_size = int(bucket_size)
    self.seed = int(seed)
    super().__init__(
        rule, gather=gather or DEFAULT_GATHER, gather_dir=gather_dir
    )
