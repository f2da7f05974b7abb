"""Every shipped config runs, for a few steps, on the real file layout.

Each file in configs/ (and each `:arg` variant a config names) is loaded as `main` loads
it, and only the step counts, the split/batch sizes and the data directory are changed:
CIFAR-10 configs read a small `cifar-10-batches-py` in the original pickled format, MNIST
configs a small TFDS directory prepared by `hinge_jax.prepare` (conftest's fixtures). The run
goes through the same function `main` calls; its outputs must show the config's own settings.
A config whose docstring shows an `error:` line (its lesson is a refusal) must stop with it.
"""

import ast
import glob
import importlib
import json
import os
import re

import numpy as np
import pytest

from hinge_jax import experiment, probe, sweep
from hinge_jax.errors import UserError
from helpers import REPO

CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))
NUM_STEPS = 4
CIFAR_SIZES = {'num_train': 160, 'num_val': 40}  # of the fixture's 200 training images
MNIST_SIZES = {'num_train': 40, 'num_val': 10}  # of its 60
MAX_BATCH, MAX_DEV = 20, 10
# Variants that another test runs end to end with stronger checks.
COVERED_ELSEWHERE = {('probe', 'refit')}  # test_probe.py: against scikit-learn
MEMBERS_PER_PROGRAM = 8  # every sweep, coarse or fine, runs the same size of compiled program



def _compared_with_arg(tree) -> set:
  """String literals a config compares its `arg` with (`arg == 'fine'`, `arg in (...)`)."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == 'arg':
      for right in node.comparators:
        items = right.elts if isinstance(right, (ast.Tuple, ast.List, ast.Set)) else [right]
        found |= {i.value for i in items if isinstance(i, ast.Constant)
                  and isinstance(i.value, str) and i.value}
  return found


def _variants(path: str) -> list:
  """The `:arg` variants of a config: those its code tests for, and those its text names
  (`configs/<file>.py:<arg>`)."""
  with open(path) as f:
    text = f.read()
  stem = os.path.basename(path)[:-3]
  named = set(re.findall(rf'configs/{re.escape(stem)}\.py:(\w+)', text))
  return sorted(named | _compared_with_arg(ast.parse(text)))


def _load(stem: str, arg):
  return importlib.import_module(f'configs.{stem}').get_config(arg)


def _documented_error(stem: str):
  """The `error: ...` line a config's docstring says it stops with (its text before ' ...')."""
  doc = importlib.import_module(f'configs.{stem}').__doc__ or ''
  found = re.search(r'^\s*error: (.+?)(?: \.\.\.)?$', doc, re.M)
  return found.group(1) if found else None


def _cases() -> list:
  """Every config file, then every variant: a variant mostly reuses its file's programs, which
  by then are in the compilation cache that xdist's workers share."""
  files, variants = [], []
  for path in CONFIG_FILES:
    stem = os.path.basename(path)[:-3]
    files.append(pytest.param(stem, None, id=f'{stem}.py'))
    plain = _load(stem, None).to_dict()
    for arg in _variants(path):
      if (stem, arg) in COVERED_ELSEWHERE:
        continue
      if _load(stem, arg).to_dict() != plain:  # a variant that only names the default is the same run
        variants.append(pytest.param(stem, arg, id=f'{stem}.py:{arg}'))
  return files + variants


def test_every_config_file_and_variant_is_collected():
  ids = {p.id for p in _cases()}
  assert {os.path.basename(p) for p in CONFIG_FILES} <= ids
  assert _documented_error('cifar10_numerical_gradient') == (
      'strategy=numerical_gradient needs 2·30730 = 61460 loss evaluations per step')
  for known in ('cifar10_svm_sweep.py:fine', 'cifar10_softmax_sweep.py:fine',
                'mnist_svm.py:fashion_mnist', 'digits_features.py:pixels_hog',
                'cifar10_features_svm.py:single', 'cifar10_svm.py:full_test'):
    assert known in ids


# ----------------------------------------------------------------------- independent expectations


def _grid_size(config) -> int:
  """Members of a `sweep.grid` ('a=1,2; b=3,4,5' → 6), counted from the text."""
  n = 1
  for axis in filter(None, (a.strip() for a in config.sweep.grid.split(';'))):
    n *= len(axis.split('=', 1)[1].split(','))
  return n


