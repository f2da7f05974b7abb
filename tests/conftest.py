"""Test settings: strict dtype and rank promotion (silent broadcasting bugs fail loudly)."""

import os
import sys
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
# Runs of `hinge_jax.main` in subprocesses share a compilation cache outside the user's home.
os.environ.setdefault('HINGE_JAX_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'hinge_jax_test_jax_cache'))

import jax  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

jax.config.update('jax_numpy_rank_promotion', 'raise')


@pytest.fixture
def x64():
  """Runs a test with float64 enabled (numerical references need it)."""
  with jax.enable_x64(True):
    yield


@pytest.fixture
def repo():
  return REPO


@pytest.fixture(scope='session')
def digits():
  """The default config's dataset (scikit-learn's digits, split as configs/default.py says)."""
  from helpers import default_config
  from hinge_jax import datasets
  return datasets.load(default_config().dataset)


# In-process runs reuse compiled programs across tests and workers, as the subprocesses do.
from hinge_jax import compile_cache  # noqa: E402

compile_cache.enable(os.environ['HINGE_JAX_CACHE_DIR'])
