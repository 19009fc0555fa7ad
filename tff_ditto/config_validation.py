"""The rules a valid `ExperimentConfig` follows (no TensorFlow import).

`validate_config` checks every setting of a run's
`tff_ditto.training_config.ExperimentConfig` and each combination that cannot
run (an aggregator without the weighted form `weighted_aggregation` asks for,
report lambdas of a method without personal models, ...), and raises on the
first one broken with a one-line message that names the field and its value.
`ExperimentConfig.validate` calls it; the names it checks against are
`tff_ditto.names` and the value lists of `tff_ditto.training_config`.
"""

from __future__ import annotations

from tff_ditto.names import AGGREGATOR_NAMES
from tff_ditto.names import ATTACK_NAMES
from tff_ditto.names import BASELINE_METHODS
from tff_ditto.names import METHODS
from tff_ditto.names import NO_WEIGHTED_FORM
from tff_ditto.names import OMNISCIENT_ATTACKS
from tff_ditto.names import WEIGHTED_AGGREGATOR_NAMES
from tff_ditto.training_config import BATCH_STREAMS
from tff_ditto.training_config import ExperimentConfig
from tff_ditto.training_config import LAMBDA_SELECTIONS
from tff_ditto.training_config import SAMPLING_MODES
from tff_ditto.training_config import SERVER_OPTIMIZERS


