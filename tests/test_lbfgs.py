"""optimizer.name=lbfgs: where it applies and what it refuses, in one line each; its line
search's retries of a few members against each member alone.

The optimum it reaches: tests/test_sklearn_optimum.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hinge_jax import config_lib, lbfgs
from hinge_jax.step import _over_members
from hinge_jax.errors import ConfigError
from helpers import default_config

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


def _log_cosh(p, h):
  """Σ log cosh(c·(w − 1)): the second step overshoots, and retries, where c ≥ 3."""
  return jnp.sum(jnp.log(jnp.cosh(h['c'] * (p['W'] - 1.0))))


def _steps(curvatures, steps=4):
  k = len(curvatures)
  params = {'W': jnp.zeros((k, 3, 2))}
  state = jax.vmap(lbfgs.init)(params)
  hp = {'c': jnp.asarray(curvatures, jnp.float32)}
  step = jax.jit(lambda p, s, h, t: lbfgs.members_step(
      p, s, h, t, value_fn=_log_cosh, memory_size=10, over_members=_over_members))
  trials = []
  for t in range(steps):
    params, state, _ = step(params, state, hp, jnp.asarray(t))
    trials.append(np.asarray(state['search'].info.num_linesearch_steps))
  return params, np.stack(trials, axis=1)


@pytest.mark.parametrize('curvatures', [
    [0.5, 1.0, 3.0, 0.3, 10.0, 0.8, 1.2, 0.9],  # 2 of 8 retry: only they are evaluated
    [0.5, 3.0, 4.0, 0.3, 10.0, 0.8, 1.2, 0.9],  # 3 of 8: every member is
])
def test_retrying_few_members_gives_each_member_its_own_step(curvatures):
  """Members that fail the first trial halve their step size: with at most K/4 of them the
  retries evaluate only those (gathered); each member ends where it ends alone."""
  params, trials = _steps(curvatures)
  assert (trials[:, 1] > 1).sum() == sum(c >= 3 for c in curvatures)  # the second step's
  for j, c in enumerate(curvatures):
    alone, alone_trials = _steps([c])
    np.testing.assert_allclose(params['W'][j], alone['W'][0], rtol=1e-6)
    np.testing.assert_array_equal(trials[j], alone_trials[0])


def test_convergence_checks_read_the_line_search_not_another_pass(digits, monkeypatch):
  """With L-BFGS, `fit`'s checks (every step here) take f and ‖∇f‖ from the line search's
  state: the training split is evaluated only for the one evaluation row, the gradient-norm
  program never runs, and the recorded values are those of the members' final W."""
  from hinge_jax.convergence import grad_norm_program
  from hinge_jax.train import Trainer
  base = {**LBFGS, 'loss.name': 'softmax_cross_entropy', 'reg.regularize_bias': False,
          'num_steps': 60, 'eval_every_steps': 60, 'stop.check_every': 1,
          'stop.tol': 1e-7, 'stop.grad_tol': 1e-4}
  members = [default_config(**base, **{'reg.strength': lam}) for lam in (1e-1, 1e-2, 1e-3)]
  trainer = Trainer.create(members[0], digits, members)
  calls = []
  evaluate = Trainer.evaluate
  monkeypatch.setattr(Trainer, 'evaluate',
                      lambda self, params, split: calls.append(split) or evaluate(
                          self, params, split))
  state = trainer.fit(trainer.init())
  record = trainer.convergence_record
  assert record.converged.all() and max(record.steps) > 5
  assert calls.count('train') == 1 and 'grad_norm' not in trainer._compiled
  norms = grad_norm_program(trainer.spec)(state.params, trainer.data, trainer.hp)
  assert record.converged.all()
  np.testing.assert_allclose(record.grad_norm, np.asarray(norms), rtol=1e-3)
  np.testing.assert_allclose(record.previous, evaluate(trainer, state.params, 'train')['loss'],
                             rtol=1e-6)


def test_predicted_decrease_is_half_the_gradient_through_the_memory(digits):
  """After one step the memory holds one pair (s, y): ½·gᵀHg by the two-loop recursion in
  NumPy, from W0 = 0, g0 = ∇f(0) and the step's W1 and g1, against `lbfgs.current`'s."""
  from hinge_jax import fullbatch
  from hinge_jax.train import Trainer
  base = {**LBFGS, 'loss.name': 'softmax_cross_entropy', 'reg.regularize_bias': False}
  members = [default_config(**base, **{'reg.strength': lam}) for lam in (1e-1, 1e-3)]
  trainer = Trainer.create(members[0], digits, members)
  start = trainer.init()
  state, _ = trainer.run_chunk(trainer.init(), 0, 1)
  value, _, predicted = lbfgs.current(state.params, state.opt_state, trainer.spec.memory_size)
  x, y = fullbatch.blocks(trainer.data, trainer.spec.num_train)
  objective = fullbatch.make_objective(spec=trainer.spec)
  flat = lambda tree: np.concatenate([np.ravel(np.asarray(tree[k], np.float64))
                                      for k in ('W', 'b')])
  for j in range(2):
    member = lambda tree: jax.tree.map(lambda a: a[j], tree)
    hp = member(trainer.hp)
    g0 = flat(jax.grad(objective)(member(start.params), x, y, hp))
    f1, g1 = jax.value_and_grad(objective)(member(state.params), x, y, hp)
    g1 = flat(g1)
    s_, y_ = flat(member(state.params)) - flat(member(start.params)), g1 - g0
    rho = 1 / (s_ @ y_)
    alpha = rho * (s_ @ g1)
    r = (s_ @ y_) / (y_ @ y_) * (g1 - alpha * y_)
    r += s_ * (alpha - rho * (y_ @ r))
    assert value[j] == pytest.approx(float(f1), rel=1e-6)
    assert float(predicted[j]) == pytest.approx(0.5 * g1 @ r, rel=1e-3)
    assert 0 < float(predicted[j]) < float(value[j])
