"""Test configuration: quiet logs and one owned TFF worker for the session."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # noqa: E402

from tff_ditto import runtime  # noqa: E402


@pytest.fixture(scope='session', autouse=True)
def tff_local_worker():
  runtime.set_quiet_logs(0)
  runtime.configure_local_execution(max_concurrent_computation_calls=2)
  yield
  runtime.stop_started_workers()
