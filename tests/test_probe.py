"""The linear-probe protocol (`configs/probe.py`, `hinge_jax/probe.py`) against scikit-learn.

One end-to-end run on a float16 embeddings folder the test writes: every λ's validation
accuracy, the chosen λ and the refit's test accuracy equal those of scikit-learn's
`LogisticRegression` (lbfgs, tight tol) at C = 1/(2·λ·N), the mapping `probe.sklearn_c`
states. Bad grids and bad features are one line each, before anything is compiled.
"""

import csv
import json
import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from configs import probe as probe_config
from helpers import run_main, write_embeddings
from hinge_jax import config_lib, main, probe
from hinge_jax.errors import ConfigError, DataError

GRID = [1e-3, 1e-2, 1e-1, 1.0, 10.0]


def _config(path, **fields):
  return config_lib.with_fields(probe_config.get_config('refit'), {
      'dataset.path': str(path), 'probe.lambdas': ','.join(map(repr, GRID)), **fields})


def _sklearn(x, y, strength):
  model = LogisticRegression(C=probe.sklearn_c(strength, len(y)), tol=1e-10, max_iter=10_000)
  return model.fit(x, y)


def test_probe_chooses_lambda_and_tests_like_scikit_learn(tmp_path):
  data = write_embeddings(tmp_path / 'emb')
  workdir = tmp_path / 'run'
  main.train(_config(tmp_path / 'emb'), str(workdir))
  record = json.loads((workdir / 'probe.json').read_text())

  (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = data['train'], data['val'], data['test']
  fits = [_sklearn(x_tr, y_tr, lam) for lam in GRID]
  val = [float(np.mean(m.predict(x_va) == y_va)) for m in fits]
  assert record['lambdas'] == GRID
  assert all(record['converged']) and record['refit']['convergence']['converged']
  np.testing.assert_allclose(record['val_accuracy'], val, atol=1e-12)
  best = int(np.argmax(val))  # unique here: 0.8725 at λ = 1
  assert record['chosen_member'] == best and record['chosen_lambda'] == GRID[best]
  assert record['chosen_sklearn_C'] == pytest.approx(probe.sklearn_c(GRID[best], len(y_tr)))
  assert record['test_accuracy_train_only'] == pytest.approx(
      np.mean(fits[best].predict(x_te) == y_te))

  # the refit: train + val at the same C, i.e. λ·N_train/(N_train + N_val)
  n_all = len(y_tr) + len(y_va)
  refit = record['refit']
  assert refit['train_examples'] == n_all
  assert refit['reg_strength'] == pytest.approx(GRID[best] * len(y_tr) / n_all)
  joined = _sklearn(np.r_[x_tr, x_va], np.r_[y_tr, y_va], refit['reg_strength'])
  assert refit['test_accuracy'] == pytest.approx(np.mean(joined.predict(x_te) == y_te))
  assert record['test_accuracy'] == refit['test_accuracy']
  with np.load(workdir / 'probe_params.npz') as params:
    np.testing.assert_allclose(params['W'], joined.coef_, atol=2e-3)

  with open(workdir / 'sweep.csv') as f:
    rows = list(csv.DictReader(f))
  assert [float(r['reg.strength']) for r in rows] == GRID
  png = (workdir / 'plots' / 'probe.png').read_bytes()
  assert png[:8] == b'\x89PNG\r\n\x1a\n'


GRID_ERRORS = {
    'explicit empty': ({'probe.lambdas': ' , '}, 'the λ grid is empty'),
    'explicit zero': ({'probe.lambdas': '1e-3,0'}, 'holds 0: the λ grid is on a log scale'),
    'explicit negative': ({'probe.lambdas': '-1'}, 'every value must be positive'),
    'explicit text': ({'probe.lambdas': '1e-3,big'}, "'big' is not a number"),
    'no values': ({'probe.num_lambdas': 0}, 'probe.num_lambdas=0: the λ grid is empty'),
    'zero bound': ({'probe.lambda_min': 0.0}, 'probe.lambda_min=0.0: the λ grid is on a log'),
    'negative bound': ({'probe.lambda_max': -1.0}, 'its bounds must be positive'),
    'swapped bounds': ({'probe.lambda_min': 1.0, 'probe.lambda_max': 1e-3}, 'swap them'),
    'sweep declared': ({'sweep.grid': 'reg.strength=1,2'}, 'clear sweep.grid'),
}


@pytest.mark.parametrize('case', sorted(GRID_ERRORS))
def test_bad_grid_is_one_line_before_anything_runs(tmp_path, case):
  fields, message = GRID_ERRORS[case]
  config = config_lib.with_fields(probe_config.get_config(), {
      'dataset.path': str(tmp_path / 'missing'), **fields})
  with pytest.raises(ConfigError) as e:
    main.train(config, str(tmp_path / 'run'))
  assert message in str(e.value) and '\n' not in str(e.value), str(e.value)
  assert not os.path.exists(tmp_path / 'run')  # refused before the workdir is made


def test_log_grid_spans_the_bounds():
  config = config_lib.with_fields(probe_config.get_config(), {
      'probe.lambda_min': 1e-4, 'probe.lambda_max': 1e-1, 'probe.num_lambdas': 4})
  np.testing.assert_allclose(probe.lambdas(config), [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-12)
  one = config_lib.with_fields(config, {'probe.num_lambdas': 1})
  assert probe.lambdas(one) == [1e-4]


def _small_embeddings(folder, *, nan=False, drop=()):
  """A small embeddings folder (40/20/20 rows); `nan`: one NaN in x_val; `drop`: files removed."""
  write_embeddings(folder, n=(40, 20, 20))
  if nan:
    x = np.load(folder / 'x_val.npy')
    x[3, 2] = np.nan
    np.save(folder / 'x_val.npy', x)
  for name in drop:
    os.remove(folder / name)
  return folder


def test_bad_features_are_one_line_on_the_command_line(tmp_path):
  folder = _small_embeddings(tmp_path / 'emb', nan=True)
  np.save(folder / 'x_test.npy', np.load(folder / 'x_test.npy')[:, None, :])
  result = run_main('--config=configs/probe.py', f'--config.dataset.path={folder}',
                    f'--workdir={tmp_path / "run"}')
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  assert 'x_test has shape (20, 1, 24) (rank 3); features must be (N, D)' in lines[0]


def test_an_empty_validation_split_is_refused(tmp_path):
  folder = _small_embeddings(tmp_path / 'emb', drop=('x_val.npy', 'y_val.npy', 'x_test.npy',
                                                     'y_test.npy'))
  config = _config(folder, **{'dataset.val_fraction': 0.0})
  with pytest.raises(DataError, match='the validation split is empty, and the probe chooses'):
    main.train(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_nan_features_are_refused(tmp_path):
  folder = _small_embeddings(tmp_path / 'emb', nan=True)
  with pytest.raises(DataError, match=r'the features hold 1 NaN or infinite values \(val: 1'):
    main.train(_config(folder), str(tmp_path / 'run'))
