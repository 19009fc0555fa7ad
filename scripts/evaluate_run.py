"""Evaluates a run's latest checkpoint on the validation and/or test split.

For choosing hyper-parameters on validation data and reporting the chosen
run on test data without retraining, and for evaluating the global model
inside a Ditto run (it is bit-identical to FedAvg's: same sampling, batches
and seeds, and the server never sees the personal models):

  .venv/bin/python scripts/evaluate_run.py --run_dir=runs/femnist/ditto \
      --splits=validation,test

`--run_dir` is one method's folder of a `run_experiment.py` output directory
(its parent holds flags.json), or one finished cell of `scripts/reproduce.py`
run with --keep_checkpoints (it holds cell.json and summary.json), e.g.
runs/reproduce/femnist/ditto_a320_mean. Nothing of the run is changed: the summaries
go to `<run_dir>/evaluation_<split>_round<r>.json` and the per-client tables
to `<run_dir>/client_metrics_<split>_round<r>.csv`.

Settings that only the evaluation reads (the fine-tuning of finetune, EWC,
SKL, Per-FedAvg, MAPPER, finetune_es) can be changed to tune them on
validation data without retraining; the files then carry the settings in
their names (`evaluation_validation_round299_skl_lam-0.001.json`):

  .venv/bin/python scripts/evaluate_run.py \
      --run_dir=runs/reproduce/femnist/skl_none00_mean --splits=validation \
      --evaluation_overrides=skl_lam=0.001
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import collections  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

# Imported before app.run: Keras 2.14 fails to build Sequential models eagerly
# when TensorFlow is first imported inside an absl main.
import tensorflow as tf  # noqa: E402,F401

_RUN_DIR = flags.DEFINE_string(
    'run_dir',
    None,
    "One method's folder of a run_experiment.py output "
    'directory (e.g. runs/x/ditto).',
    required=True,
)
_SPLITS = flags.DEFINE_list(
    'splits', ['validation', 'test'], 'Splits to evaluate: validation, test.'
)
_EVALUATION_OVERRIDES = flags.DEFINE_list(
    'evaluation_overrides',
    [],
    'name=value settings of the evaluation only, to tune them on validation '
    'without retraining (the trained models do not depend on them): '
    'skl_lam, ewc_lam, finetune_lam, finetune_steps, finetune_patience. '
    'E.g. --evaluation_overrides=skl_lam=0.001.',
)

# Config fields that only the evaluation reads (fine-tuning at evaluation).
EVALUATION_ONLY_FIELDS = {
    'skl_lam': float,
    'ewc_lam': float,
    'finetune_lam': float,
    'finetune_steps': int,
    'finetune_patience': int,
}


def parse_evaluation_overrides(texts) -> dict:
  """{field: value} from 'name=value' texts.

  Raises:
    app.UsageError: A malformed entry or a field the training reads.
  """
  overrides = {}
  for text in texts:
    name, separator, value = text.partition('=')
    if not separator or name not in EVALUATION_ONLY_FIELDS:
      raise app.UsageError(
          f'--evaluation_overrides: {text!r} is not name=value with name in '
          f'{sorted(EVALUATION_ONLY_FIELDS)}'
      )
    try:
      overrides[name] = EVALUATION_ONLY_FIELDS[name](value)
    except ValueError:
      raise app.UsageError(
          f'--evaluation_overrides: {name} needs a '
          f'{EVALUATION_ONLY_FIELDS[name].__name__}, got {value!r}'
      ) from None
  return overrides


def _reproduce_cell_settings(run_dir: str):
  """(method, config, load_dataset kwargs) of a finished reproduce.py cell."""
  from tff_ditto import training_config  # pylint: disable=g-import-not-at-top

  with open(os.path.join(run_dir, 'cell.json')) as f:
    cell = json.load(f)
  if 'dataset_settings' not in cell:
    raise app.UsageError(
        f'{run_dir}/cell.json has no dataset_settings (the cell finished '
        'before reproduce.py recorded them); cannot tell how its data was '
        'loaded'
    )
  summary_path = os.path.join(run_dir, 'summary.json')
  if not os.path.exists(summary_path):
    raise app.UsageError(f'{summary_path} not found: the cell is unfinished')
  with open(summary_path) as f:
    config = training_config.ExperimentConfig(**json.load(f)['config'])
  config.validate()
  return cell['method'], config, cell['dataset_settings']


def _run_experiment_settings(run_dir: str):
  """(method, config, load_dataset kwargs) of a run_experiment.py method."""
  from tff_ditto import experiment_defaults  # pylint: disable=g-import-not-at-top

  method = os.path.basename(run_dir)
  try:
    settings = experiment_defaults.recorded_settings(
        os.path.dirname(run_dir), {}
    )
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  configs = [c for c in settings['configs'] if c.method == method]
  if not configs:
    raise app.UsageError(
        f'{run_dir}: no method {method!r} recorded in its flags.json'
    )
  return (
      method,
      configs[0],
      dict(
          name=settings['dataset_name'],
          data_dir=settings['data_dir'],
          validation_fraction=settings['validation_fraction'],
          seed=configs[0].seed,
          max_clients=settings['max_clients'],
      ),
  )


def main(argv):
  del argv
  for split in _SPLITS.value:
    if split not in ('validation', 'test'):
      raise app.UsageError(f'--splits: unknown split {split!r}')
  run_dir = os.path.abspath(_RUN_DIR.value)
  if os.path.exists(os.path.join(run_dir, 'cell.json')):
    method, config, dataset_settings = _reproduce_cell_settings(run_dir)
  else:
    method, config, dataset_settings = _run_experiment_settings(run_dir)
  overrides = parse_evaluation_overrides(_EVALUATION_OVERRIDES.value)
  if overrides:
    config = dataclasses.replace(config, **overrides)
    try:
      config.validate()
    except ValueError as error:
      raise app.UsageError(f'--evaluation_overrides: {error}') from None
  # Results under overrides are named after them, beside the plain ones.
  suffix = ''.join(f'_{name}-{value}' for name, value in overrides.items())
  checkpoints = os.path.join(run_dir, 'checkpoints')
  if not os.path.isdir(checkpoints) or not os.listdir(checkpoints):
    raise app.UsageError(
        f'{run_dir} has no checkpoint to evaluate (reproduce.py keeps them '
        'only with --keep_checkpoints)'
    )
  from tff_ditto import runtime  # pylint: disable=g-import-not-at-top

  runtime.set_quiet_logs(0)
  runtime.configure_local_execution()
  from tff_ditto import experiment  # pylint: disable=g-import-not-at-top
  from tff_ditto import models  # pylint: disable=g-import-not-at-top
  from tff_ditto import training  # pylint: disable=g-import-not-at-top
  from tff_ditto.data import load_dataset  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top

  dataset = load_dataset(**dataset_settings)
  runner = training.ExperimentRunner(
      config,
      dataset,
      models.get_model_spec(
          dataset_settings['name'], seed=config.seed
      ).tff_model_fn(),
      run_dir,
      resume=True,
      log_fn=print,
  )
  round_num = runner.next_round - 1
  rows = []
  for split in _SPLITS.value:
    summary = runner.evaluate(
        round_num,
        split=split,
        client_metrics_path=os.path.join(
            run_dir, f'client_metrics_{split}_round{round_num}{suffix}.csv'
        ),
    )
    global_summary = runner.evaluate_global_model(split)
    record = collections.OrderedDict(
        method=method,
        split=split,
        round=round_num,
        evaluation_overrides=overrides,
        models=summary,
        global_model=global_summary,
    )
    with open(
        os.path.join(
            run_dir, f'evaluation_{split}_round{round_num}{suffix}.json'
        ),
        'w',
    ) as f:
      json.dump(record, f, indent=2)
    for label, values in (
        ('method', summary),
        ('global model', global_summary),
    ):
      rows.append(
          collections.OrderedDict(
              split=split,
              model=f'{method} ({label})' if label == 'method' else label,
              mean_accuracy=values['benign_mean_accuracy'],
              std_accuracy=values['benign_std_accuracy'],
              pooled_accuracy=values['benign_pooled_accuracy'],
              worst10_accuracy=values['benign_worst10_accuracy'],
          )
      )
  print(
      f'{run_dir}: after round {round_num + 1}'
      + (f', evaluation overrides {overrides}' if overrides else '')
  )
  print(experiment.markdown_table(pd.DataFrame(rows)))


if __name__ == '__main__':
  app.run(main)
