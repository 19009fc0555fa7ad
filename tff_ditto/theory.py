"""Ditto on federated point estimation (paper Section 3.3, Figures 1-2); numpy only.

The problem. Device k holds n samples x_{k,i} = v_k + z_{k,i} with noise
z ~ N(0, sigma^2) and its own true mean v_k ~ N(theta, tau^2). K_a of the K
devices are attackers whose means are drawn wider, v_k ~ N(theta, tau_a^2);
they report their honest sample mean (their data, not their protocol, is
corrupted). Each device's loss is f_k(v) = 1/(2n) sum_i (v - x_{k,i})^2, so
its local minimizer is the sample mean xbar_k. The global model minimizes
sum_k f_k(w) over ALL K devices, w = mean_k xbar_k. Ditto's personal model
minimizes f_k(v) + lambda/2 (v - w)^2:

    v_k(lambda) = (xbar_k + lambda * w) / (1 + lambda).

lambda = 0 is local training, lambda -> infinity the global model. A benign
device's test error is its expected loss on a fresh sample minus the noise
floor, (v_k(lambda) - v_k)^2.

Closed form (derived in `optimal_lambda`): with s^2 = sigma^2 / n, for a
benign device e_k = xbar_k - v_k has variance s^2 and g_k = w - v_k has

    E[e_k^2] = s^2,  E[e_k g_k] = s^2 / K,
    E[g_k^2] = s^2 / K + (K-1)/K tau^2 + K_a (tau_a^2 - tau^2) / K^2,

(the other K-1 devices of a benign k hold all K_a attackers), and the
expected error (E[e^2] + 2 lambda E[eg] + lambda^2 E[g^2]) / (1 + lambda)^2
is minimized at lambda* = (E[e^2] - E[eg]) / (E[g^2] - E[eg]), i.e.

    lambda* = s^2 K / (K tau^2 + K_a / (K - 1) (tau_a^2 - tau^2)),

exactly the paper's formula, under the conventions above: attackers ARE
among the K devices, w averages all K devices, and errors are measured on
benign devices. Because each benign error is (close to) a zero-mean Gaussian
squared, the spread (std) of test errors across benign devices is about
sqrt(2) times the mean, so the same lambda* also minimizes it (fairness).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class PointEstimationProblem:
  """Parameters of the federated point-estimation problem.

  Attributes:
    num_devices: K, all devices including attackers.
    num_attackers: K_a, attackers among the K devices.
    samples_per_device: n.
    noise_std: sigma, the per-sample noise.
    tau: Spread of benign devices' means around theta.
    tau_attacker: Spread of attackers' means around theta.
    theta: The population mean.
  """

  num_devices: int = 100
  num_attackers: int = 0
  samples_per_device: int = 10
  noise_std: float = 1.0
  tau: float = 0.5
  tau_attacker: float = 0.5
  theta: float = 0.0

  def validate(self) -> None:
    """Raises ValueError on an impossible setting."""
    if self.num_devices < 2:
      raise ValueError(f'num_devices must be >= 2 (got {self.num_devices})')
    if not 0 <= self.num_attackers < self.num_devices:
      raise ValueError(
          'num_attackers must be in [0, num_devices) '
          f'(got {self.num_attackers})'
      )
    if self.samples_per_device < 1:
      raise ValueError('samples_per_device must be >= 1')
    if self.noise_std <= 0 or self.tau < 0 or self.tau_attacker < 0:
      raise ValueError('noise_std must be > 0 and tau, tau_attacker >= 0')


def optimal_lambda(problem: PointEstimationProblem) -> float:
  """The paper's lambda* (Section 3.3), the minimizer of expected benign error.

  Args:
    problem: The point-estimation problem.

  Returns:
    sigma^2/n * K / (K tau^2 + K_a/(K-1) (tau_a^2 - tau^2)); infinity when
    the denominator is not positive (identical devices: use the global model).
  """
  problem.validate()
  k, k_a = problem.num_devices, problem.num_attackers
  denominator = k * problem.tau**2 + k_a / (k - 1) * (
      problem.tau_attacker**2 - problem.tau**2
  )
  if denominator <= 0:
    return float('inf')
  return problem.noise_std**2 / problem.samples_per_device * k / denominator


def expected_benign_error(
    problem: PointEstimationProblem, lam: np.ndarray
) -> np.ndarray:
  """E[(v_k(lambda) - v_k)^2] of a benign device, exactly.

  Args:
    problem: The point-estimation problem.
    lam: Lambda values (>= 0; np.inf gives the global model).

  Returns:
    The expected squared error, same shape as `lam`.
  """
  problem.validate()
  k, k_a = problem.num_devices, problem.num_attackers
  s2 = problem.noise_std**2 / problem.samples_per_device
  ee = s2
  eg = s2 / k
  gg = (
      s2 / k
      + (k - 1) / k * problem.tau**2
      + k_a * (problem.tau_attacker**2 - problem.tau**2) / k**2
  )
  lam = np.asarray(lam, np.float64)
  with np.errstate(invalid='ignore'):
    finite = (ee + 2 * lam * eg + lam**2 * gg) / (1 + lam) ** 2
  return np.where(np.isinf(lam), gg, finite)


def sample_devices(
    problem: PointEstimationProblem, num_trials: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Draws `num_trials` independent federations of devices and their data.

  Args:
    problem: The point-estimation problem.
    num_trials: Independent repetitions.
    seed: Seed of the numpy generator.

  Returns:
    (true_means [T, K], sample_means [T, K], is_attacker [K]); attackers are
    the last K_a devices. Sample means are computed from n raw samples each.
  """
  problem.validate()
  rng = np.random.default_rng(seed)
  k, k_a, n = (
      problem.num_devices,
      problem.num_attackers,
      problem.samples_per_device,
  )
  is_attacker = np.arange(k) >= k - k_a
  spread = np.where(is_attacker, problem.tau_attacker, problem.tau)
  true_means = problem.theta + spread * rng.standard_normal([num_trials, k])
  samples = true_means[..., None] + problem.noise_std * rng.standard_normal(
      [num_trials, k, n]
  )
  return true_means, samples.mean(axis=-1), is_attacker


