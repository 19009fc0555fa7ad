"""A finished cell's files, written by hand for the report's tests."""

import os

import pandas as pd


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
