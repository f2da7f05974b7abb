"""L-BFGS reaches scikit-learn's optimum on digits, side by side, at three values of C.

scikit-learn minimizes ½‖W‖² + C·Σᵢ loss_i; hinge_jax minimizes (1/N)·Σᵢ loss_i + λ·ΣW²
(no ½: regularizers.py). Times C·N they agree when λ = 1/(2·C·N). Both optima are evaluated
by the same float64 NumPy function below (not hinge_jax's code), on the same features.

- softmax + L2 ↔ LogisticRegression(lbfgs, multinomial): its intercept is not penalized,
  so `reg.regularize_bias=False`.
- squared one-vs-all + L2 ↔ LinearSVC(loss='squared_hinge'): liblinear's intercept is a
  constant-1 feature (intercept_scaling=1) and is penalized, so `reg.regularize_bias=True`.

The three values of C train as one vmapped program of three members.
"""

import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from hinge_jax.train import Trainer
from helpers import default_config

CS = (0.1, 1.0, 10.0)


def features(dataset, split: str) -> np.ndarray:
  """hinge_jax's model features in float64: (x − training mean)·scale."""
  return (dataset.x[split].astype(np.float64) - dataset.mean.astype(np.float64)) * float(
      dataset.scale)


def softmax_objective(w, b, x, y, lam):
  s = x @ w.T + b
  return np.mean(logsumexp(s, axis=1) - s[np.arange(len(y)), y]) + lam * np.sum(w * w)


def squared_ova_objective(w, b, x, y, lam):
  """mean_i Σ_j max(0, 1 − t_ij s_ij)² + λ(‖W‖² + ‖b‖²), t = ±1 (the bias penalized)."""
  s = x @ w.T + b
  t = 2 * np.eye(w.shape[0])[y] - 1
  return np.mean(np.sum(np.maximum(0.0, 1 - t * s) ** 2, axis=1)) + lam * (
      np.sum(w * w) + np.sum(b * b))


CASES = {
    'softmax': dict(
        fields={'loss.name': 'softmax_cross_entropy', 'reg.regularize_bias': False},
        objective=softmax_objective,
        sklearn=lambda c: LogisticRegression(C=c, tol=1e-8, max_iter=10_000)),
    'squared_one_vs_all': dict(
        fields={'loss.name': 'one_vs_all', 'loss.squared': True, 'reg.regularize_bias': True},
        objective=squared_ova_objective,
        sklearn=lambda c: LinearSVC(C=c, loss='squared_hinge', penalty='l2', dual=False,
                                    tol=1e-10, max_iter=100_000)),
}


@pytest.fixture(scope='module', params=sorted(CASES))
def side_by_side(request, digits):
  """(case, λ per C, hinge_jax's (W, b) per C, scikit-learn's fitted models)."""
  case = CASES[request.param]
  n = digits.size('train')
  lams = [1 / (2 * c * n) for c in CS]
  base = {'optimizer.name': 'lbfgs', 'batch_size': 0, 'num_steps': 1000,
          'eval_every_steps': 1000, 'stop.tol': 1e-9, 'stop.check_every': 10, **case['fields']}
  members = [default_config(**base, **{'reg.strength': lam}) for lam in lams]
  trainer = Trainer.create(members[0], digits, members)
  state = trainer.fit(trainer.init())
  ours = [(np.asarray(state.params['W'][j], np.float64), np.asarray(state.params['b'][j],
                                                                    np.float64))
          for j in range(len(CS))]
  x, y = features(digits, 'train'), digits.y['train']
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # FutureWarnings about defaults we set explicitly
    theirs = [case['sklearn'](c).fit(x, y) for c in CS]
  assert trainer.convergence_record.converged.all()
  return case, lams, ours, theirs


@pytest.mark.parametrize('j', range(len(CS)), ids=[f'C={c:g}' for c in CS])
def test_same_objective_as_scikit_learn(side_by_side, digits, j):
  case, lams, ours, theirs = side_by_side
  x, y = features(digits, 'train'), digits.y['train']
  want = case['objective'](theirs[j].coef_, theirs[j].intercept_, x, y, lams[j])
  got = case['objective'](*ours[j], x, y, lams[j])
  assert abs(got - want) <= 1e-6 * abs(want), (got, want)


@pytest.mark.parametrize('j', range(len(CS)), ids=[f'C={c:g}' for c in CS])
def test_same_test_accuracy_as_scikit_learn(side_by_side, digits, j):
  _, _, ours, theirs = side_by_side
  x, y = features(digits, 'test'), digits.y['test']
  w, b = ours[j]
  assert np.mean(np.argmax(x @ w.T + b, axis=1) == y) == np.mean(theirs[j].predict(x) == y)
