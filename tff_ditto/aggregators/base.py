"""The robust-rule interface and the generic factory built on it.

A robust rule is plain TensorFlow on the stacked, flattened updates:

    rule.initial_state(d)                      -> state (nest of tensors, or ())
    rule.aggregate(updates [n, d], state,
                   weights [n] or None)        -> RuleOutput(result [d],
                                                  new_state, measurements)

`aggregate` may assume n >= 1 and finite inputs; `measurements` is an
`OrderedDict` of scalar tensors whose keys do not depend on the input.
Because a rule is just a function of a matrix, rules compose: median-norm
clipping applies any inner rule to the clipped rows, and bucketing applies
any inner rule to the bucket means.

The weight slot has two uses, which a rule declares by class attributes:

* `uses_weights = True`: the rule needs one float per client and gives it
  its own meaning (k-loss: the client's loss; the omniscient-attack hook: a
  negative sign marks an attacker). Such a rule runs only in a weighted
  factory.
* `has_weighted_form = True`: `aggregate(updates, state, None)` is the
  unweighted rule, and `aggregate(updates, state, weights)` with weights
  `> 0` (the clients' example counts) its weighted form, in which client i
  counts w_i times (equal weights give the unweighted result, up to float
  rounding). `tff_ditto.aggregators.weighted.ExampleWeightedFactory` runs
  that form. Wrappers (bucketing, median-norm clipping) have one when their
  inner rule has.

`RobustRule.client_mask` lets a weighted rule drop clients by their weight
before it runs (the example-weighted form drops weight 0: no examples, or an
update the client rejected), counted in the measurement
`zero_weight_clients`.

`build_robust_process` turns a rule into a `tff.templates.AggregationProcess`:
the clients' updates are gathered (`tff_ditto.aggregators.gather`), and one
server-side `tff.tensorflow.computation` stacks them, drops the clients whose
update (or weight) has a NaN/Inf entry, runs the rule, and unflattens the
result. If no finite update is left, the result is zeros and the state is
kept. A result that is itself non-finite (overflow of finite but huge
updates, ~1e19 and beyond) is also replaced by zeros, with the state kept.
Measurements always include `num_clients` (updates received),
`non_finite_clients` (dropped) and `non_finite_result` (0/1), plus the rule's.
"""

from __future__ import annotations

import abc
import collections
from typing import Any, NamedTuple, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto.aggregators.flatten import FlatLayout
from tff_ditto.aggregators.gather import DEFAULT_GATHER, GATHER_METHODS, Gather

NUM_CLIENTS = 'num_clients'
NON_FINITE_CLIENTS = 'non_finite_clients'
NON_FINITE_RESULT = 'non_finite_result'
ZERO_WEIGHT_CLIENTS = 'zero_weight_clients'


class RuleOutput(NamedTuple):
  result: tf.Tensor
  state: Any
  measurements: collections.OrderedDict


class RobustRule(abc.ABC):
  """A robust aggregation rule on an `[n, d]` float32 matrix (see module doc)."""

  #: True for rules that need one float per client with a meaning of their
  #: own (KLoss's losses, the omniscient hook's attacker marks).
  uses_weights: bool = False
  #: True for rules whose `aggregate` has a weighted form: weights `[n] > 0`
  #: (example counts) weight the rows; `weights=None` is the unweighted rule.
  has_weighted_form: bool = False

  def initial_state(self, dim: int):
    del dim
    return ()

  def client_mask(self, weights: tf.Tensor) -> Optional[tf.Tensor]:
    """Which clients the rule takes, by their (finite) weights.

    Args:
      weights: The clients' weights `[n]`.

    Returns:
      A boolean `[n]` mask, or None (the default) to take every client.
    """
    del weights
    return None

  @abc.abstractmethod
  def aggregate(
      self,
      updates: tf.Tensor,
      state,
      weights: Optional[tf.Tensor] = None,
  ) -> RuleOutput:
    """Aggregates `updates` ([n, d], n >= 1, finite) into a `[d]` result."""


def _as_python_state(state, template):
  """A TFF-passed state argument -> the nest structure of `template`."""
  leaves = tf.nest.flatten(template)
  if not leaves:
    return template
  if isinstance(state, tff.structure.Struct):
    state = tff.structure.flatten(state)
  return tf.nest.pack_sequence_as(template, tf.nest.flatten(state))


