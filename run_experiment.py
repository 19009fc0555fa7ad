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

import dataclasses  # noqa: E402
import datetime  # noqa: E402
import sys  # noqa: E402
import typing  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tff_ditto import experiment_defaults  # noqa: E402
from tff_ditto import runtime  # noqa: E402
from tff_ditto import training_config  # noqa: E402

_DATASET = flags.DEFINE_string(
    'dataset',
    'synthetic',
    'Dataset: synthetic (embedded Synthetic(1,1) generator; also '
    'synthetic_<alpha>_<beta>), femnist, vehicle, celeba, leaf_synthetic '
    '(LEAF JSON), fmnist (Fashion-MNIST, 500-device partition), emnist, '
    'tff_celeba (TFF SQLite files).',
)
_DATA_DIR = flags.DEFINE_string(
    'data_dir',
    None,
    'Directory holding the dataset (or its parent, e.g. ../shared/data). '
    'Not needed for synthetic.',
)

# The flags of the ExperimentConfig fields. Their help texts live beside the
# fields (tff_ditto/training_config.py), as does how each flag is made: most
# are generated from the field's type and default (`_define_config_flags`);
# these take a list or a text that is parsed here.
_METHOD = flags.DEFINE_list(
    'method', ['ditto', 'global', 'local'], training_config.field_help('method')
)
_LAM = flags.DEFINE_string('lam', None, training_config.field_help('lam'))
_REPORT_LAMBDAS = flags.DEFINE_list(
    'report_lambdas', [], training_config.field_help('report_lambdas')
)

_VALIDATION_FRACTION = flags.DEFINE_float(
    'validation_fraction',
    0.1,
    "Fraction of each client's training data held out for validation.",
)
_MAX_CLIENTS = flags.DEFINE_integer(
    'max_clients', None, 'Use only the first N clients (quick runs).'
)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir',
    None,
    'Results directory (default: runs/<dataset>-seed<seed>-<time>).',
)
_RESUME = flags.DEFINE_bool(
    'resume',
    False,
    'Continue the run in --output_dir from its latest checkpoints.',
)
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Replace existing results in --output_dir.'
)
_MAX_CONCURRENT_CLIENTS = flags.DEFINE_integer(
    'max_concurrent_clients',
    2,
    'Client computations the local TFF worker runs at once (-1 = no limit).',
)
_WORKERS = flags.DEFINE_string(
    'workers',
    None,
    'Comma-separated host:port of running TFF worker_binary processes (see '
    'scripts/start_local_workers.py). One address: every computation runs on '
    "that worker. Several: TFF's mergeable context splits each round's "
    'clients into contiguous chunks, one per worker, and merges the partial '
    'aggregates here (robust aggregators then gather by concatenation). '
    'Client data and state paths must be readable on the workers. The '
    'workers speak unauthenticated gRPC: use only trusted, firewalled '
    'addresses. Default: a worker this process starts on 127.0.0.1.',
)

_DEFINE_BY_TYPE = {
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    bool: flags.DEFINE_bool,
    str: flags.DEFINE_string,
}


def _value_type(annotation):
  """The type of a field's values: `int` of `int`, `float` of Optional[float]."""
  arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
  if typing.get_origin(annotation) is typing.Union and len(arguments) == 1:
    return arguments[0]
  return annotation


def _define_config_flags() -> dict[str, flags.FlagHolder]:
  """Defines the flag of each config field made from the field.

  A field whose metadata 'flag' is `training_config.FLAG_FROM_FIELD` or
  `FLAG_PRESET` gets the flag --<field>, with the field's metadata 'help':
  an enum of its 'choices' if it has them, else an integer, float, bool or
  string flag of the field's type; its default is the field's (None for
  FLAG_PRESET: the dataset preset's value).

  Returns:
    {field name: flag holder}, in field order.

  Raises:
    TypeError: If a field does not describe its flag, or its type has no
      flag type.
  """
  types = typing.get_type_hints(training_config.ExperimentConfig)
  holders = {}
  for field in dataclasses.fields(training_config.ExperimentConfig):
    if 'flag' not in field.metadata:
      raise TypeError(
          f'ExperimentConfig.{field.name} does not describe its flag (define '
          'it with training_config._field)'
      )
    how = field.metadata['flag']
    if how not in (
        training_config.FLAG_FROM_FIELD,
        training_config.FLAG_PRESET,
    ):
      continue
    default = None if how == training_config.FLAG_PRESET else field.default
    help_text = field.metadata['help']
    if field.metadata['choices'] is not None:
      holders[field.name] = flags.DEFINE_enum(
          field.name, default, list(field.metadata['choices']), help_text
      )
      continue
    value_type = _value_type(types[field.name])
    if value_type not in _DEFINE_BY_TYPE:
      raise TypeError(
          f'ExperimentConfig.{field.name}: no flag type for {value_type}'
      )
    holders[field.name] = _DEFINE_BY_TYPE[value_type](
        field.name, default, help_text
    )
  return holders


