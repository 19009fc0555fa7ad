"""Example-weighted robust aggregation: a rule's weighted form as a factory.

`ExampleWeightedFactory(inner)` is the `tff.aggregators`
`WeightedAggregationFactory` of any of this package's unweighted factories
(or rules) whose rule declares `has_weighted_form` (see
`tff_ditto.aggregators.base`): the per-client weight input, the client's
example count, is fed to the rule's weighted form, so client i counts w_i
times. Weighted forms:

| rule         | weighted form                                             |
|--------------|-----------------------------------------------------------|
| mean         | sum_i w_i x_i / sum_i w_i                                 |
| median       | weighted coordinate-wise median                           |
| trimmed_mean | per coordinate drop the b smallest and b largest values,  |
|              | weighted mean of the rest                                 |
| multi_krum   | weighted mean of the selected updates                     |
| rfa          | weighted Weiszfeld (alpha_i = w_i / sum_j w_j)            |
| cclip        | weighted mean of the clipped differences                  |
| norm_clip    | clip to the (unweighted) median norm, then weighted mean  |
| k_norm       | weighted mean of the kept updates                         |
| bucketing    | bucket weight = sum of its members' weights, bucket value |
|              | their weighted mean; the inner rule's weighted form       |

Krum (a single selected update) and k-loss (whose weight input is a loss)
have none; building them weighted raises a ValueError.

Clients with weight 0 (no examples, or an update the client rejected as
non-finite) are dropped before the rule runs, as non-finite ones are, and
counted in the measurement `zero_weight_clients`; negative weights are
dropped as well. If no client is left, the result is zeros and the state is
kept (`tff_ditto.aggregators.base.apply_rule`).

The weights are the clients' own reports: an attacker can claim a large
example count. The count-based robust rules (the trimmed mean's b, Krum's f,
k-norm's exclusions, the median norm of norm_clip) still count clients, not
examples.
"""

from __future__ import annotations

from typing import Optional, Union

import tensorflow as tf

from tff_ditto.aggregators.base import RobustAggregatorFactory
from tff_ditto.aggregators.base import RobustRule
from tff_ditto.aggregators.base import RuleOutput
from tff_ditto.aggregators.base import rule_and_gather
from tff_ditto.aggregators.base import WeightedRobustAggregatorFactory
from tff_ditto.aggregators.gather import DEFAULT_GATHER


def check_has_weighted_form(rule: RobustRule) -> None:
  """Raises unless `rule` is an unweighted rule with a weighted form.

  Args:
    rule: The rule.

  Raises:
    ValueError: If `rule` uses its weight input for something else (k-loss,
      the omniscient hook) or has no weighted form (Krum).
  """
  name = type(rule).__name__
  if rule.uses_weights:
    raise ValueError(
        f'{name} uses the weight input for its own purpose; it has no '
        'example-weighted form.'
    )
  if not rule.has_weighted_form:
    raise ValueError(f'{name} has no example-weighted form.')


class ExampleWeightedRule(RobustRule):
  """Runs `inner`'s weighted form on the clients with a positive weight."""

  uses_weights = True

  def __init__(self, inner: RobustRule):
    """Wraps `inner`.

    Args:
      inner: A rule with `has_weighted_form`.

    Raises:
      ValueError: If `inner` has no weighted form.
    """
    check_has_weighted_form(inner)
    self.inner = inner

  def initial_state(self, dim: int):
    return self.inner.initial_state(dim)

  def client_mask(self, weights: tf.Tensor) -> tf.Tensor:
    """Clients with a positive weight."""
    return weights > 0.0

  def aggregate(self, updates, state, weights=None) -> RuleOutput:
    if weights is None:
      raise ValueError("ExampleWeightedRule needs the clients' weights.")
    return self.inner.aggregate(updates, state, weights)


class ExampleWeightedFactory(WeightedRobustAggregatorFactory):
  """The weighted factory of a rule's weighted form (see module doc)."""

  def __init__(
      self,
      inner: Union[RobustAggregatorFactory, RobustRule],
      *,
      gather: Optional[str] = None,
      gather_dir: Optional[str] = None,
  ):
    """Wraps `inner`.

    Args:
      inner: An unweighted factory of this package (its gather settings are
        inherited unless given here; bucketing and norm clipping included)
        or a `RobustRule`.
      gather: Gather method; default the inner factory's (or 'auto').
      gather_dir: Gather directory; default the inner factory's.

    Raises:
      TypeError: If `inner` is neither.
      ValueError: If its rule has no weighted form.
    """
    rule, gather, gather_dir = rule_and_gather(
        inner, gather, gather_dir, 'ExampleWeightedFactory'
    )
    super().__init__(
        ExampleWeightedRule(rule),
        gather=gather or DEFAULT_GATHER,
        gather_dir=gather_dir,
    )

  @property
  def weighted_rule(self) -> RobustRule:
    """The rule whose weighted form runs (the wrapped one)."""
    return self.rule.inner
