"""L-BFGS reaches scikit-learn's optimum on digits, side by side, at three values of C.

scikit-learn minimizes ½‖W‖² + C·Σᵢ loss_i; hinge_jax minimizes (1/N)·Σᵢ loss_i + λ·ΣW²
(no ½: regularizers.py). Times C·N they agree when λ = 1/(2·C·N). Both optima are evaluated
by the same float64 NumPy function below (not hinge_jax's code), on the same features.

- softmax + L2 ↔ LogisticRegression(lbfgs, multinomial): its intercept is not penalized,
  so `reg.regularize_bias=False`.
- squared one-vs-all + L2 ↔ LinearSVC(loss='squared_hinge'): liblinear's intercept is a
  constant-1 feature (intercept_scaling=1) and is penalized, so `reg.regularize_bias=True`.

The three values of C train as one vmapped program of three members, each stopping on its own
(stop.tol) and frozen from then on.
"""

import warnings

import numpy as np
import pytest
import threadpoolctl
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from hinge_jax import config_lib, lbfgs
from hinge_jax.convergence import grad_norm_program, objective_and_grad_norm_f64
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
  """(case, λ per C, hinge_jax's (W, b) per C, scikit-learn's fitted models, the trainer,
  and the loop's evaluations: step → (W of every member, objective of every member as the
  convergence check reads it, from the line search))."""
  case = CASES[request.param]
  n = digits.size('train')
  lams = [1 / (2 * c * n) for c in CS]
  base = {'optimizer.name': 'lbfgs', 'batch_size': 0, 'num_steps': 1000,
          'eval_every_steps': 10, 'stop.check_every': 30, 'stop.tol': 1e-9, **case['fields']}
  members = [default_config(**base, **{'reg.strength': lam}) for lam in lams]
  trainer = Trainer.create(members[0], digits, members)
  seen = {}

  def on_eval(step, state, row):
    searched = np.asarray(lbfgs.current(state.params, state.opt_state)[0], np.float64)
    # the line search's value is the objective at the current W, as evaluated
    np.testing.assert_allclose(searched, row['loss'], rtol=1e-5)
    seen[step] = (np.array(state.params['W']), searched)
  state = trainer.fit(trainer.init(), on_eval=on_eval)
  ours = [(np.asarray(state.params['W'][j], np.float64), np.asarray(state.params['b'][j],
                                                                    np.float64))
          for j in range(len(CS))]
  x, y = features(digits, 'train'), digits.y['train']
  # one BLAS thread: these fits take milliseconds, and BLAS threads spinning on a busy
  # 2-core machine would take seconds
  with warnings.catch_warnings(), threadpoolctl.threadpool_limits(1):
    warnings.simplefilter('ignore')  # FutureWarnings about defaults we set explicitly
    theirs = [case['sklearn'](c).fit(x, y) for c in CS]
  return case, lams, ours, theirs, trainer, seen


@pytest.mark.parametrize('j', range(len(CS)), ids=[f'C={c:g}' for c in CS])
def test_same_objective_as_scikit_learn(side_by_side, digits, j):
  case, lams, ours, theirs = side_by_side[:4]
  x, y = features(digits, 'train'), digits.y['train']
  want = case['objective'](theirs[j].coef_, theirs[j].intercept_, x, y, lams[j])
  got = case['objective'](*ours[j], x, y, lams[j])
  assert abs(got - want) <= 1e-6 * abs(want), (got, want)


@pytest.mark.parametrize('j', range(len(CS)), ids=[f'C={c:g}' for c in CS])
def test_same_test_accuracy_as_scikit_learn(side_by_side, digits, j):
  _, _, ours, theirs = side_by_side[:4]
  x, y = features(digits, 'test'), digits.y['test']
  w, b = ours[j]
  assert np.mean(np.argmax(x @ w.T + b, axis=1) == y) == np.mean(theirs[j].predict(x) == y)


def test_each_member_stops_at_its_own_step_frozen_there(side_by_side):
  """A member converges when a window's relative decrease is ≤ stop.tol; it is frozen then
  (its final W is the W of that check) and the run ends when the last one converges."""
  trainer, seen = side_by_side[4:]
  record = trainer.convergence_record
  steps = record.steps.tolist()
  assert record.converged.all() and len(set(steps)) > 1 and max(steps) < 1000
  assert max(seen) == max(steps)  # no step after the last member converged
  ours = side_by_side[2]
  for j, step in enumerate(steps):
    np.testing.assert_array_equal(ours[j][0], seen[step][0][j].astype(np.float64))
    before, now = seen[step - 30][1][j], seen[step][1][j]
    assert record.window_decrease[j] == pytest.approx((before - now) / abs(before), rel=1e-12)
    assert record.window_decrease[j] <= 1e-9
    if step > 60:  # not converged at the check before
      assert (seen[step - 60][1][j] - before) / abs(seen[step - 60][1][j]) > 1e-9


@pytest.mark.parametrize('side_by_side', ['softmax'], indirect=True)
def test_gradient_norms_against_numpy(side_by_side, digits):
  """At W0 (far from the optimum): the device's float32 ‖∇f‖ that `stop.grad_tol` reads, and
  the float64 objective and ‖∇f‖ that results.json reports, against NumPy's gradient (on the
  softmax case: the code is the same for every loss, and each case costs two compilations)."""
  _, lams, _, _, trainer, _ = side_by_side
  params = trainer.init().params
  x, y = features(digits, 'train'), digits.y['train']
  want_value, want_norm = [], []
  for j, lam in enumerate(lams):
    w, b = (np.asarray(params[k][j], np.float64) for k in ('W', 'b'))
    s = x @ w.T + b
    ds = np.exp(s - logsumexp(s, axis=1, keepdims=True)) - np.eye(w.shape[0])[y]
    gw, gb = ds.T @ x / len(y) + 2 * lam * w, ds.sum(axis=0) / len(y)
    want_value.append(softmax_objective(w, b, x, y, lam))
    want_norm.append(np.sqrt(np.sum(gw * gw) + np.sum(gb * gb)))
  device = np.asarray(grad_norm_program(trainer.spec)(params, trainer.data, trainer.hp))
  np.testing.assert_allclose(device, want_norm, rtol=1e-4)
  hp = config_lib.hyper_arrays([default_config(**{'reg.strength': lam}) for lam in lams],
                               np.float64)
  value, norm = objective_and_grad_norm_f64(params, hp, digits, spec=trainer.spec)
  np.testing.assert_allclose(value, want_value, rtol=1e-12)
  np.testing.assert_allclose(norm, want_norm, rtol=1e-10)
