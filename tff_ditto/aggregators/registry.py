"""Aggregators by name: `build_aggregator(name, **kwargs)`."""

from __future__ import annotations

from typing import Optional

from tff_ditto.aggregators.base import RobustAggregatorFactory
from tff_ditto.aggregators.bucketing import BucketingFactory
from tff_ditto.aggregators.centered_clipping import CenteredClippingFactory
from tff_ditto.aggregators.gather import DEFAULT_GATHER
from tff_ditto.aggregators.k_loss import KLossFactory
from tff_ditto.aggregators.k_norm import KNormFactory
from tff_ditto.aggregators.krum import KrumFactory
from tff_ditto.aggregators.mean import MeanFactory
from tff_ditto.aggregators.median import MedianFactory
from tff_ditto.aggregators.norm_clipping import MedianNormClippingFactory
from tff_ditto.aggregators.rfa import GeometricMedianFactory
from tff_ditto.aggregators.trimmed_mean import TrimmedMeanFactory
from tff_ditto.aggregators.weighted import ExampleWeightedFactory
from tff_ditto.names import AGGREGATOR_NAMES
from tff_ditto.names import NO_WEIGHTED_FORM


def expected_byzantine_per_round(
    clients_per_round: int, num_corrupted: int, num_clients: int
) -> int:
  """The Ditto reference's E = int(clients_per_round * num_corrupted / N)."""
  return int(clients_per_round * num_corrupted / num_clients)


def build_aggregator(
    name: str,
    *,
    bucketing_size: int = 0,
    bucketing_seed: int = 0,
    gather: str = DEFAULT_GATHER,
    gather_dir: Optional[str] = None,
    weighted: bool = False,
    **kwargs,
):
  """Builds a robust aggregation factory by name.

  Names and their keyword arguments (defaults in brackets):
    mean; median;
    trimmed_mean: b [1];
    krum: f [0];  multi_krum: f [0], m [None = n - f];
    rfa: num_iterations [8], nu [0.1], init ['zero' | 'mean'];
    cclip: tau [10.0], iterations [3];
    norm_clip: median-norm clipping then the mean;
    k_norm: num_excluded [0];
    k_loss: num_benign (required; weighted factory, weight = client loss).

  Args:
    name: One of `AGGREGATOR_NAMES`.
    bucketing_size: s >= 2 wraps the rule in bucketing (not for k_loss);
      0 or 1 = no bucketing.
    bucketing_seed: Seed of the bucketing permutations.
    gather: 'auto' (default: 'concat' under a multi-worker context, else
      'file'), 'file' or 'concat'.
    gather_dir: Directory of the file gather (default a fresh folder under
      `/dev/shm/tff_ditto_gather`).
    weighted: Return the `ExampleWeightedFactory` of the (bucketed) rule:
      its weight input, the clients' example counts, weights the rule (see
      `tff_ditto.aggregators.weighted`). Not for the names in
      `NO_WEIGHTED_FORM`.
    **kwargs: The rule's parameters, as listed above.

  Returns:
    An `UnweightedAggregationFactory`; a `WeightedAggregationFactory` for
    k_loss and with `weighted`.

  Raises:
    ValueError: On an unknown name, a bad parameter, bucketing k_loss, or
      `weighted` for a name in `NO_WEIGHTED_FORM`.
    TypeError: On parameters the rule does not take.
  """
  if weighted and name in NO_WEIGHTED_FORM:
    raise ValueError(
        f'aggregator {name!r} has no example-weighted form '
        f'({NO_WEIGHTED_FORM[name]}).'
    )
  common = dict(gather=gather, gather_dir=gather_dir)

  def take(*names_and_defaults):
    out = {}
    for key, default in names_and_defaults:
      out[key] = kwargs.pop(key, default)
    return out

  if name == 'mean':
    factory = MeanFactory(**common)
  elif name == 'median':
    factory = MedianFactory(**common)
  elif name == 'trimmed_mean':
    factory = TrimmedMeanFactory(**take(('b', 1)), **common)
  elif name == 'krum':
    factory = KrumFactory(**take(('f', 0)), m=1, **common)
  elif name == 'multi_krum':
    factory = KrumFactory(**take(('f', 0), ('m', None)), **common)
  elif name == 'rfa':
    factory = GeometricMedianFactory(
        **take(('num_iterations', 8), ('nu', 0.1), ('init', 'zero')), **common
    )
  elif name == 'cclip':
    factory = CenteredClippingFactory(
        **take(('tau', 10.0), ('iterations', 3)), **common
    )
  elif name == 'norm_clip':
    factory = MedianNormClippingFactory(**common)
  elif name == 'k_norm':
    factory = KNormFactory(**take(('num_excluded', 0)), **common)
  elif name == 'k_loss':
    if 'num_benign' not in kwargs:
      raise ValueError('k_loss needs num_benign=.')
    factory = KLossFactory(**take(('num_benign', None)), **common)
  else:
    raise ValueError(f'Unknown aggregator {name!r}; known: {AGGREGATOR_NAMES}.')
  if kwargs:
    raise TypeError(f'Unexpected arguments for {name!r}: {sorted(kwargs)}.')
  if bucketing_size and bucketing_size >= 2:
    if not isinstance(factory, RobustAggregatorFactory):
      raise ValueError(f'{name!r} cannot be bucketed (it is weighted).')
    factory = BucketingFactory(factory, bucketing_size, bucketing_seed)
  elif bucketing_size < 0:
    raise ValueError(f'bucketing_size must be >= 0, got {bucketing_size}.')
  if weighted:
    factory = ExampleWeightedFactory(factory)
  return factory
