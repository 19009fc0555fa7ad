"""The one exception type for bad dataset input."""


class DataError(ValueError):
  """A dataset file or directory is missing, malformed or inconsistent.

  The message always names the file (or directory) and what is wrong with it.
  """
