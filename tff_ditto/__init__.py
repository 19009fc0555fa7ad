"""tff-ditto: Ditto personalized federated learning and robust aggregation in TFF."""

import atexit as _atexit
import os as _os
import sys as _sys

# TF/TFF C++ logs are noise for users of this library; set before TensorFlow is
# imported (and inherited by TFF's worker process). An explicit user setting wins.
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')


def _silence_tff_service_manager_teardown():
  """Hides one known TFF 0.87 message printed at interpreter exit.

  TFF's default execution context holds a `ServiceManager` whose `__del__`
  runs during module teardown, after `subprocess` is gone, and prints
  "Exception ignored in ... ServiceManager.__del__ ... AttributeError". The
  worker processes tff-ditto starts are stopped by `tff_ditto.runtime`; this
  only keeps that harmless message off users' terminals.
  """
  previous_hook = _sys.unraisablehook

  def hook(unraisable):
    name = getattr(unraisable.object, '__qualname__', '')
    if name.endswith('ServiceManager.__del__'):
      return
    previous_hook(unraisable)

  _sys.unraisablehook = hook


_atexit.register(_silence_tff_service_manager_teardown)
