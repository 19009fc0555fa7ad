"""Omniscient attack hook (ALIE / IPM / mimic) with hand-computed values."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_ditto import aggregators
from tff_ditto import training
from tff_ditto import training_config
from tff_ditto.aggregators import omniscient
from tff_ditto.data import load_dataset
from tff_ditto import models

HONEST = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)


def _aggregate(attack, inner_name, rows, weights):
  factory = omniscient.OmniscientAttackFactory(
      aggregators.build_aggregator(inner_name), attack
  )
  process = factory.create(
      tff.TensorType(np.float32, [2]), tff.TensorType(np.float32)
  )
  state = process.initialize()
  output = process.next(state, list(rows), [np.float32(w) for w in weights])
  return np.asarray(output.result), output.measurements


def test_alie_z_max_matches_the_reference_values():
  assert float(omniscient.alie_z_max(25, 5)) == pytest.approx(0.2533, abs=1e-3)
  assert float(omniscient.alie_z_max(20, 3)) == pytest.approx(0.0738, abs=1e-3)
  assert float(omniscient.alie_z_max(20, 2)) == pytest.approx(0.0, abs=1e-6)


def test_ipm_replaces_the_marked_row_before_the_mean():
  rows = np.concatenate([HONEST, np.full([1, 2], 1e6, np.float32)])
  result, measurements = _aggregate('ipm', 'mean', rows, [1, 1, 1, -1])
  expected = (HONEST.sum(0) - 0.1 * HONEST.mean(0)) / 4
  np.testing.assert_allclose(result, expected, rtol=1e-6)
  assert measurements['omniscient_attackers'] == 1


def test_alie_sends_mean_minus_z_sigma():
  rows = np.concatenate([HONEST, np.zeros([2, 2], np.float32)])
  result, _ = _aggregate('alie', 'mean', rows, [1, 1, 1, -1, -1])
  z = float(omniscient.alie_z_max(5, 2))
  # The reference uses torch.std: the unbiased std (divisor h - 1).
  message = HONEST.mean(0) - z * HONEST.std(0, ddof=1)
  np.testing.assert_allclose(
      result, (HONEST.sum(0) + 2 * message) / 5, rtol=1e-5
  )


def test_mimic_copies_an_honest_row():
  rows = np.concatenate([HONEST, np.zeros([1, 2], np.float32)])
  result, _ = _aggregate('mimic', 'median', rows, [1, 1, 1, -1])
  # The copy duplicates one honest row; the median of 4 rows then lies
  # between honest rows.
  assert np.all(result >= HONEST.min(0)) and np.all(result <= HONEST.max(0))


def _mimic_target(rows):
  return int(omniscient.mimic_target_index(tf.constant(rows)))


def test_mimic_keeps_the_first_rounds_target():
  factory = omniscient.OmniscientAttackFactory(
      aggregators.build_aggregator('mean'), 'mimic'
  )
  process = factory.create(
      tff.TensorType(np.float32, [2]), tff.TensorType(np.float32)
  )
  first = HONEST
  # Second round: the rows are permuted so that the per-round argmax would
  # pick a different row index than in the first round.
  second = HONEST[[2, 0, 1]] * np.float32(2.0)
  first_target = _mimic_target(first)
  assert _mimic_target(second) != first_target
  weights = [np.float32(w) for w in (1, 1, 1, -1)]
  state = process.initialize()
  output = process.next(
      state,
      list(np.concatenate([first, np.zeros([1, 2], np.float32)])),
      weights,
  )
  np.testing.assert_allclose(
      output.result, (first.sum(0) + first[first_target]) / 4, rtol=1e-6
  )
  assert output.measurements['mimic_target'] == first_target
  output = process.next(
      output.state,
      list(np.concatenate([second, np.zeros([1, 2], np.float32)])),
      weights,
  )
  # The attacker copies the same honest row index (the same client), not
  # the second round's argmax.
  np.testing.assert_allclose(
      output.result, (second.sum(0) + second[first_target]) / 4, rtol=1e-6
  )
  assert output.measurements['mimic_target'] == first_target


def test_mimic_target_is_the_argmax_along_the_power_iteration_direction():
  rows = np.array(
      [[0.0, 0.0], [1.0, 0.1], [-3.0, -0.2], [5.0, 0.3]], np.float32
  )
  target = _mimic_target(rows)
  start = tf.random.stateless_normal([2], seed=[0, 0]).numpy()
  deviations = rows - rows.mean(0)
  direction = deviations.T @ (deviations @ start)
  assert target == int(np.argmax(rows @ direction))
  # Along the dominant first axis the target is one of the two extremes.
  assert target in (2, 3)


def test_no_marked_rows_is_the_plain_rule():
  result, measurements = _aggregate('ipm', 'median', HONEST, [1, 1, 1])
  np.testing.assert_allclose(result, np.median(HONEST, 0))
  assert measurements['omniscient_attackers'] == 0


def test_runner_runs_an_omniscient_attack(tmp_path):
  dataset = load_dataset('synthetic').subset(
      load_dataset('synthetic').client_ids[:6]
  )
  config = training_config.ExperimentConfig(
      method='global',
      rounds=2,
      clients_per_round=4,
      local_steps=2,
      eval_every=2,
      attack='ipm',
      attack_ratio=0.5,
      aggregator='median',
  )
  runner = training.ExperimentRunner(
      config,
      dataset,
      models.get_model_spec('synthetic', seed=0).tff_model_fn(),
      str(tmp_path / 'run'),
      log_fn=None,
  )
  summary = runner.run()
  assert summary['num_malicious'] == 3
  weights = runner.process.get_model_weights(runner.state)
  assert all(np.all(np.isfinite(w)) for w in weights.trainable)