def _num_features(ds, image_shape) -> int:
  """D as the model sees it, from the config's feature settings and the image shape."""
  if len(image_shape) == 1:  # (N, D) features: D values
    return image_shape[0] + int(ds.bias_trick)
  h, w = image_shape[:2]
  sizes = {'pixels': int(np.prod(image_shape)), 'hue_hist': ds.hue_bins,
           'hog': (h // ds.hog_cell) * (w // ds.hog_cell) * ds.hog_bins}
  dim = sum(sizes[f] for f in ds.features) if ds.features else int(np.prod(image_shape))
  return dim + int(ds.bias_trick)


@pytest.fixture(scope='session')
def npy_dir(tmp_path_factory):
  """Embeddings for the `npy` configs (configs/probe.py): float16, D = 12, 10 classes."""
  root = tmp_path_factory.mktemp('npy')
  rng = np.random.default_rng(0)
  for split, n in (('train', 60), ('val', 30), ('test', 30)):
    np.save(root / f'x_{split}.npy', rng.standard_normal((n, 12)).astype(np.float16))
    np.save(root / f'y_{split}.npy', np.arange(n) % 10)
  return str(root)


def _shrunk(config, cifar_dir: str, tfds_dir: str, npy_dir: str = ''):
  """The config with few steps, small splits and batches, and the test's data directory.

  Returns `(config, expected)`: the split sizes and the image shape the run should report.
  """
  c = config
  c.num_steps = NUM_STEPS
  c.eval_every_steps = NUM_STEPS // 2
  c.checkpoint_every_steps = 0
  c.batch_size = min(c.batch_size, MAX_BATCH)
  c.sweep.members_per_program = MEMBERS_PER_PROGRAM
  ds = c.dataset
  if ds.name == 'cifar10':
    ds.data_dir, sizes, total_test, shape = cifar_dir, CIFAR_SIZES, 40, (32, 32, 3)
    first_class = 'plane'  # the fixture's batches.meta (the real one says 'airplane')
  elif ds.name in ('mnist', 'fashion_mnist'):
    ds.data_dir, sizes, total_test, shape = tfds_dir, MNIST_SIZES, 20, (28, 28, 1)
    first_class = '0' if ds.name == 'mnist' else 'T-shirt/top'
  elif ds.name == 'npy':
    ds.path = npy_dir
    return c, {'train': 60, 'val': 30, 'test': 30, 'shape': (12,), 'first_class': '0'}
  else:
    assert ds.name == 'digits', f'a new dataset {ds.name!r}: give it test data here'
    n_val = n_test = round(1797 * ds.val_fraction)
    assert ds.val_fraction == ds.test_fraction
    return c, {'train': 1797 - n_val - n_test, 'val': n_val, 'test': n_test, 'shape': (8, 8),
               'first_class': '0'}
  ds.num_train, ds.num_val = sizes['num_train'], sizes['num_val']
  ds.num_test = 0 if ds.num_test == 0 else total_test // 2  # 0 (all) stays all
  ds.num_dev = min(ds.num_dev, MAX_DEV)  # 0 stays 0
  return c, {'train': ds.num_train, 'val': ds.num_val, 'test': ds.num_test or total_test,
             'shape': shape, 'first_class': first_class}


# ----------------------------------------------------------------------- the runs


@pytest.mark.parametrize('stem, arg', _cases())
def test_config_runs(stem, arg, cifar_dir, tfds_dir, npy_dir, tmp_path):
  original = _load(stem, arg)
  config, expected = _shrunk(_load(stem, arg), cifar_dir[0], tfds_dir[0], npy_dir)
  workdir = str(tmp_path)
  refusal = _documented_error(stem)
  if refusal:  # the config's lesson is a refusal before training, as its docstring shows
    with pytest.raises(UserError) as e:
      experiment.train_and_evaluate(config, workdir, log=lambda *a: None)
    assert str(e.value).startswith(refusal), (str(e.value), refusal)
    assert not os.path.exists(os.path.join(workdir, 'results.json'))
    return
  if probe.is_probe(config):  # a λ sweep: the grid comes from probe.*
    record = probe.run(config, workdir, log=lambda *a: None)
    assert (record['refit'] is not None) == original.probe.refit
    original = probe.sweep_config(original, probe.lambdas(original))
    assert len(record['lambdas']) == _grid_size(original) > 1
  elif sweep.is_sweep(config):
    summary = sweep.run(config, workdir, log=lambda *a: None)
    assert len(summary['members']) == _grid_size(original) > 1
    with open(os.path.join(workdir, 'sweep.json')) as f:
      assert len(json.load(f)['members']) == len(summary['members'])
  else:
    experiment.train_and_evaluate(config, workdir, log=lambda *a: None)
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  with open(os.path.join(workdir, 'config.json')) as f:
    saved = json.load(f)
  assert np.isfinite(results['final_loss']) and not results['diverged']
  assert results['class_names'][0] == expected['first_class']  # read from the data's own files
  for split in ('train', 'val', 'test'):
    assert 0 <= results[f'{split}_accuracy'] <= 1
    assert results['splits'][split]['size'] == expected[split], split
  # The config's own settings took effect (the shrinking touched none of these).
  for section, field in (('dataset', 'name'), ('loss', 'name'), ('optimizer', 'name'),
                         ('reg', 'strength'), ('dataset', 'features'), ('sweep', 'grid')):
    assert saved[section][field] == (list(original[section][field]) if field == 'features'
                                     else original[section][field])
  assert saved['strategy'] == original.strategy and saved['num_steps'] == NUM_STEPS
  params = np.load(os.path.join(workdir, 'params.npz'))
  assert params['W'].shape == (10, _num_features(original.dataset, expected['shape']))
