"""k-loss (Ditto reference `k_loss`): pick one update by the clients' losses.

Convention: this is a `tff.aggregators.WeightedAggregationFactory` whose
per-client "weight" input is NOT a weight but the client's reported training
loss. The clients are sorted by loss (ascending, stable: ties keep client
order) and the single update at sorted index `num_benign - 1` is returned,
i.e. the largest loss among the `num_benign` presumed-benign lowest-loss
clients; the index is clipped to [0, n - 1]. Clients whose loss is NaN/Inf
are dropped like non-finite updates.

Feeding the loss: the weight must come from the client work. TFF 0.87's
stock algorithms (`build_weighted_fed_avg`, ...) only accept the enum
`tff.learning.ClientWeighting` (UNIFORM, NUM_EXAMPLES), not a callable, so
k-loss needs a client work whose `ClientResult.update_weight` is the loss
(e.g. the mean training loss of the round; the Ditto reference uses the loss
at the start of the round). Fed example counts or uniform weights instead,
it still runs but selects by those numbers, which is meaningless.
"""

from __future__ import annotations

import collections
from typing import Optional

import tensorflow as tf

from tff_ditto.aggregators.base import RobustRule, RuleOutput, WeightedRobustAggregatorFactory
from tff_ditto.aggregators.gather import DEFAULT_GATHER


class KLossRule(RobustRule):
  """The update at sorted-loss index `num_benign - 1`."""

  uses_weights = True

  def __init__(self, num_benign: int):
    if num_benign < 1:
      raise ValueError(f"num_benign must be >= 1, got {num_benign}.")
    self.num_benign = int(num_benign)

  def aggregate(self, updates, state, weights=None):
    if weights is None:
      raise ValueError("KLossRule needs the clients' losses as weights.")
    n = tf.shape(updates)[0]
    order = tf.argsort(weights, stable=True)
    position = tf.minimum(tf.constant(self.num_benign - 1, tf.int32), n - 1)
    index = order[position]
    return RuleOutput(
        updates[index],
        state,
        collections.OrderedDict(
            k_loss_selected=index, k_loss_selected_loss=weights[index]
        ),
    )


class KLossFactory(WeightedRobustAggregatorFactory):
  """k-loss; the weight input must be each client's loss (see module doc)."""

  def __init__(
      self,
      num_benign: int,
      *,
      gather: str = DEFAULT_GATHER,
      gather_dir: Optional[str] = None,
  ):
    super().__init__(
        KLossRule(num_benign), gather=gather, gather_dir=gather_dir
    )