def ditto_personal_estimates(
    sample_means: np.ndarray,
    lam: float,
    global_estimate: Optional[np.ndarray] = None,
) -> np.ndarray:
  """Minimizers of f_k(v) + lam/2 (v - w)^2 for every device.

  Args:
    sample_means: [..., K] per-device sample means xbar_k (f_k's minimizer).
    lam: Ditto's lambda (>= 0, np.inf for the global model).
    global_estimate: [...] the global model w; default the mean over devices
      (the minimizer of sum_k f_k with equal n).

  Returns:
    [..., K] personal estimates (xbar_k + lam w) / (1 + lam).
  """
  if global_estimate is None:
    global_estimate = sample_means.mean(axis=-1)
  w = np.asarray(global_estimate)[..., None]
  if np.isinf(lam):
    return np.broadcast_to(w, sample_means.shape).copy()
  return (sample_means + lam * w) / (1.0 + lam)


@dataclasses.dataclass(frozen=True)
class LambdaSweep:
  """Monte Carlo test error of Ditto over a lambda grid.

  Attributes:
    lambdas: [L] the grid.
    mean_error: [L] mean over trials of the mean benign error.
    std_error: [L] mean over trials of the std of benign errors across
      devices (fairness).
  """

  lambdas: np.ndarray
  mean_error: np.ndarray
  std_error: np.ndarray

  def argmin_mean(self) -> float:
    return float(self.lambdas[np.argmin(self.mean_error)])

  def argmin_std(self) -> float:
    return float(self.lambdas[np.argmin(self.std_error)])


