"""tff_ditto.names: each registry implements exactly the names defined there.

The names are defined once, TF-free, in `tff_ditto.names`; the baselines,
aggregators and attacks build or accept every one of them and nothing else,
and `ExperimentConfig.validate` accepts exactly them.
"""

import pytest

from tff_ditto import aggregator_specs
from tff_ditto import aggregators
from tff_ditto import attacks
from tff_ditto import baselines
from tff_ditto import names
from tff_ditto import training_config
from tff_ditto.aggregators import omniscient

NUM_CLIENTS = 6


def test_names_are_consistent():
  for group in (names.METHODS, names.AGGREGATOR_NAMES, names.ATTACK_NAMES):
    assert len(set(group)) == len(group)
  assert set(names.BASELINE_METHODS) < set(names.METHODS)
  assert set(names.PERSONALIZED_METHODS) < set(names.METHODS)
  assert set(names.NO_WEIGHTED_FORM) < set(names.AGGREGATOR_NAMES)
  assert set(names.WEIGHTED_AGGREGATOR_NAMES) == (
      set(names.AGGREGATOR_NAMES) - set(names.NO_WEIGHTED_FORM)
  )
  assert set(names.ATTACK_ALIASES.values()) < set(names.ATTACKS)


# ---------------------------------------------------------------- baselines


def _build_baseline(method, model_fn):
  return baselines.build_method(
      training_config.ExperimentConfig(method=method),
      model_fn,
      num_clients=NUM_CLIENTS,
      model_aggregator=aggregators.build_aggregator('mean'),
      simulate_attacks=False,
  )


@pytest.mark.parametrize('method', names.BASELINE_METHODS)
def test_the_baseline_registry_builds_every_baseline(
    method, synthetic_model_fn
):
  built = _build_baseline(method, synthetic_model_fn)
  assert built.name == method
  assert built.stateful == (method in baselines.STATEFUL_METHODS)


@pytest.mark.parametrize(
    'method',
    [m for m in names.METHODS if m not in names.BASELINE_METHODS]
    + ['no_such_method'],
)
def test_the_baseline_registry_builds_no_other_method(
    method, synthetic_model_fn
):
  with pytest.raises(ValueError, match='method must be one of'):
    _build_baseline(method, synthetic_model_fn)


def test_stateful_baselines_keep_personal_state():
  assert set(baselines.STATEFUL_METHODS) <= set(names.PERSONALIZED_METHODS)


# -------------------------------------------------------------- aggregators


def _aggregator_arguments(name):
  return dict(num_benign=3) if name == 'k_loss' else {}


@pytest.mark.parametrize('name', names.AGGREGATOR_NAMES)
def test_the_aggregator_registry_builds_every_aggregator(name):
  arguments = _aggregator_arguments(name)
  assert aggregators.build_aggregator(name, **arguments) is not None
  if name in names.NO_WEIGHTED_FORM:
    with pytest.raises(ValueError, match='no example-weighted form'):
      aggregators.build_aggregator(name, weighted=True, **arguments)
  else:
    assert isinstance(
        aggregators.build_aggregator(name, weighted=True, **arguments),
        aggregators.ExampleWeightedFactory,
    )


def test_the_aggregator_registry_builds_no_other_name():
  with pytest.raises(ValueError, match='Unknown aggregator'):
    aggregators.build_aggregator('no_such_aggregator')


def test_the_runner_builds_every_aggregator_with_reference_parameters():
  for name in names.AGGREGATOR_NAMES:
    config = training_config.ExperimentConfig(
        aggregator=name,
        attack='a1',
        attack_ratio=0.3,
        bucketing_size=0 if name == 'k_loss' else 2,
    )
    config.validate()
    factory = aggregator_specs.build_model_aggregator(config, 20, 6)
    assert factory is not None


def test_the_runner_builds_every_weighted_aggregator():
  for name in names.WEIGHTED_AGGREGATOR_NAMES:
    config = training_config.ExperimentConfig(
        aggregator=name,
        attack='a1',
        attack_ratio=0.3,
        bucketing_size=2,
        weighted_aggregation=True,
    )
    config.validate()
    factory = aggregator_specs.build_model_aggregator(config, 20, 6)
    assert isinstance(factory, aggregators.ExampleWeightedFactory), name


# ------------------------------------------------------------------ attacks


@pytest.mark.parametrize('name', names.ATTACK_NAMES)
def test_the_attacks_implement_every_attack(name):
  attack = attacks.canonical_attack_name(name)
  assert attack == names.ATTACK_ALIASES.get(name, name)
  code = attacks.update_attack_code(name)
  if attack in names.UPDATE_ATTACKS:
    assert code == attacks.UPDATE_ATTACK_CODES[attack]
  elif attack in names.OMNISCIENT_ATTACKS:
    assert code == attacks.UPDATE_ATTACK_CODES['omniscient']
  else:  # No attack, or one on the training labels only.
    assert code == attacks.UPDATE_ATTACK_CODES['none']


def test_the_attacks_know_no_other_name():
  with pytest.raises(ValueError, match='unknown attack'):
    attacks.canonical_attack_name('no_such_attack')


def test_the_omniscient_hook_runs_exactly_the_omniscient_attacks():
  inner = aggregators.MeanRule()
  for attack in names.OMNISCIENT_ATTACKS:
    omniscient.OmniscientAttackRule(inner, attack)
  with pytest.raises(ValueError, match='attack must be one of'):
    omniscient.OmniscientAttackRule(inner, 'label_poison')


# ------------------------------------------------------ configs (TF-free)


def _validate(**fields):
  training_config.ExperimentConfig(**fields).validate()


def test_configs_accept_exactly_the_names():
  for method in names.METHODS:
    _validate(method=method)
  for attack in names.ATTACK_NAMES:
    _validate(attack=attack, attack_ratio=0 if attack == 'none' else 0.2)
  for aggregator in names.AGGREGATOR_NAMES:
    _validate(aggregator=aggregator)
  for field, value in (
      ('method', 'no_such_method'),
      ('attack', 'no_such_attack'),
      ('aggregator', 'no_such_aggregator'),
  ):
    with pytest.raises(ValueError, match=f'{field} must be one of'):
      _validate(**{field: value})
