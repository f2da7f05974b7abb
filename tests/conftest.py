"""Test settings: strict dtype and rank promotion (silent broadcasting bugs fail loudly)."""

import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py, tests/reference.py
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from helpers import xla_flags  # noqa: E402  (imports jax; its backend starts later)

os.environ.setdefault('XLA_FLAGS', xla_flags(8))
# One fresh compilation cache for the session, outside the user's home: the controller makes
# it, xdist's workers and the `hinge_jax.main` subprocesses inherit it, so a program the
# suite builds twice (configs of the same shapes, a rerun) compiles once.
if 'HINGE_JAX_CACHE_DIR' not in os.environ:
  os.environ['HINGE_JAX_CACHE_DIR'] = tempfile.mkdtemp(prefix='hinge_jax_test_cache_')
  atexit.register(shutil.rmtree, os.environ['HINGE_JAX_CACHE_DIR'], ignore_errors=True)

import jax  # noqa: E402
import pytest  # noqa: E402

from hinge_jax import compile_cache  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
jax.config.update('jax_numpy_dtype_promotion', 'strict')


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


@pytest.fixture(scope='session')
def reference_run(tmp_path_factory):
  """`reference_run(config)`: the workdir of an uninterrupted run of `config`, trained once a
  session (and xdist worker) for each config; interrupted runs are compared against it.
  Read-only for tests."""
  from hinge_jax import experiment
  runs = {}

  def run(config):
    key = config.to_json(sort_keys=True)
    if key not in runs:
      runs[key] = tmp_path_factory.mktemp('reference')
      experiment.train_and_evaluate(config, str(runs[key]), log=lambda line: None)
    return runs[key]
  return run


@pytest.fixture(scope='session')
def cifar_dir(tmp_path_factory):
  """A data_dir holding a small `cifar-10-batches-py` in the original pickled format: 40
  images in each of data_batch_1..5, 40 in test_batch, and batches.meta. Returns
  `(data_dir, written)`: `written` holds the HWC images and labels as `cifar.read_folder`
  should decode them. Read-only for tests (the first load writes its .npy cache there)."""
  from helpers import write_cifar_folder
  root = tmp_path_factory.mktemp('cifar')
  _, written = write_cifar_folder(root, per_batch=40, num_test=40)
  return str(root), written


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """A TFDS data_dir with `mnist` and `fashion_mnist` prepared by `hinge_jax.prepare` (its
  TensorFlow check and download replaced through prepare's own seams, see
  helpers.prepare_tfds): ArrayRecord files, dataset_info.json and the .npy cache; 60
  training and 20 test images of 28×28×1 each. Returns `(data_dir, splits written)`."""
  pytest.importorskip('tensorflow_datasets')
  from helpers import image_splits, prepare_tfds
  root = str(tmp_path_factory.mktemp('tfds'))
  written = {}
  for seed, name in enumerate(('mnist', 'fashion_mnist')):
    written[name] = image_splits((28, 28, 1), num_train=60, num_test=20, seed=seed)
    prepare_tfds(name, root, written[name])
  return root, written


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: two workers a core. Many tests wait on subprocesses (several processes over
  gloo, killed runs, the browser), and a second worker a core fills those waits."""
  del config
  return 2 * (os.cpu_count() or 1)


# In-process runs reuse compiled programs across tests and workers, as the subprocesses do.
compile_cache.enable(os.environ['HINGE_JAX_CACHE_DIR'], log=lambda line: None)
