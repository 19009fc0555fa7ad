"""A finished cell's files, written by hand for the report's tests."""

import os

import pandas as pd

from tff_ditto.reproduction import report as report_lib


def write_client_metrics(directory, accuracies, malicious) -> None:
  """Writes `directory`/client_metrics.csv: clients c0, c1, ... in order.

  Args:
    directory: The cell's folder (created; must not exist).
    accuracies: Each client's final test accuracy.
    malicious: Whether each client is malicious.
  """
  os.makedirs(directory)
  pd.DataFrame(
      dict(
          client_id=[f'c{i}' for i in range(len(accuracies))],
          accuracy=accuracies,
          malicious=malicious,
      )
  ).to_csv(os.path.join(directory, 'client_metrics.csv'), index=False)


def write_test_report(
    results, output_dir, datasets, unavailable_datasets=None, **kwargs
) -> str:
  """`report.write_report` with a test's command, mode and repository.

  Args:
    results: The grid's result rows.
    output_dir: Where the report goes (its folder is also the repository
      whose commit the report names: none).
    datasets: The datasets to report.
    unavailable_datasets: {dataset: why not run}; default none.
    **kwargs: `write_report`'s other arguments (`runs_dir`, ...).

  Returns:
    The path of REPORT.md.
  """
  return report_lib.write_report(
      results,
      str(output_dir),
      command='test',
      mode='test',
      repo_dir=str(output_dir),
      datasets=datasets,
      unavailable_datasets=unavailable_datasets or {},
      elapsed_seconds=1.0,
      **kwargs,
  )
