"""A run's server aggregation, as a hashable spec, and its clients' weights.

`model_aggregator_spec(config, ...)` turns the aggregation flags of an
`ExperimentConfig` (`aggregator`, `bucketing_size`, `cclip_tau`,
`weighted_aggregation`, an omniscient `attack`) into an `AggregatorSpec`,
whose `build()` gives the `tff.aggregators` factory; being hashable, the spec
also keys the processes of a `tff_ditto.computation_cache.ComputationCache`.
`client_weighting(config)` is what the Ditto-family clients send as their
update's weight for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import tensorflow_federated as tff

from tff_ditto import aggregators
from tff_ditto import attacks
from tff_ditto import ditto_client
from tff_ditto.aggregators import omniscient
from tff_ditto.training_config import ExperimentConfig


def client_weighting(
    config: ExperimentConfig,
) -> Union[tff.learning.ClientWeighting, str]:
  """What the Ditto-family clients send as their update's weight.

  Args:
    config: The run's config.

  Returns:
    `ditto_client.LOSS_WEIGHTING` for k_loss; with `weighted_aggregation`
    the size of the client's training set
    (`ditto_client.NUM_TRAIN_EXAMPLES_WEIGHTING`; the examples a round
    processes, local_steps * min(n_k, batch_size), do not tell the clients'
    sizes apart); else UNIFORM (unweighted aggregators ignore it).
  """
  if config.aggregator == 'k_loss':
    return ditto_client.LOSS_WEIGHTING
  if config.weighted_aggregation:
    return ditto_client.NUM_TRAIN_EXAMPLES_WEIGHTING
  return tff.learning.ClientWeighting.UNIFORM


@dataclasses.dataclass(frozen=True)
class AggregatorSpec:
  """Everything the server aggregation factory of a run is built from.

  Hashable: with the model it keys the processes of a `ComputationCache`.

  Attributes:
    name: `tff_ditto.aggregators.build_aggregator` name.
    parameters: Its rule parameters, sorted (name, value) pairs.
    bucketing_size: Bucketing s (0 = none).
    bucketing_seed: Seed of the bucketing permutations.
    omniscient_attack: Canonical name of the omniscient attack simulated in
      front of the rule, or None.
    weighted: Run the rule's example-weighted form
      (`tff_ditto.aggregators.ExampleWeightedFactory`, weights = the
      clients' training-set sizes), also behind the omniscient hook.
  """

  name: str
  parameters: tuple[tuple[str, Any], ...]
  bucketing_size: int
  bucketing_seed: int
  omniscient_attack: Optional[str]
  weighted: bool = False

  def build(self):
    """Returns the `tff.aggregators` factory.

    Raises:
      ValueError: If `weighted` is set for a rule without a weighted form.
    """
    factory = aggregators.build_aggregator(
        self.name,
        bucketing_size=self.bucketing_size,
        bucketing_seed=self.bucketing_seed,
        weighted=self.weighted,
        **dict(self.parameters),
    )
    if self.omniscient_attack is not None:
      factory = omniscient.OmniscientAttackFactory(
          factory, self.omniscient_attack
      )
    return factory


def model_aggregator_spec(
    config: ExperimentConfig, num_clients: int, num_malicious: int
) -> AggregatorSpec:
  """The server aggregation named by `config.aggregator`, as a spec.

  Krum's f, the trimmed mean's b and k-norm's exclusions use the Ditto
  reference's expected number of attackers per round,
  E = int(clients_per_round * num_malicious / num_clients); the trimmed
  mean trims b = E per side, as the bucketing reference's TM(b=f), so it is
  the mean without attackers. With `config.weighted_aggregation` the spec
  builds the rule's example-weighted form.

  Args:
    config: The run's config.
    num_clients: N, all clients of the dataset.
    num_malicious: The malicious clients among them.

  Returns:
    The `AggregatorSpec`.
  """
  expected = aggregators.expected_byzantine_per_round(
      config.clients_per_round, num_malicious, num_clients
  )
  parameters = {
      'krum': dict(f=expected),
      'multi_krum': dict(f=expected),
      'trimmed_mean': dict(b=expected),
      'k_norm': dict(num_excluded=expected),
      'cclip': dict(tau=config.cclip_tau),
      'k_loss': dict(num_benign=max(config.clients_per_round - expected, 1)),
  }.get(config.aggregator, {})
  attack = attacks.canonical_attack_name(config.attack)
  return AggregatorSpec(
      name=config.aggregator,
      parameters=tuple(sorted(parameters.items())),
      bucketing_size=config.bucketing_size,
      bucketing_seed=config.seed,
      omniscient_attack=(
          attack if attack in attacks.OMNISCIENT_ATTACKS else None
      ),
      weighted=config.weighted_aggregation,
  )


def build_model_aggregator(
    config: ExperimentConfig, num_clients: int, num_malicious: int
):
  """The server aggregation factory named by `config.aggregator`.

  See `model_aggregator_spec`.

  Args:
    config: The run's config.
    num_clients: N, all clients of the dataset.
    num_malicious: The malicious clients among them.

  Returns:
    The `tff.aggregators` factory.
  """
  return model_aggregator_spec(config, num_clients, num_malicious).build()
