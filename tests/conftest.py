"""Test configuration: quiet logs and one owned TFF worker for the session."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # noqa: E402

from tff_ditto import models  # noqa: E402
from tff_ditto import runtime  # noqa: E402
from tff_ditto.data import load_dataset  # noqa: E402


@pytest.fixture(scope='session', autouse=True)
def tff_local_worker():
  runtime.set_quiet_logs(0)
  runtime.configure_local_execution(max_concurrent_computation_calls=2)
  yield
  runtime.stop_started_workers()


@pytest.fixture(scope='session')
def synthetic_six_clients():
  """The first 6 clients of the embedded Synthetic(1, 1) data."""
  full = load_dataset('synthetic')
  return full.subset(full.client_ids[:6])


@pytest.fixture(scope='session')
def synthetic_model_fn():
  """The seeded Synthetic logistic-regression model builder."""
  return models.get_model_spec('synthetic', seed=0).tff_model_fn()
