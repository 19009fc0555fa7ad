"""What a test shows of a subprocess that failed, for tests in any folder."""


def failure_text(stderr: str) -> str:
  """What a failed run printed: Python's fatal-error stack if it crashed.

  A crash (SIGSEGV, SIGABRT) prints the faulting threads' stacks and then a
  long list of extension modules, which a plain tail would show instead.

  Args:
    stderr: The process's standard error.

  Returns:
    The fatal-error stack without the module list, or the last 3,000
    characters when the process did not crash.
  """
  start = stderr.find('Fatal Python error')
  if start < 0:
    return stderr[-3000:]
  end = stderr.find('Extension modules', start)
  return stderr[start : end if end > 0 else None][:6000]
