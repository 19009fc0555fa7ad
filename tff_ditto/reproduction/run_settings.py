"""How a grid's cells run: settings, each cell's config, data and folder.

`RunSettings` are the grid's (rounds, clients, seed, config overrides);
`cell_config` is a cell's validated `ExperimentConfig` (or why it cannot
run), `dataset_settings` how its dataset loads, `cell_dir` its folder, and
`recorded_settings_mismatch` says when that folder holds a run of other
settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from tff_ditto import experiment_defaults
from tff_ditto import names
from tff_ditto import config_equivalence
from tff_ditto import training_config
from tff_ditto.reproduction.grid import Cell
from tff_ditto.reproduction.grid import Column
from tff_ditto.reproduction.grid import ColumnRounds
from tff_ditto.reproduction.grid import column_label


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """How every cell runs.

  Attributes:
    data_dir: Root of the real data.
    runs_dir: Where cells write (`<runs_dir>/<dataset>/<cell id>/`).
    rounds: Rounds per cell (None: the dataset preset).
    dataset_rounds: Rounds per cell of the named datasets, over `rounds`
      (e.g. {'femnist': 300}; see `parse_rounds`).
    column_rounds: Rounds per cell of the named (dataset, column) pairs,
      over `dataset_rounds` (e.g. {('fmnist', ('none', 0.0)): 5000}): a
      column that ran a budget of its own.
    eval_every: Evaluation period (None: preset).
    max_clients: Keep only the first N clients (None: all).
    seed: Seed of every cell.
    keep_checkpoints: Keep checkpoints and client states of finished cells
      (they are large: one model per client).
    reuse_computations: Cells whose process or evaluation builders receive
      the same inputs share the built computations (one
      `computation_cache.ComputationCache` per grid); False builds them per
      cell.
    config_overrides: `ExperimentConfig` fields set in every cell (over the
      dataset preset, under the cell's own options), e.g.
      `QUICK_CONFIG_OVERRIDES`.
    derive_rows: Run one Ditto cell per Table 1 column
      (`derived_source_cell`: per-device lambda with report lambdas) instead
      of the column's Global, Local, Ditto (lambda=1) and Ditto (lambda auto)
      cells (and Figure 6's joint-solver cells in its column), and one per
      Table 3 column and robust aggregator X instead of its Robust (X) /
      X, Ditto + X (lambda=1) and Ditto + X (lambda auto) cells, and report
      those rows from them (`plan_derived_rows`). A cell whose folder
      already holds a run (finished or not) still runs and reports on its
      own.
  """

  def rounds_for(
      self, dataset: str, column: Optional[Column] = None
  ) -> Optional[int]:
    """Rounds per cell of `dataset`, or of its `column` (None: the preset)."""
    if column is not None and (dataset, column) in self.column_rounds:
      return self.column_rounds[(dataset, column)]
    return self.dataset_rounds.get(dataset, self.rounds)

  def describe_rounds(self) -> str:
    """'300 rounds per cell', 'femnist 300, vehicle preset rounds', ..."""
    default = (
        f'{self.rounds} rounds per cell'
        if self.rounds is not None
        else 'preset rounds per dataset'
    )
    named = [
        f'{dataset} {rounds} rounds'
        for dataset, rounds in self.dataset_rounds.items()
    ]
    named += [
        f'{dataset} {column_label(*column)} {rounds} rounds'
        for (dataset, column), rounds in self.column_rounds.items()
    ]
    if not named:
      return default
    return f'{", ".join(named)}; other datasets: {default}'

  data_dir: Optional[str]
  runs_dir: str
  rounds: Optional[int] = None
  dataset_rounds: Mapping[str, int] = dataclasses.field(default_factory=dict)
  column_rounds: ColumnRounds = dataclasses.field(default_factory=dict)
  eval_every: Optional[int] = None
  max_clients: Optional[int] = None
  seed: int = 0
  keep_checkpoints: bool = False
  reuse_computations: bool = True
  config_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  derive_rows: bool = False


# What `scripts/reproduce.py --quick` changes besides rounds and clients: a
# smoke test of the pipeline needs every code path, not the full work per
# round (fewer clients per round, local and fine-tuning steps).
QUICK_CONFIG_OVERRIDES = dict(
    clients_per_round=5, local_steps=2, finetune_steps=5
)


def describe_overrides(overrides: Mapping[str, Any]) -> str:
  """'name=value, ...' of config overrides, for help texts and reports."""
  return ', '.join(f'{name}={value}' for name, value in overrides.items())


def _config_fields() -> set[str]:
  return {f.name for f in dataclasses.fields(training_config.ExperimentConfig)}


def _available_methods() -> tuple[str, ...]:
  return tuple(names.METHODS)


def cell_config(cell: Cell, settings: RunSettings):
  """The validated ExperimentConfig of a cell, or a reason it cannot run.

  Returns:
    (config, None) or (None, 'not run: ...').
  """
  if cell.method not in _available_methods():
    return None, f'not run: method unavailable ({cell.method})'
  missing = [name for name, _ in cell.options if name not in _config_fields()]
  if missing:
    return None, f'not run: option unavailable ({", ".join(missing)})'
  rounds = settings.rounds_for(cell.dataset, (cell.attack, cell.ratio))
  overrides = dict(
      attack=cell.attack,
      attack_ratio=cell.ratio,
      aggregator=cell.aggregator,
      seed=settings.seed,
      rounds=rounds,
      eval_every=settings.eval_every,
  )
  overrides.update(settings.config_overrides)
  overrides.update(dict(cell.options))
  if rounds is not None and settings.eval_every is None:
    overrides['eval_every'] = rounds
  try:
    (config,) = experiment_defaults.build_configs(
        cell.dataset, [cell.method], overrides
    )
  except (ValueError, TypeError) as error:
    return None, f'not run: {error}'
  return config, None


# Fraction of each client's training data every cell holds out for
# validation (per-device lambda selection and tuning).
VALIDATION_FRACTION = 0.1


def dataset_settings(cell: Cell, settings: RunSettings) -> dict[str, Any]:
  """How a cell's dataset is loaded: `load_dataset` keyword arguments.

  Recorded in the cell's `cell.json` so that a finished cell can be loaded
  again (e.g. by `scripts/evaluate_run.py`) without the grid's flags.
  """
  return dict(
      name=cell.dataset,
      data_dir=(
          None
          if cell.dataset.startswith('synthetic') or settings.data_dir is None
          else os.path.realpath(settings.data_dir)
      ),
      validation_fraction=VALIDATION_FRACTION,
      seed=settings.seed,
      max_clients=settings.max_clients,
  )


def cell_dir(cell: Cell, settings: RunSettings) -> str:
  return os.path.join(settings.runs_dir, cell.dataset, cell.cell_id)


# Config fields a cell may change between invocations: asking for more
# rounds continues a finished cell (and the evaluation period follows them);
# the checkpoint period changes no result (its default went from 1 to 10).
_RESUMABLE_CONFIG_FIELDS = ('rounds', 'eval_every', 'checkpoint_every')


def recorded_config_values(config) -> dict[str, Any]:
  """The JSON form of the config a cell runs with, as its files record it."""
  return json.loads(
      json.dumps(
          dataclasses.asdict(config_equivalence.effective_config(config))
      )
  )


def read_record(directory: str, name: str) -> dict[str, Any]:
  """A cell folder's JSON file (cell.json, summary.json), {} when absent."""
  path = os.path.join(directory, name)
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _config_differences(
    recorded: Mapping[str, Any], config, ignored: Sequence[str] = ()
) -> list[str]:
  """'name recorded (now value)' for each config field that changed.

  A field missing from the record was added to `ExperimentConfig` after the
  cell ran; the cell ran with the behaviour of that time: the field's
  `training_config.VALUES_BEFORE_FIELD_EXISTED` entry, else its default (new
  fields usually keep the old behaviour by default), so it is compared as
  that. Fields in `ignored` (and `_RESUMABLE_CONFIG_FIELDS`) are not
  compared.
  """
  defaults = recorded_config_values(
      training_config.ExperimentConfig(method=config.method)
  )
  defaults.update(training_config.VALUES_BEFORE_FIELD_EXISTED)
  differences = []
  for name, value in recorded_config_values(config).items():
    before = recorded.get(name, defaults[name])
    if (
        name not in _RESUMABLE_CONFIG_FIELDS
        and name not in ignored
        and before != value
    ):
      differences.append(f'{name} {before!r} (now {value!r})')
  return differences


def recorded_settings_mismatch(
    directory: str, cell: Cell, config, settings: RunSettings
) -> Optional[str]:
  """Why the cell's folder holds a run of other settings, or None.

  A cell's id names its dataset, method, attack and options, not the grid's
  settings (clients kept, seed, `config_overrides` such as --quick's);
  reusing or resuming a cell run under other settings would mix them up.
  The data folder itself is not compared: it may move, or be reached by
  another path.

  Args:
    directory: The cell's folder (`cell_dir`).
    cell: The cell.
    config: The `ExperimentConfig` it would run with now.
    settings: The grid's settings now.

  Returns:
    None when nothing recorded contradicts the settings, else a
    'failed: ...' status naming the differences.
  """
  differences = []
  cell_record = read_record(directory, 'cell.json')
  recorded = cell_record.get('dataset_settings')
  if recorded is not None:
    now = dataset_settings(cell, settings)
    differences += [
        f'{name} {recorded.get(name)!r} (now {value!r})'
        for name, value in now.items()
        if name != 'data_dir' and recorded.get(name) != value
    ]
  # The summary's config, else the one cell.json records when the cell
  # starts (an unfinished cell; cells started by older code recorded only
  # the dataset settings, and then there is nothing to compare until the
  # summary).
  summary = read_record(directory, 'summary.json')
  recorded_config = summary.get('config')
  # A cell finished at the rounds asked for is only reported: fields that
  # change no reported number may differ. Resuming or continuing one mixes
  # them up.
  finished = (
      recorded_config is not None and summary.get('rounds') == config.rounds
  )
  if recorded_config is None:
    recorded_config = cell_record.get('config')
  if recorded_config is not None:
    differences += _config_differences(
        recorded_config,
        config,
        (
            config_equivalence.FIELDS_NOT_CHANGING_REPORTED_RESULTS
            if finished
            else ()
        ),
    )
  if not differences:
    return None
  return (
      f'failed: {directory} holds a run with other settings: '
      + ', '.join(differences)
      + '; move it away or use another --runs_dir'
  )
