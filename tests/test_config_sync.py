"""The TF-free name lists used for fast flag validation match the library."""

from tff_ditto import aggregators
from tff_ditto import attacks
from tff_ditto import batch_streams
from tff_ditto import training_config


def test_attack_names_match_the_attacks_module():
  assert set(training_config._ATTACK_NAMES) == (
      set(attacks.ATTACKS) | set(attacks.ATTACK_ALIASES))


def test_aggregator_names_are_buildable():
  for name in training_config._AGGREGATOR_NAMES:
    assert name in aggregators.AGGREGATOR_NAMES
  assert set(aggregators.AGGREGATOR_NAMES) == set(
      training_config._AGGREGATOR_NAMES)


def test_runner_builds_every_aggregator_with_reference_parameters():
  from tff_ditto import training  # pylint: disable=g-import-not-at-top
  for name in training_config._AGGREGATOR_NAMES:
    config = training_config.ExperimentConfig(
        aggregator=name, attack='a1', attack_ratio=0.3,
        bucketing_size=0 if name == 'k_loss' else 2)
    config.validate()
    factory = training.build_model_aggregator(config, 20, 6)
    assert factory is not None


def test_batch_stream_names_match_the_batch_streams_module():
  assert training_config.BATCH_STREAMS == batch_streams.BATCH_STREAMS


def test_aggregators_without_weighted_form_match_the_library():
  assert training_config._AGGREGATORS_WITHOUT_WEIGHTED_FORM == (
      aggregators.NO_WEIGHTED_FORM)


def test_runner_builds_every_weighted_aggregator():
  from tff_ditto import training  # pylint: disable=g-import-not-at-top
  for name in training_config._weighted_aggregator_names():
    config = training_config.ExperimentConfig(
        aggregator=name, attack='a1', attack_ratio=0.3, bucketing_size=2,
        weighted_aggregation=True)
    config.validate()
    factory = training.build_model_aggregator(config, 20, 6)
    assert isinstance(factory, aggregators.ExampleWeightedFactory), name
