"""optimizer.name=lbfgs: where it applies, what it refuses, and the optimum it reaches."""

import numpy as np
import pytest
from scipy.optimize import minimize

from hinge_jax import config_lib
from hinge_jax.errors import ConfigError
from hinge_jax.train import Trainer
from helpers import array_dataset, default_config

LBFGS = {'optimizer.name': 'lbfgs', 'batch_size': 0}
SMOOTH = 'use softmax_cross_entropy, or loss.squared=True with loss.name=multiclass_svm or ' \
         'one_vs_all, with reg.name=l2 or none'


@pytest.mark.parametrize('fields,needles', [
    ({'batch_size': 200}, ('needs the full batch', 'not batch_size=200', 'set batch_size=0')),
    ({'loss.name': 'multiclass_svm'}, ('loss.name=multiclass_svm with loss.squared=False is '
                                       'not differentiable', SMOOTH)),
    ({'loss.name': 'crammer_singer', 'loss.squared': True}, ('crammer_singer', SMOOTH)),
    ({'loss.name': 'softmax_cross_entropy', 'reg.name': 'l1'}, ('reg.name=l1', SMOOTH)),
    ({'loss.name': 'softmax_cross_entropy', 'reg.name': 'elastic_net'}, ('elastic_net',)),
    ({'loss.name': 'softmax_cross_entropy', 'reg.max_norm': 3.0}, ('set reg.max_norm=0',)),
    ({'loss.name': 'softmax_cross_entropy', 'strategy': 'numerical_gradient'},
     ("strategy='numerical_gradient'",)),
    ({'loss.name': 'softmax_cross_entropy', 'optimizer.memory_size': 0},
     ('optimizer.memory_size=0 must be an integer >= 1',)),
])
def test_lbfgs_is_refused_where_it_does_not_apply(fields, needles):
  with pytest.raises(ConfigError) as e:
    config_lib.validate(default_config(**{**LBFGS, **fields}))
  message = str(e.value)
  assert '\n' not in message
  for needle in needles:
    assert needle in message, message


@pytest.mark.parametrize('fields', [
    {'loss.name': 'softmax_cross_entropy'},
    {'loss.name': 'one_vs_all', 'loss.squared': True, 'reg.name': 'none'},
    {'loss.name': 'multiclass_svm', 'loss.squared': True, 'strategy': 'gradient_descent',
     'batch_size': 200},
])
def test_lbfgs_is_accepted_on_smooth_full_batch_objectives(fields):
  config_lib.validate(default_config(**{**LBFGS, **fields}))


def _squared_ww(theta, x, y, lam, c):
  """The squared Weston–Watkins SVM + λ‖W‖² in float64 and its gradient (b unpenalized)."""
  d = x.shape[1]
  w, b = theta[:c * d].reshape(c, d), theta[c * d:]
  s = x @ w.T + b
  n = len(y)
  m = np.maximum(s - s[np.arange(n), y][:, None] + 1.0, 0.0)
  m[np.arange(n), y] = 0.0
  ds = 2 * m
  ds[np.arange(n), y] = -ds.sum(axis=1)
  value = np.sum(m * m) / n + lam * np.sum(w * w)
  return value, np.concatenate([(ds.T @ x / n + 2 * lam * w).ravel(), ds.sum(axis=0) / n])


def test_squared_multiclass_svm_reaches_scipys_float64_optimum():
  """Three λ as one vmapped program, each against SciPy's L-BFGS-B in float64 (the squared
  Weston–Watkins SVM has no scikit-learn counterpart)."""
  rng = np.random.default_rng(0)
  c, d, n = 4, 6, 240
  y = rng.integers(0, c, n)
  x = (rng.normal(size=(c, d)) * 1.5)[y] + rng.normal(size=(n, d))
  data = array_dataset(x.astype(np.float32), y, c, center=False)
  lams = (1e-3, 1e-2, 1e-1)
  members = [default_config(**{**LBFGS, 'loss.name': 'multiclass_svm', 'loss.squared': True,
                               'reg.strength': lam, 'num_steps': 300, 'eval_every_steps': 300,
                               'stop.tol': 1e-9, 'stop.check_every': 10}) for lam in lams]
  trainer = Trainer.create(members[0], data, members)
  state = trainer.fit(trainer.init())
  assert trainer.convergence_record.converged.all()
  xf = x.astype(np.float32).astype(np.float64)
  for j, lam in enumerate(lams):
    ref = minimize(_squared_ww, np.zeros(c * d + c), args=(xf, y, lam, c), jac=True,
                   method='L-BFGS-B', options={'gtol': 1e-12, 'ftol': 1e-15, 'maxiter': 10_000})
    ours = np.concatenate([np.asarray(state.params['W'][j], np.float64).ravel(),
                           np.asarray(state.params['b'][j], np.float64)])
    got, want = _squared_ww(ours, xf, y, lam, c)[0], ref.fun
    assert abs(got - want) <= 1e-6 * want, (lam, got, want)
