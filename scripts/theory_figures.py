"""Figures 1-2 of the Ditto paper (Section 3.3) on federated point estimation.

Figure 1: benign test error (mean, and std across benign devices) as lambda
sweeps, empirical (Monte Carlo, numpy) with the closed-form lambda* marked.
Figure 2: local vs global vs Ditto(lambda*) as the relatedness 1/tau grows.
Writes <output_dir>/theory_figure1.png, theory_figure2.png and theory.md.

  .venv/bin/python scripts/theory_figures.py --output_dir=results
"""

import os

from absl import app
from absl import flags
import numpy as np

from tff_ditto import theory

# K = 100 devices, n = 10 samples, sigma = 1, benign tau = 0.5; attackers'
# means spread with tau_a = 2.
SETTINGS = (
    (
        'no attackers',
        theory.PointEstimationProblem(
            num_devices=100, num_attackers=0, tau=0.5
        ),
    ),
    (
        '10% attackers, tau_a = 2',
        theory.PointEstimationProblem(
            num_devices=100, num_attackers=10, tau=0.5, tau_attacker=2.0
        ),
    ),
    (
        '50% attackers, tau_a = 2',
        theory.PointEstimationProblem(
            num_devices=100, num_attackers=50, tau=0.5, tau_attacker=2.0
        ),
    ),
)


def figure1(output_dir: str, trials: int, seed: int) -> list[str]:
  """Draws Figure 1; returns markdown table rows of lambda* vs argmins."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  rows = []
  for (label, problem), color in zip(SETTINGS, ('C0', 'C1', 'C3')):
    lambda_star = theory.optimal_lambda(problem)
    grid = lambda_star * np.logspace(-1.5, 1.5, 601)
    sweep = theory.sweep_lambda(problem, grid, num_trials=trials, seed=seed)
    axes[0].plot(grid, sweep.mean_error, color=color, label=label)
    axes[0].plot(
        grid, theory.expected_benign_error(problem, grid), ':', color=color
    )
    axes[1].plot(grid, sweep.std_error, color=color, label=label)
    for axis in axes:
      axis.axvline(lambda_star, color=color, ls='--', lw=0.8)
    rows.append(
        f'| {label} | {lambda_star:.4f} | {sweep.argmin_mean():.4f} '
        f'({100 * (sweep.argmin_mean() / lambda_star - 1):+.1f}%) | '
        f'{sweep.argmin_std():.4f} '
        f'({100 * (sweep.argmin_std() / lambda_star - 1):+.1f}%) |'
    )
  axes[0].set_title('mean test error of benign devices')
  axes[1].set_title('std of test error across benign devices')
  for axis in axes:
    axis.set_xscale('log')
    axis.set_xlabel('lambda (dashed: closed-form lambda*)')
    axis.legend(fontsize=8)
  axes[0].set_ylabel('(v_k - v_k true)^2; dotted: expectation')
  fig.suptitle(
      'Figure 1: Ditto on point estimation, K=100, n=10, sigma=1, tau=0.5'
  )
  fig.tight_layout()
  fig.savefig(os.path.join(output_dir, 'theory_figure1.png'), dpi=110)
  plt.close(fig)
  return rows


def figure2(output_dir: str, trials: int, seed: int) -> list[str]:
  """Draws Figure 2; returns markdown lines with the crossovers."""
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  inverse_taus = np.logspace(-0.5, 1.5, 41)
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  lines = []
  for axis, (label, problem) in zip(axes, (SETTINGS[0], SETTINGS[2])):
    result = theory.relatedness_sweep(
        problem, inverse_taus, num_trials=max(trials // 4, 50), seed=seed
    )
    for name, color in (('local', 'C2'), ('global', 'C0'), ('ditto', 'C3')):
      axis.plot(
          inverse_taus,
          result[name],
          color=color,
          label=name if name != 'ditto' else 'Ditto (lambda*)',
      )
      axis.plot(inverse_taus, result[name + '_expected'], ':', color=color)
    crossover = theory.local_global_crossover(problem)
    axis.axvline(crossover, color='gray', ls='--', lw=0.8)
    axis.set_xscale('log')
    axis.set_yscale('log')
    axis.set_xlabel('relatedness 1/tau (dashed: local = global)')
    axis.set_ylabel('mean benign test error')
    axis.set_title(label)
    axis.legend(fontsize=8)
    gain = np.max(
        np.minimum(result['local_expected'], result['global_expected'])
        / result['ditto_expected']
    )
    lines.append(
        f'- {label}: local = global at 1/tau = {crossover:.3f}; '
        f'Ditto(lambda*) is at most {gain:.2f}x better than the '
        'better of the two (largest near the crossover).'
    )
  fig.suptitle('Figure 2: local vs global vs Ditto as devices become related')
  fig.tight_layout()
  fig.savefig(os.path.join(output_dir, 'theory_figure2.png'), dpi=110)
  plt.close(fig)
  return lines


def _define_flags():
  # Defined only when run as a script: scripts/reproduce.py imports the
  # figure functions and has flags of the same names.
  return (
      flags.DEFINE_string(
          'output_dir', 'results', 'Folder for the PNGs and theory.md.'
      ),
      flags.DEFINE_integer(
          'trials', 2000, 'Monte Carlo federations per point.'
      ),
      flags.DEFINE_integer('seed', 0, 'Seed of the draws.'),
  )


def main(argv):
  del argv
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  rows = figure1(_OUTPUT_DIR.value, _TRIALS.value, _SEED.value)
  lines = figure2(_OUTPUT_DIR.value, _TRIALS.value, _SEED.value)
  text = [
      '# Theory (Section 3.3): Ditto on federated point estimation',
      '',
      (
          'Generated by `.venv/bin/python scripts/theory_figures.py '
          f'--output_dir={_OUTPUT_DIR.value}` ({_TRIALS.value} Monte Carlo '
          'federations per lambda, seed '
          f'{_SEED.value}); model and derivation in `tff_ditto/theory.py`.'
      ),
      '',
      (
          'Closed form lambda* = sigma^2/n K / (K tau^2 + K_a/(K-1) '
          '(tau_a^2 - tau^2)) vs the empirical minimizers over a 601-point '
          'log grid:'
      ),
      '',
      '| setting | lambda* | argmin mean error | argmin std of errors |',
      '|---|---|---|---|',
      *rows,
      '',
      *lines,
      '',
      (
          'Convention: the formula is exact when the K_a attackers are among'
          ' the K devices, the global model averages all K, and errors are'
          ' taken over benign devices (then the other K-1 devices of a benign'
          ' device hold all K_a attackers, hence K_a/(K-1)). The std across'
          ' devices is minimized at lambda* only up to O(1/K) (the global'
          " model's shared error does not spread devices apart)."
      ),
      '',
      '![Figure 1](theory_figure1.png)',
      '![Figure 2](theory_figure2.png)',
  ]
  with open(os.path.join(_OUTPUT_DIR.value, 'theory.md'), 'w') as f:
    f.write('\n'.join(text) + '\n')
  print('\n'.join(text))


if __name__ == '__main__':
  _OUTPUT_DIR, _TRIALS, _SEED = _define_flags()
  app.run(main)
