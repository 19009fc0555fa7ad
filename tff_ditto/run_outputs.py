"""What a run writes into its output directory, and the directory's rules.

* `metrics.csv`: one row per round (`tff.program.CSVFileReleaseManager`,
  which also truncates rows past a resumed round);
* `tensorboard/`: the same rows' finite numeric scalars as TensorBoard
  scalars, step = round (`tff.program.TensorBoardReleaseManager`);
* `summary.json`: the final summary and the configuration;
* `curves.png`: the run's loss and accuracy curves (`tff_ditto.run_curves`).

The per-client table (`client_metrics.csv`) is the evaluation's
(`tff_ditto.run_evaluation`), the checkpoints and client states are
`tff_ditto.checkpoints`' and `tff_ditto.client_states`'.

An output directory that holds results is only continued (resume) or
replaced (overwrite) on request (`prepare_output_dir`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_federated as tff

from tff_ditto import checkpoints
from tff_ditto import crash_safety

METRICS_FILE = 'metrics.csv'
TENSORBOARD_DIRECTORY = 'tensorboard'
SUMMARY_FILE = 'summary.json'
CURVES_FILE = 'curves.png'
# The metrics rows' key: the round (0-based), also TensorBoard's step.
KEY_FIELD = 'round'


def prepare_output_dir(output_dir: str, resume: bool, overwrite: bool) -> None:
  """Creates `output_dir`, or clears it, or leaves it to be continued.

  Args:
    output_dir: The run's output directory.
    resume: The run continues the results in it.
    overwrite: Delete the results in it first (unless `resume`).

  Raises:
    checkpoints.OutputDirectoryError: If `output_dir` holds results and
      neither `resume` nor `overwrite` is set.
  """
  if os.path.isdir(output_dir) and os.listdir(output_dir):
    if overwrite and not resume:
      shutil.rmtree(output_dir)
    elif not resume:
      raise checkpoints.OutputDirectoryError(
          f'{output_dir} already holds results; pass --resume to continue '
          'that run or --overwrite to replace it.'
      )
  os.makedirs(output_dir, exist_ok=True)


def finite_scalars(row: Mapping[str, Any]) -> dict[str, Any]:
  """The entries of a metrics row that are finite numeric scalars.

  Args:
    row: A metrics row.

  Returns:
    Its booleans, integers and finite floats (NaN marks what does not apply
    to a run, e.g. the personal train loss of `global`), key field aside.
  """
  scalars = {}
  for key, value in row.items():
    array = np.asarray(value)
    if (
        key == KEY_FIELD
        or array.shape
        or array.dtype.kind not in ('b', 'i', 'u', 'f')
    ):
      continue
    if array.dtype.kind == 'f' and not math.isfinite(float(array)):
      continue
    scalars[key] = value
  return scalars


class TensorBoardScalarsReleaseManager(tff.program.TensorBoardReleaseManager):
  """TFF's TensorBoard release manager for metrics rows: scalars only.

  Releases each row's `finite_scalars` (TFF's manager would write arrays as
  histograms), and flushes its summary writer on request (TF flushes every
  10 events or 2 minutes).
  """

  async def release(self, value: Mapping[str, Any], key: int) -> None:
    """Releases the finite numeric scalars of a metrics row.

    Args:
      value: The row.
      key: The round (TensorBoard's step).
    """
    await super().release(finite_scalars(value), key)

  def flush(self) -> None:
    """Writes the events released so far to the event file."""
    self._summary_writer.flush()


class MetricsReleaser:
  """Releases a run's metrics rows to `metrics.csv` and TensorBoard.

  Attributes:
    csv: The `tff.program.CSVFileReleaseManager` of `metrics.csv`.
    tensorboard: The release manager of `tensorboard/`.
    manager: Both, as one `tff.program.GroupingReleaseManager`.
  """

  def __init__(self, output_dir: str):
    """Opens the run's metrics files (the event file is a new one).

    Args:
      output_dir: The run's output directory.
    """
    self.csv = tff.program.CSVFileReleaseManager(
        os.path.join(output_dir, METRICS_FILE), key_fieldname=KEY_FIELD
    )
    self.tensorboard = TensorBoardScalarsReleaseManager(
        os.path.join(output_dir, TENSORBOARD_DIRECTORY)
    )
    self.manager = tff.program.GroupingReleaseManager(
        [self.csv, self.tensorboard]
    )

  async def release(self, row: Mapping[str, Any], round_num: int) -> None:
    """Releases one round's row.

    Args:
      row: The round's metrics.
      round_num: The round.
    """
    await self.manager.release(row, key=round_num)

  def flush(self) -> None:
    """Puts what was released on disk (the CSV file always is)."""
    self.tensorboard.flush()


def json_default(value: Any) -> Any:
  """`json.dumps`' `default` for the NumPy values of a summary.

  Args:
    value: A value `json` cannot write.

  Returns:
    Its Python equivalent.

  Raises:
    TypeError: For anything but NumPy integers, floats and arrays.
  """
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  raise TypeError(f'Not JSON serializable: {type(value)}')


def write_summary(output_dir: str, summary: Mapping[str, Any]) -> None:
  """Writes `summary.json` (atomically).

  Args:
    output_dir: The run's output directory.
    summary: The run's summary.
  """
  crash_safety.write_atomically(
      os.path.join(output_dir, SUMMARY_FILE),
      json.dumps(summary, indent=2, default=json_default),
  )