_CONFIG_FLAGS = _define_config_flags()

# The order in which flags.json lists the flags: the order of their
# definitions before the config flags were generated (flags added since
# follow, in definition order).
_RECORDED_FLAG_ORDER = (
    'dataset',
    'data_dir',
    'method',
    'rounds',
    'clients_per_round',
    'local_steps',
    'batch_size',
    'client_lr',
    'personal_lr',
    'server_lr',
    'server_optimizer',
    'lam',
    'report_lambdas',
    'curve_split',
    'strong_attack',
    'fedprox_mu',
    'finetune_steps',
    'finetune_lam',
    'aggregator',
    'bucketing_size',
    'term_t',
    'apfl_alpha',
    'perfedavg_alpha',
    'ewc_lam',
    'skl_lam',
    'finetune_patience',
    'cclip_tau',
    'attack',
    'attack_ratio',
    'attack_poison_labels',
    'malicious_personal_training',
    'eval_every',
    'eval_split',
    'sampling',
    'batch_stream',
    'weighted_aggregation',
    'seed',
    'validation_fraction',
    'max_clients',
    'output_dir',
    'resume',
    'overwrite',
    'checkpoint_every',
    'max_concurrent_clients',
    'workers',
)


def _lambda_values(text: typing.Optional[str]) -> dict:
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
  """The config fields the flags set (None: the dataset preset's value)."""
  return dict(
      {name: holder.value for name, holder in _CONFIG_FLAGS.items()},
      **_lambda_values(_LAM.value),
      report_lambdas=_report_lambda_values(_REPORT_LAMBDAS.value),
  )


# Flags that may differ between a run and its --resume.
_RESUME_MAY_CHANGE = frozenset({
    'output_dir',
    'resume',
    'rounds',
    'verbosity',
    'max_concurrent_clients',
    'overwrite',
    'workers',
})


def _explicit_flags() -> dict:
  """Flags of this module given on the command line, by name."""
  return {
      flag.name: flag.value
      for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0])
      if flag.present and flag.name not in _RESUME_MAY_CHANGE
  }


def _recorded_flags() -> dict:
  """Every flag of this module by name, for flags.json."""
  rank = {name: index for index, name in enumerate(_RECORDED_FLAG_ORDER)}
  ordered = sorted(
      flags.FLAGS.get_key_flags_for_module(sys.argv[0]),
      key=lambda flag: rank.get(flag.name, len(rank)),
  )
  return {flag.name: flag.value for flag in ordered}


def _fail(message: str) -> None:
  print(f'run_experiment.py: error: {message}', file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments {argv[1:]}')
  # Validate everything before any TF/TFF work starts.
  try:
    configs = experiment_defaults.build_configs(
        _DATASET.value, _METHOD.value, _config_values()
    )
  except ValueError as error:
    _fail(str(error))
  if _VALIDATION_FRACTION.value == 0 and any(
      config.method == 'ditto' and config.lam_selection != 'fixed'
      for config in configs
  ):
    _fail(
        f'--lam={configs[0].lam_selection} chooses lambda by validation '
        'loss: it needs --validation_fraction > 0'
    )
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
      f'{_DATASET.value}-seed{_CONFIG_FLAGS["seed"].value}-'
      f'{datetime.datetime.now():%Y%m%d-%H%M%S}',
  )
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
          output_dir, _explicit_flags(), rounds=_CONFIG_FLAGS['rounds'].value
      )
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
        flag_values=_recorded_flags(),
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
