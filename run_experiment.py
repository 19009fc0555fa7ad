"""Runs Ditto and its baselines on a federated dataset.

With no flags it runs Ditto, FedAvg (global) and local training on the
embedded Synthetic(1, 1) dataset and prints a comparison table:

  python run_experiment.py
  python run_experiment.py --dataset=femnist --data_dir=../shared/data \
      --method=ditto,global,local --rounds=300
  python run_experiment.py --output_dir=runs/x --resume   # continue a run

Per method, results go to <output_dir>/<method>/ (metrics.csv per round,
client_metrics.csv, summary.json, checkpoints); the comparison of all methods
to <output_dir>/comparison.{csv,md} and the flags to <output_dir>/flags.json.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import datetime  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from typing import Optional  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tff_ditto import experiment_defaults  # noqa: E402
from tff_ditto import runtime  # noqa: E402

_DATASET = flags.DEFINE_string(
    'dataset', 'synthetic',
    'Dataset: synthetic (embedded Synthetic(1,1) generator; also '
    'synthetic_<alpha>_<beta>), femnist, vehicle, celeba, leaf_synthetic '
    '(LEAF JSON), fmnist (Fashion-MNIST, 500-device partition), emnist, '
    'tff_celeba (TFF SQLite files).')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None,
    'Directory holding the dataset (or its parent, e.g. ../shared/data). '
    'Not needed for synthetic.')
_METHOD = flags.DEFINE_list(
    'method', ['ditto', 'global', 'local'],
    'Comma-separated methods to run and compare: ditto, global (FedAvg), '
    'local (Ditto with lambda=0), finetune (FedAvg then per-client '
    'fine-tuning), and the paper\'s baselines (tff_ditto.baselines): term '
    '(FedAvg weighted by exp(t * loss), --term_t), l2sgd (mean-regularized '
    'local models, --lam), apfl (alpha-interpolated local/global, '
    '--apfl_alpha), ewc (FedAvg then Fisher-weighted fine-tuning, '
    '--ewc_lam), skl (FedAvg then symmetric-KL fine-tuning, --skl_lam), '
    'perfedavg (Per-FedAvg HF then fine-tuning), mapper (per-client mixture '
    'lambda in {0.25, 0.5, 0.75} then fine-tuning), finetune_es (finetune '
    'with early stopping on validation loss, --finetune_patience, '
    '--finetune_lam).')
_ROUNDS = flags.DEFINE_integer(
    'rounds', None, 'Communication rounds (default: per-dataset preset).')
_CLIENTS_PER_ROUND = flags.DEFINE_integer(
    'clients_per_round', None, 'Clients sampled per round (default: 10).')
_LOCAL_STEPS = flags.DEFINE_integer(
    'local_steps', None,
    'Mini-batch steps per client per round, for both the personal and the '
    'global model (default: per-dataset preset).')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', None, 'Training batch size (default: per-dataset preset).')
_CLIENT_LR = flags.DEFINE_float(
    'client_lr', None,
    'Client SGD learning rate of personal and global local steps '
    '(default: per-dataset preset, chosen on validation data).')
_PERSONAL_LR = flags.DEFINE_float(
    'personal_lr', None,
    'SGD learning rate of the personal steps of ditto and local, if it '
    'should differ from --client_lr (default: --client_lr, as in the '
    'reference code).')
_SERVER_LR = flags.DEFINE_float(
    'server_lr', 1.0, 'Server learning rate (SGD 1.0 = reference FedAvg).')
_SERVER_OPTIMIZER = flags.DEFINE_enum(
    'server_optimizer', 'sgd', ['sgd', 'adam'], 'Server optimizer.')
_LAM = flags.DEFINE_string(
    'lam', None,
    "Ditto's lambda: a number >= 0 (default: per-dataset preset, 1.0 mostly), "
    "or 'auto' for the paper's per-device selection: every client trains one "
    'personal model per candidate {0.1, 1, 2} ({0.05, 0.1, 0.2} with '
    '--strong_attack) and uses the one with the lowest loss on its own '
    'validation split (fixed 1, or 0.1, with fewer than 4 validation '
    "examples); or 'per_step' for the reference code's --dynamic_lam=1: one "
    'personal model per client, and at every personal step each candidate '
    'takes a tentative step and the one with the lowest loss on the '
    "client's whole validation split is kept (same candidates and fallback; "
    'costs 3 tentative steps and 3 validation passes per personal step).')
_REPORT_LAMBDAS = flags.DEFINE_list(
    'report_lambdas', [],
    'Ditto only: extra lambdas (comma-separated, each >= 0, e.g. 0,1) whose '
    'personal models train alongside the run\'s own (--lam, or the '
    '--lam=auto candidates) on the same batches and are reported on their '
    'own (benign_lam_<value>_* in metrics.csv, lam_<value>_accuracy in '
    'client_metrics.csv) but never selected: one run then also gives the '
    'local (0) and fixed-lambda results. Each costs one personal step per '
    'step. Not with --lam=per_step.')
_CURVE_SPLIT = flags.DEFINE_enum(
    'curve_split', None, ['validation', 'test'],
    'Also evaluate this split (not --eval_split) at every evaluation round '
    'and write its summary to metrics.csv with the prefix "<split>_", e.g. '
    '--curve_split=validation to choose the number of rounds on validation '
    'curves and read the test numbers of that round from the same run.')
_STRONG_ATTACK = flags.DEFINE_bool(
    'strong_attack', False,
    "With --lam=auto or --lam=per_step: the devices' binary decision that the "
    'attack is strong (choose among the smaller lambdas).')
_FEDPROX_MU = flags.DEFINE_float(
    'fedprox_mu', 0.0,
    'FedProx proximal strength of the global solver (0 = FedAvg).')
_FINETUNE_STEPS = flags.DEFINE_integer(
    'finetune_steps', None, 'Fine-tuning steps of the finetune method.')
_FINETUNE_LAM = flags.DEFINE_float(
    'finetune_lam', 0.0,
    'Proximal strength towards the global model during fine-tuning.')
_AGGREGATOR = flags.DEFINE_enum(
    'aggregator', 'mean',
    ['mean', 'median', 'trimmed_mean', 'krum', 'multi_krum', 'rfa', 'cclip',
     'norm_clip', 'k_norm', 'k_loss'],
    'Server aggregation of model deltas (tff_ditto.aggregators): mean, '
    'coordinate-wise median, trimmed_mean (b = E), krum / multi_krum '
    '(f = E), rfa (geometric median, smoothed Weiszfeld), cclip (centered '
    'clipping, --cclip_tau), norm_clip (clip to the round\'s median norm, '
    'then mean; Ditto\'s "gradient clipping"), k_norm (drop the E largest '
    'norms), k_loss (the update of the client ranked clients_per_round - E by '
    'round-start training loss; Ditto reference k_loss). '
    'E = int(clients_per_round * num_malicious / num_clients).')
_BUCKETING_SIZE = flags.DEFINE_integer(
    'bucketing_size', 0,
    'Bucketing s (Karimireddy et al. 2022): average random buckets of s '
    'updates before the aggregator; 0 = off.')
_TERM_T = flags.DEFINE_float(
    'term_t', 1.0,
    'TERM tilt t (--method=term): client updates weighted by '
    'exp(t * round-start training loss); 0 = FedAvg; paper: 1, 2, 5.')
_APFL_ALPHA = flags.DEFINE_float(
    'apfl_alpha', 0.5,
    'APFL mixing weight alpha in [0, 1] (--method=apfl): clients are '
    'evaluated on alpha * v_k + (1 - alpha) * w; 1 = local training.')
_PERFEDAVG_ALPHA = flags.DEFINE_float(
    'perfedavg_alpha', None,
    'Per-FedAvg inner step alpha (--method=perfedavg; default: the '
    'per-dataset preset, chosen on validation data (FEMNIST 0.01), else '
    '--client_lr as the reference). The meta step is beta = 0.01, and the '
    'update is w - beta * g + alpha * beta * Hg.')
_EWC_LAM = flags.DEFINE_float(
    'ewc_lam', 1.0,
    'EWC strength (--method=ewc): fine-tuning gradient grad F + ewc_lam * '
    'Fisher * (v - w).')
_SKL_LAM = flags.DEFINE_float(
    'skl_lam', 0.01,
    'SKL strength (--method=skl): fine-tuning gradient grad F + skl_lam * '
    'grad of the symmetric KL to the global model summed over the '
    'training set.')
_FINETUNE_PATIENCE = flags.DEFINE_integer(
    'finetune_patience', 1,
    'finetune_es: stop fine-tuning a client after this many steps without '
    'a lower validation loss (the best-validation weights are evaluated).')
_CCLIP_TAU = flags.DEFINE_float('cclip_tau', 10.0,
                                'Clipping radius of --aggregator=cclip.')
_ATTACK = flags.DEFINE_enum(
    'attack', 'none',
    ['none', 'a1', 'a2', 'a3', 'label_poison', 'label_flip', 'random_update',
     'model_replacement', 'bit_flip', 'alie', 'ipm', 'mimic'],
    'Attack of the malicious clients: a1/label_poison (random labels; 1-y '
    'binary; -y Vehicle), a2/random_update (Gaussian update, sigma = std of '
    'its own update), a3/model_replacement (update x clients_per_round), '
    'label_flip (C-1-y), bit_flip (negated update), and the omniscient '
    'server-side simulations alie, ipm, mimic.')
_ATTACK_RATIO = flags.DEFINE_float(
    'attack_ratio', 0.0,
    'Fraction of ALL clients that are malicious (a fixed set, seeded).')
_ATTACK_POISON_LABELS = flags.DEFINE_bool(
    'attack_poison_labels', True,
    'Reference-compatible mode: malicious clients of a2/a3/bit_flip also '
    'train on a1-poisoned labels, as the Ditto code does.')
_EVAL_EVERY = flags.DEFINE_integer(
    'eval_every', None, 'Evaluate every this many rounds (and at the end).')
_EVAL_SPLIT = flags.DEFINE_enum(
    'eval_split', 'test', ['test', 'validation'],
    'Split evaluated: tune hyper-parameters on validation, report on test.')
_SAMPLING = flags.DEFINE_enum(
    'sampling', 'weighted', ['weighted', 'uniform'],
    'Client sampling: weighted (proportional to training examples, without '
    'replacement, as the reference) or uniform.')
_BATCH_STREAM = flags.DEFINE_enum(
    'batch_stream', 'reference', ['reference', 'per_round_shuffle'],
    "Clients' training batches: reference (as the reference code's gen_batch:"
    ' one stream per client for the whole run, full batches in shuffled '
    'passes, reshuffled after each pass; a client with n <= batch_size '
    'trains on all n as one batch; positions are checkpointed) or '
    'per_round_shuffle (a fresh shuffled, repeated stream per client and '
    'round: the earlier behaviour of this project).')
_WEIGHTED_AGGREGATION = flags.DEFINE_bool(
    'weighted_aggregation', False,
    "Weight each client's delta by its number of training examples in the "
    "server aggregation (the aggregator's example-weighted form; mean: "
    'sum n_k x_k / sum n_k) instead of the reference unweighted rule. Not '
    'with --aggregator=krum or k_loss (no weighted form) nor the baseline '
    'methods. --sampling=weighted (default) already draws clients in '
    'proportion to their examples, so large clients then count twice; use '
    '--sampling=uniform for FedAvg weighting.')
_SEED = flags.DEFINE_integer(
    'seed', 0, 'Seed of data splits, initial model, sampling and batches.')
_VALIDATION_FRACTION = flags.DEFINE_float(
    'validation_fraction', 0.1,
    "Fraction of each client's training data held out for validation.")
_MAX_CLIENTS = flags.DEFINE_integer(
    'max_clients', None, 'Use only the first N clients (quick runs).')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None,
    'Results directory (default: runs/<dataset>-seed<seed>-<time>).')
_RESUME = flags.DEFINE_bool(
    'resume', False,
    'Continue the run in --output_dir from its latest checkpoints.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Replace existing results in --output_dir.')
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    'checkpoint_every', 10,
    'Checkpoint every N rounds, and after the last (0 = never). A resumed '
    'run redoes the rounds after its last checkpoint, with the same results. '
    'A checkpoint costs about 0.1 s (docs/performance.md).')
_MAX_CONCURRENT_CLIENTS = flags.DEFINE_integer(
    'max_concurrent_clients', 2,
    'Client computations the local TFF worker runs at once (-1 = no limit).')
_WORKERS = flags.DEFINE_string(
    'workers', None,
    'Comma-separated host:port of running TFF worker_binary processes (see '
    'scripts/start_local_workers.py). One address: every computation runs on '
    "that worker. Several: TFF's mergeable context splits each round's "
    'clients into contiguous chunks, one per worker, and merges the partial '
    'aggregates here (robust aggregators then gather by concatenation). '
    'Client data and state paths must be readable on the workers. The '
    'workers speak unauthenticated gRPC: use only trusted, firewalled '
    'addresses. Default: a worker this process starts on 127.0.0.1.')



def _lambda_values(text: Optional[str]) -> dict:
  """--lam as config values; ValueError on a value that is not a number."""
  if text is None:
    return dict(lam=None)
  if text.strip().lower() in ('auto', 'per_step'):
    return dict(lam=None, lam_selection=text.strip().lower())
  try:
    return dict(lam=float(text), lam_selection='fixed')
  except ValueError:
    raise ValueError(
        f"--lam must be a number >= 0, 'auto' or 'per_step' (got {text!r})"
    ) from None


def _report_lambda_values(entries: list[str]) -> tuple[float, ...]:
  """--report_lambdas as floats; ValueError on an entry not a number."""
  try:
    return tuple(float(entry) for entry in entries)
  except ValueError:
    raise ValueError(
        f'--report_lambdas must be numbers >= 0 (got {",".join(entries)!r})'
    ) from None


def _config_values() -> dict:
  return dict(
      rounds=_ROUNDS.value,
      clients_per_round=_CLIENTS_PER_ROUND.value,
      local_steps=_LOCAL_STEPS.value,
      batch_size=_BATCH_SIZE.value,
      client_lr=_CLIENT_LR.value,
      personal_lr=_PERSONAL_LR.value,
      server_lr=_SERVER_LR.value,
      server_optimizer=_SERVER_OPTIMIZER.value,
      **_lambda_values(_LAM.value),
      strong_attack=_STRONG_ATTACK.value,
      report_lambdas=_report_lambda_values(_REPORT_LAMBDAS.value),
      curve_split=_CURVE_SPLIT.value,
      fedprox_mu=_FEDPROX_MU.value,
      finetune_steps=_FINETUNE_STEPS.value,
      finetune_lam=_FINETUNE_LAM.value,
      eval_every=_EVAL_EVERY.value,
      eval_split=_EVAL_SPLIT.value,
      sampling=_SAMPLING.value,
      batch_stream=_BATCH_STREAM.value,
      weighted_aggregation=_WEIGHTED_AGGREGATION.value,
      seed=_SEED.value,
      checkpoint_every=_CHECKPOINT_EVERY.value,
      attack=_ATTACK.value,
      attack_ratio=_ATTACK_RATIO.value,
      attack_poison_labels=_ATTACK_POISON_LABELS.value,
      aggregator=_AGGREGATOR.value,
      bucketing_size=_BUCKETING_SIZE.value,
      cclip_tau=_CCLIP_TAU.value,
      term_t=_TERM_T.value,
      apfl_alpha=_APFL_ALPHA.value,
      perfedavg_alpha=_PERFEDAVG_ALPHA.value,
      ewc_lam=_EWC_LAM.value,
      skl_lam=_SKL_LAM.value,
      finetune_patience=_FINETUNE_PATIENCE.value,
  )


# Flags that may differ between a run and its --resume.
_RESUME_MAY_CHANGE = frozenset({
    'output_dir', 'resume', 'rounds', 'verbosity', 'max_concurrent_clients',
    'overwrite', 'workers',
})


def _explicit_flags() -> dict:
  """Flags of this module given on the command line, by name."""
  return {
      flag.name: flag.value
      for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0])
      if flag.present and flag.name not in _RESUME_MAY_CHANGE
  }


def _fail(message: str) -> None:
  print(f'run_experiment.py: error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}')
  # Validate everything before any TF/TFF work starts.
  try:
    configs = experiment_defaults.build_configs(
        _DATASET.value, _METHOD.value, _config_values())
  except ValueError as error:
    _fail(str(error))
  if _VALIDATION_FRACTION.value == 0 and any(
      config.method == 'ditto' and config.lam_selection != 'fixed'
      for config in configs
  ):
    _fail(f'--lam={configs[0].lam_selection} chooses lambda by validation '
          'loss: it needs --validation_fraction > 0')
  if _RESUME.value and not _OUTPUT_DIR.value:
    _fail('--resume needs the --output_dir of the run to continue')
  worker_addresses = None
  if _WORKERS.value is not None:
    try:
      worker_addresses = runtime.parse_worker_addresses(_WORKERS.value)
    except ValueError as error:
      _fail(str(error))
  if _RESUME.value and _OVERWRITE.value:
    _fail('--resume and --overwrite exclude each other')
  output_dir = _OUTPUT_DIR.value or os.path.join(
      'runs',
      f'{_DATASET.value}-seed{_SEED.value}-'
      f'{datetime.datetime.now():%Y%m%d-%H%M%S}')
  settings = dict(
      dataset_name=_DATASET.value,
      data_dir=_DATA_DIR.value,
      configs=configs,
      validation_fraction=_VALIDATION_FRACTION.value,
      max_clients=_MAX_CLIENTS.value,
  )
  if _RESUME.value:
    try:
      settings = experiment_defaults.recorded_settings(
          output_dir, _explicit_flags(), rounds=_ROUNDS.value)
    except ValueError as error:
      _fail(str(error))

  # absl's own --verbosity flag: quiet unless given (1: Python info logs,
  # 2: also TF's C++ logs).
  verbosity = flags.FLAGS.verbosity if flags.FLAGS['verbosity'].present else 0
  runtime.set_quiet_logs(verbosity)  # before TensorFlow is imported
  from tff_ditto import experiment  # pylint: disable=g-import-not-at-top

  if worker_addresses:
    runtime.configure_remote_execution(worker_addresses)
  else:
    runtime.configure_local_execution(_MAX_CONCURRENT_CLIENTS.value)
  try:
    comparison = experiment.run_comparison(
        **settings,
        output_dir=output_dir,
        resume=_RESUME.value,
        overwrite=_OVERWRITE.value,
        flag_values={
            flag.name: flag.value
            for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0])
        },
    )
  except (experiment.ExperimentError,) as error:
    _fail(str(error))
  print()
  print(experiment.markdown_table(comparison))
  print(f'\nresults in {output_dir}')


if __name__ == '__main__':
  if any(arg in ('--help', '-h', '--helpfull') for arg in sys.argv[1:]):
    # absl exits with status 1 after printing help; asking for help is not an
    # error.
    flags.FLAGS(sys.argv[:1])
    print(flags.FLAGS.main_module_help())
    sys.exit(0)
  app.run(main)