def sweep_lambda(
    problem: PointEstimationProblem,
    lambdas: np.ndarray,
    num_trials: int = 2000,
    seed: int = 0,
) -> LambdaSweep:
  """Empirical benign test error (mean and std across devices) per lambda.

  The same draws are used for every lambda (common random numbers), so the
  curves are smooth and their argmins comparable.

  Args:
    problem: The point-estimation problem.
    lambdas: [L] lambda values to try.
    num_trials: Independent federations averaged.
    seed: Seed of the draws.

  Returns:
    A LambdaSweep.
  """
  true_means, sample_means, is_attacker = sample_devices(
      problem, num_trials, seed
  )
  benign = ~is_attacker
  mean_error, std_error = [], []
  for lam in np.asarray(lambdas, np.float64):
    estimates = ditto_personal_estimates(sample_means, lam)
    errors = (estimates - true_means)[:, benign] ** 2
    mean_error.append(errors.mean())
    std_error.append(errors.std(axis=1).mean())
  return LambdaSweep(
      np.asarray(lambdas, np.float64),
      np.asarray(mean_error),
      np.asarray(std_error),
  )


def relatedness_sweep(
    problem: PointEstimationProblem,
    inverse_taus: np.ndarray,
    num_trials: int = 500,
    seed: int = 0,
) -> dict[str, np.ndarray]:
  """Figure 2: local, global and Ditto(lambda*) error as 1/tau grows.

  The attackers' spread is kept at `problem.tau_attacker`.

  Args:
    problem: The base problem (its tau is replaced).
    inverse_taus: [M] values of 1/tau (> 0).
    num_trials: Monte Carlo repetitions per point.
    seed: Seed.

  Returns:
    Dict of [M] arrays: inverse_tau, lambda_star, and the mean benign test
    error of local, global and ditto (empirical), with *_expected for the
    closed forms.
  """
  out = {
      name: []
      for name in (
          'lambda_star',
          'local',
          'global',
          'ditto',
          'local_expected',
          'global_expected',
          'ditto_expected',
      )
  }
  for i, inverse_tau in enumerate(np.asarray(inverse_taus, np.float64)):
    point = dataclasses.replace(problem, tau=1.0 / inverse_tau)
    lam_star = optimal_lambda(point)
    true_means, sample_means, is_attacker = sample_devices(
        point, num_trials, seed + i
    )
    benign = ~is_attacker
    for name, lam in (('local', 0.0), ('global', np.inf), ('ditto', lam_star)):
      estimates = ditto_personal_estimates(sample_means, lam)
      out[name].append(((estimates - true_means)[:, benign] ** 2).mean())
      out[name + '_expected'].append(
          float(expected_benign_error(point, np.asarray(lam)))
      )
    out['lambda_star'].append(lam_star)
  result = {name: np.asarray(values) for name, values in out.items()}
  result['inverse_tau'] = np.asarray(inverse_taus, np.float64)
  return result


def local_global_crossover(problem: PointEstimationProblem) -> float:
  """The 1/tau at which local and global training have equal expected error.

  Local error is s^2 = sigma^2/n; global error is
  s^2/K + (K-1)/K tau^2 + K_a (tau_a^2 - tau^2)/K^2. Setting them equal:
  tau^2 ((K-1)/K - K_a/K^2) = s^2 (K-1)/K - K_a tau_a^2 / K^2.

  Args:
    problem: The problem (its tau is ignored).

  Returns:
    1/tau at the crossover (global better above it); nan if there is none.
  """
  problem.validate()
  k, k_a = problem.num_devices, problem.num_attackers
  s2 = problem.noise_std**2 / problem.samples_per_device
  tau2 = (s2 * (k - 1) / k - k_a * problem.tau_attacker**2 / k**2) / (
      (k - 1) / k - k_a / k**2
  )
  if tau2 <= 0:
    return float('nan')
  return float(1.0 / np.sqrt(tau2))
