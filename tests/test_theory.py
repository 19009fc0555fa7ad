"""Ditto on federated point estimation: closed form vs Monte Carlo (numpy)."""

import dataclasses

import numpy as np
import pytest

from tff_ditto import theory

PROBLEMS = {
    'clean': theory.PointEstimationProblem(
        num_devices=100,
        num_attackers=0,
        samples_per_device=10,
        noise_std=1.0,
        tau=0.5,
    ),
    'attackers': theory.PointEstimationProblem(
        num_devices=100,
        num_attackers=30,
        samples_per_device=10,
        noise_std=1.0,
        tau=0.5,
        tau_attacker=2.0,
    ),
    'small': theory.PointEstimationProblem(
        num_devices=20,
        num_attackers=8,
        samples_per_device=5,
        noise_std=1.0,
        tau=0.3,
        tau_attacker=1.5,
    ),
}


def test_personal_estimate_is_the_ditto_minimizer():
  problem = PROBLEMS['attackers']
  _, sample_means, _ = theory.sample_devices(problem, num_trials=3, seed=1)
  lam = 0.7
  w = sample_means.mean(axis=-1, keepdims=True)
  v = theory.ditto_personal_estimates(sample_means, lam)
  # Gradient of (v - xbar)^2 / 2 + lam / 2 (v - w)^2 vanishes at v.
  np.testing.assert_allclose((v - sample_means) + lam * (v - w), 0, atol=1e-12)
  np.testing.assert_allclose(
      theory.ditto_personal_estimates(sample_means, 0.0), sample_means
  )
  np.testing.assert_allclose(
      theory.ditto_personal_estimates(sample_means, np.inf),
      np.broadcast_to(w, sample_means.shape),
  )


def test_paper_formula_values():
  # sigma^2/n * K / (K tau^2 + K_a/(K-1) (tau_a^2 - tau^2)), by hand:
  # 0.1 * 100 / (25 + 30/99 * 3.75) = 10 / 26.13636...
  assert theory.optimal_lambda(PROBLEMS['attackers']) == pytest.approx(
      10 / (25 + 30 / 99 * 3.75)
  )
  assert theory.optimal_lambda(PROBLEMS['clean']) == pytest.approx(0.4)
  identical = dataclasses.replace(PROBLEMS['clean'], tau=0.0)
  assert theory.optimal_lambda(identical) == float('inf')


@pytest.mark.parametrize('name', sorted(PROBLEMS))
def test_expected_error_matches_monte_carlo(name):
  problem = PROBLEMS[name]
  lambdas = np.array([0.0, 0.2, 1.0, 5.0, np.inf])
  sweep = theory.sweep_lambda(problem, lambdas, num_trials=4000, seed=3)
  np.testing.assert_allclose(
      sweep.mean_error,
      theory.expected_benign_error(problem, lambdas),
      rtol=0.03,
  )


@pytest.mark.parametrize('name', sorted(PROBLEMS))
def test_lambda_star_is_the_empirical_argmin_within_2_percent(name):
  problem = PROBLEMS[name]
  lambda_star = theory.optimal_lambda(problem)
  grid = lambda_star * np.logspace(-0.5, 0.5, 401)
  sweep = theory.sweep_lambda(problem, grid, num_trials=2000, seed=0)
  assert sweep.argmin_mean() == pytest.approx(lambda_star, rel=0.02)
  # Fairness: the spread of benign errors across devices is minimized near
  # lambda* too when K is large; with few devices the shared error of w
  # (which the within-federation spread does not see) moves it (K = 20:
  # about +15%), so only large federations are checked.
  if problem.num_devices >= 100:
    assert sweep.argmin_std() == pytest.approx(lambda_star, rel=0.05)
  # Not at the ends of the grid (a flat or monotone curve would be).
  assert grid[5] < sweep.argmin_mean() < grid[-6]


def test_attackers_among_k_is_the_convention_that_matches():
  # If the K_a attackers were counted OUTSIDE K (K benign + K_a attackers,
  # w over all), the paper's formula with K = benign count would be wrong.
  problem = PROBLEMS['small']
  lambda_star = theory.optimal_lambda(problem)
  outside = theory.optimal_lambda(
      dataclasses.replace(
          problem, num_devices=problem.num_devices - problem.num_attackers
      )
  )
  grid = lambda_star * np.logspace(-0.5, 0.5, 401)
  sweep = theory.sweep_lambda(problem, grid, num_trials=2000, seed=0)
  assert abs(sweep.argmin_mean() / outside - 1) > 0.05
  assert sweep.argmin_mean() == pytest.approx(lambda_star, rel=0.02)


def test_local_global_crossover():
  problem = PROBLEMS['attackers']
  crossover = theory.local_global_crossover(problem)
  below, above = 0.9 * crossover, 1.1 * crossover
  result = theory.relatedness_sweep(
      problem, np.array([below, above]), num_trials=50, seed=0
  )
  # Local wins when devices are unrelated (small 1/tau), global when related.
  assert result['local_expected'][0] < result['global_expected'][0]
  assert result['local_expected'][1] > result['global_expected'][1]
  # Ditto(lambda*) is never worse than either.
  assert np.all(result['ditto_expected'] <= result['local_expected'] + 1e-12)
  assert np.all(result['ditto_expected'] <= result['global_expected'] + 1e-12)
  np.testing.assert_allclose(
      result['ditto'], result['ditto_expected'], rtol=0.1
  )


def test_invalid_problem_raises():
  with pytest.raises(ValueError, match='num_attackers'):
    theory.optimal_lambda(
        theory.PointEstimationProblem(num_devices=10, num_attackers=10)
    )