def validate_config(config: ExperimentConfig) -> None:
  """Checks a run's settings, one rule after the other.

  Args:
    config: The run's config.

  Raises:
    ValueError: On the first setting, or combination of settings, that is
      invalid: a one-line message, ending in the field's value when it
      starts with the field's name (e.g. "rounds must be >= 1 (got 0)").
  """
  checks = [
      (config.method in METHODS, f'method must be one of {METHODS}'),
      (config.rounds >= 1, 'rounds must be >= 1'),
      (config.clients_per_round >= 1, 'clients_per_round must be >= 1'),
      (config.local_steps >= 1, 'local_steps must be >= 1'),
      (config.batch_size >= 1, 'batch_size must be >= 1'),
      (config.client_lr > 0, 'client_lr must be > 0'),
      (
          config.personal_lr is None or config.personal_lr > 0,
          'personal_lr must be > 0',
      ),
      (config.server_lr > 0, 'server_lr must be > 0'),
      (
          config.server_optimizer in SERVER_OPTIMIZERS,
          f'server_optimizer must be one of {SERVER_OPTIMIZERS}',
      ),
      (config.lam >= 0, 'lam must be >= 0'),
      (
          config.lam_selection in LAMBDA_SELECTIONS,
          f'lam_selection must be one of {LAMBDA_SELECTIONS}',
      ),
      (
          not config.strong_attack or config.lam_selection != 'fixed',
          (
              'strong_attack picks the candidate lambdas of lam_selection auto '
              'or per_step; it has no effect with lam_selection fixed'
          ),
      ),
      (config.fedprox_mu >= 0, 'fedprox_mu must be >= 0'),
      (config.finetune_steps >= 0, 'finetune_steps must be >= 0'),
      (config.finetune_lam >= 0, 'finetune_lam must be >= 0'),
      (config.eval_every >= 1, 'eval_every must be >= 1'),
      (config.eval_batch_size >= 1, 'eval_batch_size must be >= 1'),
      (
          config.sampling in SAMPLING_MODES,
          f'sampling must be in {SAMPLING_MODES}',
      ),
      (
          config.batch_stream in BATCH_STREAMS,
          f'batch_stream must be one of {BATCH_STREAMS}',
      ),
      (config.checkpoint_every >= 0, 'checkpoint_every must be >= 0'),
      (
          config.eval_split in ('test', 'validation'),
          'eval_split must be test or validation',
      ),
      (
          config.attack.lower() in ATTACK_NAMES,
          f'attack must be one of {ATTACK_NAMES}',
      ),
      (0.0 <= config.attack_ratio < 1.0, 'attack_ratio must be in [0, 1)'),
      (
          config.aggregator in AGGREGATOR_NAMES,
          f'aggregator must be one of {AGGREGATOR_NAMES}',
      ),
      (config.bucketing_size >= 0, 'bucketing_size must be >= 0'),
      (
          not config.weighted_aggregation
          or config.aggregator not in NO_WEIGHTED_FORM,
          (
              f'aggregator {config.aggregator} has no example-weighted form ('
              f'{NO_WEIGHTED_FORM.get(config.aggregator)}): '
              'weighted_aggregation needs one of '
              f'{WEIGHTED_AGGREGATOR_NAMES}'
          ),
      ),
      (
          config.aggregator not in ('krum', 'multi_krum')
          or config.clients_per_round
          - int(config.clients_per_round * config.attack_ratio)
          - 2
          >= 1,
          (
              f'aggregator {config.aggregator} needs clients_per_round - f - 2 '
              '>= 1 with f = int(clients_per_round * attack_ratio) = '
              f'{int(config.clients_per_round * config.attack_ratio)}'
          ),
      ),
      (config.cclip_tau > 0, 'cclip_tau must be > 0'),
      (config.term_t >= 0, 'term_t must be >= 0'),
      (0.0 <= config.apfl_alpha <= 1.0, 'apfl_alpha must be in [0, 1]'),
      (
          config.perfedavg_alpha is None or config.perfedavg_alpha > 0,
          'perfedavg_alpha must be > 0',
      ),
      (config.ewc_lam >= 0, 'ewc_lam must be >= 0'),
      (config.skl_lam >= 0, 'skl_lam must be >= 0'),
      (config.finetune_patience >= 1, 'finetune_patience must be >= 1'),
      (
          all(value >= 0 for value in config.report_lambdas),
          'report_lambdas must all be >= 0',
      ),
      (
          not config.report_lambdas or config.method == 'ditto',
          (
              'report_lambdas trains extra personal models of method ditto '
              f'only (method {config.method})'
          ),
      ),
      (
          not config.report_lambdas or config.lam_selection != 'per_step',
          (
              'report_lambdas needs one personal model per lambda: not with '
              'lam_selection per_step (a single model chooses at every step)'
          ),
      ),
      (
          config.curve_split in (None, 'test', 'validation')
          and config.curve_split != config.eval_split,
          (
              'curve_split must be None, test or validation, and not '
              f'eval_split ({config.eval_split})'
          ),
      ),
      (
          config.aggregator != 'k_loss' or config.bucketing_size < 2,
          (
              'bucketing_size must be 0 with aggregator k_loss (bucket means '
              'have no client loss)'
          ),
      ),
      (
          config.aggregator != 'k_loss'
          or config.attack.lower() not in OMNISCIENT_ATTACKS,
          (
              'aggregator k_loss cannot run under the omniscient attacks '
              f'{OMNISCIENT_ATTACKS} (their hook marks attackers by weight)'
          ),
      ),
      (
          config.attack.lower() == 'none' or config.attack_ratio > 0,
          'an attack needs attack_ratio > 0',
      ),
      (
          config.method not in BASELINE_METHODS
          or (
              config.aggregator != 'k_loss' and not config.weighted_aggregation
          ),
          (
              f'method {config.method} sends unweighted updates (as the'
              ' reference): no k_loss aggregator, no weighted_aggregation'
          ),
      ),
      (
          config.method != 'term'
          or (
              config.aggregator == 'mean'
              and config.bucketing_size == 0
              and config.attack.lower() not in OMNISCIENT_ATTACKS
          ),
          (
              'method term weights updates by exp(t * loss): it needs '
              'aggregator mean, no bucketing and no omniscient attack'
          ),
      ),
  ]
  for ok, message in checks:
    if not ok:
      name = message.split()[0]
      value = getattr(config, name, None)
      got = f' (got {value!r})' if hasattr(config, name) else ''
      raise ValueError(f'{message}{got}')
