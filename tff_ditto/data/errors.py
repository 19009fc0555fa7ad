"""The one exception type for bad dataset input."""


class DataError(ValueError):
  """A dataset file or directory is missing, malformed or inconsistent.

  The message always names the file (or directory) and what is wrong with it.
  """


def file_error(path: str, message: str) -> DataError:
  """The `DataError` saying `message` about the file (or directory) `path`."""
  return DataError(f'{path}: {message}')