def apply_rule(
    rule: RobustRule,
    updates: tf.Tensor,
    state,
    weights: Optional[tf.Tensor] = None,
) -> RuleOutput:
  """Drops non-finite clients, runs `rule`, guards the result (TF only)."""
  dim = updates.shape[1]
  num_seen = tf.shape(updates)[0]
  finite = tf.reduce_all(tf.math.is_finite(updates), axis=1)
  weight_mask = None
  if weights is not None:
    finite = tf.logical_and(finite, tf.math.is_finite(weights))
    weight_mask = rule.client_mask(weights)
  keep = finite if weight_mask is None else tf.logical_and(finite, weight_mask)
  all_kept = tf.reduce_all(keep)
  # The usual all-kept case skips boolean_mask's copy of the [n, d] matrix.
  kept = tf.cond(
      all_kept, lambda: updates, lambda: tf.boolean_mask(updates, keep)
  )
  kept_weights = None
  if weights is not None:
    kept_weights = tf.cond(
        all_kept, lambda: weights, lambda: tf.boolean_mask(weights, keep)
    )
  num_kept = tf.shape(kept)[0]
  has_clients = num_kept > 0
  # With no finite update the rule still runs, on one zero row, so that its
  # output structure exists; its result and state are discarded below.
  kept = tf.cond(
      has_clients, lambda: kept, lambda: tf.zeros([1, dim], updates.dtype)
  )
  if weights is not None:
    kept_weights = tf.cond(
        has_clients, lambda: kept_weights, lambda: tf.zeros([1], weights.dtype)
    )
  out = rule.aggregate(kept, state, kept_weights)
  result_finite = tf.reduce_all(tf.math.is_finite(out.result))
  use = tf.logical_and(has_clients, result_finite)
  result = tf.where(use, out.result, tf.zeros_like(out.result))
  new_state = tf.nest.map_structure(
      lambda new, old: tf.where(use, new, tf.cast(old, new.dtype)),
      out.state,
      state,
  )
  measurements = collections.OrderedDict()
  measurements[NUM_CLIENTS] = num_seen
  if weight_mask is None:
    measurements[NON_FINITE_CLIENTS] = num_seen - num_kept
  else:
    num_finite = count(finite)
    measurements[NON_FINITE_CLIENTS] = num_seen - num_finite
    measurements[ZERO_WEIGHT_CLIENTS] = num_finite - num_kept
  measurements[NON_FINITE_RESULT] = tf.cast(
      tf.logical_and(has_clients, tf.logical_not(result_finite)), tf.int32
  )
  for key, value in out.measurements.items():
    measurements[key] = tf.where(has_clients, value, tf.zeros_like(value))
  return RuleOutput(result, new_state, measurements)


def build_robust_process(
    rule: RobustRule,
    value_type: tff.Type,
    *,
    weight_type: Optional[tff.Type] = None,
    gather: str = DEFAULT_GATHER,
    gather_dir: Optional[str] = None,
) -> tff.templates.AggregationProcess:
  """Builds the `AggregationProcess` running `rule` on gathered updates.

  Args:
    rule: The robust rule.
    value_type: Client value type: a float tensor or structure of them.
    weight_type: For weighted rules, the per-client weight type (a scalar);
      the process's `next` then takes `(state, value, weight)`.
    gather: `'auto'`, `'file'` or `'concat'` (see
      `tff_ditto.aggregators.gather`).
    gather_dir: Directory of the `'file'` gather (default a fresh folder
      under `/dev/shm/tff_ditto_gather`).

  Returns:
    A `tff.templates.AggregationProcess`.
  """
  if rule.uses_weights != (weight_type is not None):
    raise ValueError(
        f'{type(rule).__name__} uses_weights={rule.uses_weights}, but '
        f'weight_type={weight_type}.'
    )
  value_type = tff.types.to_type(value_type)
  if weight_type is not None:
    weight_type = tff.types.to_type(weight_type)
  layout = FlatLayout(value_type)
  gatherer = Gather(layout, gather, gather_dir, weight_type)
  dim = layout.dim

  @tff.tensorflow.computation
  def initial_state_fn():
    return rule.initial_state(dim)

  state_type = initial_state_fn.type_signature.result

  @tff.tensorflow.computation(state_type, gatherer.accumulator_type)
  def server_fn(state, gathered):
    # The rule's own nest structure (its constant ops are unused and pruned).
    state = _as_python_state(state, rule.initial_state(dim))
    updates, weights, deps = gatherer.load(gathered)
    out = apply_rule(rule, updates, state, weights)
    with tf.control_dependencies(deps):
      result = tf.identity(out.result)
      new_state = tf.nest.map_structure(tf.identity, out.state)
      measurements = tf.nest.map_structure(tf.identity, out.measurements)
    return collections.OrderedDict(
        state=new_state,
        result=layout.unflatten(result),
        measurements=measurements,
    )

  @tff.federated_computation
  def init_fn():
    return tff.federated_eval(initial_state_fn, tff.SERVER)

  server_state_type = init_fn.type_signature.result
  clients_value_type = tff.FederatedType(value_type, tff.CLIENTS)

  def finish(state, client_value):
    gathered = gatherer.federated_gather(client_value)
    out = tff.federated_map(server_fn, tff.federated_zip((state, gathered)))
    return tff.templates.MeasuredProcessOutput(
        state=out.state, result=out.result, measurements=out.measurements
    )

  if weight_type is None:

    @tff.federated_computation(server_state_type, clients_value_type)
    def next_fn(state, value):
      return finish(state, value)

  else:

    @tff.federated_computation(
        server_state_type,
        clients_value_type,
        tff.FederatedType(weight_type, tff.CLIENTS),
    )
    def next_fn(state, value, weight):
      return finish(state, tff.federated_zip((value, weight)))

  return tff.templates.AggregationProcess(init_fn, next_fn)


class _RuleSettings:
  """The rule and gather settings of a robust factory, checked once.

  Both factories below keep them; each checks that the rule does (or does
  not) use per-client weights before calling this.
  """

  def __init__(
      self,
      rule: RobustRule,
      gather: str,
      gather_dir: Optional[str],
  ):
    if gather not in GATHER_METHODS:
      raise ValueError(
          f'gather must be one of {GATHER_METHODS}, got {gather!r}.'
      )
    self._rule = rule
    self._gather = gather
    self._gather_dir = gather_dir

  @property
  def rule(self) -> RobustRule:
    return self._rule

  @property
  def gather(self) -> str:
    return self._gather

  @property
  def gather_dir(self) -> Optional[str]:
    return self._gather_dir


class RobustAggregatorFactory(
    _RuleSettings, tff.aggregators.UnweightedAggregationFactory
):
  """Unweighted `tff.aggregators` factory running a `RobustRule`.

  Use it as `model_aggregator=` of `tff_ditto.ditto.build_ditto_process`, or
  through `tff.aggregators.as_weighted_aggregator` with TFF's weighted
  algorithms (`build_weighted_fed_avg`); the weights are then ignored. For
  a rule's weighted form use
  `tff_ditto.aggregators.weighted.ExampleWeightedFactory`.
  """

  def __init__(
      self,
      rule: RobustRule,
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    if rule.uses_weights:
      raise ValueError(
          f'{type(rule).__name__} needs per-client weights; use '
          'WeightedRobustAggregatorFactory.'
      )
    super().__init__(rule, gather, gather_dir)

  def create(self, value_type) -> tff.templates.AggregationProcess:
    return build_robust_process(
        self._rule,
        value_type,
        gather=self._gather,
        gather_dir=self._gather_dir,
    )


class WeightedRobustAggregatorFactory(
    _RuleSettings, tff.aggregators.WeightedAggregationFactory
):
  """Weighted `tff.aggregators` factory running a rule that uses weights."""

  def __init__(
      self,
      rule: RobustRule,
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    if not rule.uses_weights:
      raise ValueError(f'{type(rule).__name__} does not use weights.')
    super().__init__(rule, gather, gather_dir)

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    return build_robust_process(
        self._rule,
        value_type,
        weight_type=weight_type,
        gather=self._gather,
        gather_dir=self._gather_dir,
    )


def rule_and_gather(
    inner,
    gather: Optional[str],
    gather_dir: Optional[str],
    wrapper: str,
) -> tuple[RobustRule, Optional[str], Optional[str]]:
  """The rule a wrapping factory wraps, and the gather settings it inherits.

  Args:
    inner: A `RobustAggregatorFactory` (its gather settings are inherited
      where `gather` / `gather_dir` are None) or a `RobustRule`.
    gather: The wrapper's gather method, or None.
    gather_dir: The wrapper's gather directory, or None.
    wrapper: The wrapping factory's name, for the error.

  Returns:
    (rule, gather, gather_dir).

  Raises:
    TypeError: If `inner` is neither.
  """
  if isinstance(inner, RobustAggregatorFactory):
    gather = inner.gather if gather is None else gather
    gather_dir = inner.gather_dir if gather_dir is None else gather_dir
    return inner.rule, gather, gather_dir
  if isinstance(inner, RobustRule):
    return inner, gather, gather_dir
  raise TypeError(
      f'{wrapper} wraps an unweighted gather-based factory or rule of '
      'tff_ditto.aggregators (it needs the stacked updates), got '
      f'{type(inner).__name__}.'
  )


def count(mask: tf.Tensor) -> tf.Tensor:
  """Number of True entries, int32."""
  return tf.reduce_sum(tf.cast(mask, tf.int32))


def row_norms(updates: tf.Tensor) -> tf.Tensor:
  """L2 norm of each row of `[n, d]`."""
  return tf.norm(updates, axis=1)


def weighted_mean(rows: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  """`sum_i w_i x_i / sum_i w_i` over the rows of `[n, d]` -> `[d]`.

  Args:
    rows: The rows `[n, d]`.
    weights: Their weights `[n]`, with a positive sum.

  Returns:
    The weighted mean `[d]`.
  """
  weights = tf.cast(weights, rows.dtype)
  return tf.linalg.matvec(rows, weights, transpose_a=True) / tf.reduce_sum(
      weights
  )
