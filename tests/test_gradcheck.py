"""Gradient check: jax.grad against centered differences (float64), kinks, wrong gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from hinge_jax import gradcheck, losses, model, regularizers
from hinge_jax.errors import UserError
from helpers import default_config, run_main

LOSSES = [('multiclass_svm', False), ('multiclass_svm', True), ('crammer_singer', False),
          ('crammer_singer', True), ('one_vs_all', False), ('one_vs_all', True),
          ('softmax_cross_entropy', False)]
REFERENCE = {'multiclass_svm': reference.ww_svm_grad, 'crammer_singer': reference.crammer_singer_grad,
             'one_vs_all': reference.one_vs_all_grad, 'softmax_cross_entropy': reference.softmax_grad}


def problem(seed=0, n=40, d=6, c=4):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d))
  y = rng.integers(0, c, n)
  params = {'W': 0.7 * rng.standard_normal((d, c)).T, 'b': 0.3 * rng.standard_normal(c)}
  return jnp.asarray(x), jnp.asarray(y), jax.tree.map(jnp.asarray, params)


def well_resolved(check, min_grad=1e-3):
  """Coordinates away from kinks with a gradient large enough to measure 1e-7 relative."""
  big = np.maximum(np.abs(check.analytic), np.abs(check.numeric)) > min_grad
  return big & (check.kinks == 0)


@pytest.mark.parametrize('name,squared', LOSSES)
def test_every_loss_agrees_with_centered_differences(x64, name, squared):
  x, y, params = problem()
  loss = losses.get(name)

  def f(p):
    return jnp.mean(loss(model.scores(p, x), y, margin=1.0, squared=squared))
  pattern = lambda p: gradcheck.kink_pattern(name, model.scores(p, x), y, 1.0)
  coords = np.arange(6 * 4 + 4)
  check = gradcheck.check_gradient(f, params, coords, h=1e-5, pattern=pattern)
  ok = well_resolved(check)
  assert ok.sum() >= 0.75 * len(coords)  # the claim below covers most coordinates
  assert np.max(check.rel_error[ok]) < 1e-7
  assert not check.failed(1e-7).any()
  # jax.grad itself against the independent per-example NumPy subgradient
  s = np.asarray(model.scores(params, x))
  g_s = np.stack([REFERENCE[name](s[i], int(y[i]), 1.0, squared) for i in range(len(y))])
  np.testing.assert_allclose(check.analytic[:24].reshape(4, 6), g_s.T @ np.asarray(x) / len(y),
                             rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('reg', ['l2', 'l1', 'elastic_net'])
def test_every_regularizer_agrees_with_centered_differences(x64, reg):
  _, _, params = problem(seed=1)
  f = lambda p: regularizers.penalty(p, reg, regularize_bias=True, bias_column=False, l1_ratio=0.3)
  sign = lambda p: jnp.concatenate([jnp.ravel(p['W'] > 0), jnp.ravel(p['b'] > 0)]).astype(int)
  check = gradcheck.check_gradient(f, params, np.arange(28), h=1e-5, pattern=sign)
  ok = well_resolved(check)
  assert ok.sum() >= 26
  assert np.max(check.rel_error[ok]) < 1e-7
  w = np.concatenate([np.ravel(params['W']), np.ravel(params['b'])])
  want = {'l2': 2 * w, 'l1': np.sign(w), 'elastic_net': 0.3 * np.sign(w) + 0.7 * 2 * w}[reg]
  np.testing.assert_allclose(check.analytic, want, rtol=1e-12)


def test_a_deliberately_wrong_gradient_is_caught(x64):
  x, y, params = problem()
  f = lambda p: jnp.mean(losses.softmax_cross_entropy(model.scores(p, x), y))
  off_by_one_percent = lambda p: jax.tree.map(lambda g: 1.01 * g, jax.grad(f)(p))
  check = gradcheck.check_gradient(f, params, np.arange(28), h=1e-5, grad=off_by_one_percent)
  assert check.failed(1e-6).sum() >= 20
  assert gradcheck.verdict(float(np.median(check.rel_error))) == 'suspicious'
  # the classic regularizer slip: d(Σw²)/dw written as w instead of 2w
  r = lambda p: regularizers.l2([p['W']])
  check = gradcheck.check_gradient(r, params, np.arange(24), h=1e-5, grad=lambda p: {
      'W': p['W'], 'b': jnp.zeros_like(p['b'])})
  assert check.failed(1e-6).all()


def test_a_kink_is_flagged_and_not_counted_as_a_failure(x64):
  """An example whose WW margin is exactly 0: W[0, 0] and W[1, 0] move it across the hinge."""
  x = jnp.array([[1.0, 0.0]])
  y = jnp.array([0])
  params = {'W': jnp.array([[1.0, 0.0], [0.0, 0.0]])}  # s = (1, 0): margin 0 − 1 + 1 = 0
  f = lambda p: jnp.mean(losses.multiclass_svm(model.scores(p, x), y))
  pattern = lambda p: gradcheck.kink_pattern('multiclass_svm', model.scores(p, x), y, 1.0)
  check = gradcheck.check_gradient(f, params, np.arange(4), h=1e-5, pattern=pattern)
  np.testing.assert_array_equal(check.kinks > 0, [True, False, True, False])  # x = (1, 0)
  np.testing.assert_array_equal(check.analytic, [0, 0, 0, 0])  # strict indicator: 1[0 > 0] = 0
  np.testing.assert_allclose(check.numeric[[0, 2]], [-0.5, 0.5])  # the average of two slopes
  assert check.rel_error[0] == 1.0 and not check.failed(1e-7).any()  # flagged, not failed
  report = {'config': default_config(), 'dataset': 'toy', 'num_examples': 1, 'h': 1e-5,
            'tol': 1e-7, 'point': 'W', 'objective': float(f(params)), 'params': params,
            'checks': [check], 'leaves': gradcheck._leaf_ranges(params), 'failures': 0,
            'passed': True}
  text = gradcheck.format_report(report)
  assert 'kink objective W[1, 0]: analytic 0, numerical 0.5' in text
  assert 'averages two slopes' in text and text.splitlines()[-1].startswith('PASS')



@pytest.mark.parametrize('loss', ['multiclass_svm', 'softmax_cross_entropy'])
def test_run_on_digits_passes_and_reports_every_parameter(digits, loss):
  config = default_config(**{'loss.name': loss, 'reg.name': 'elastic_net'})
  report = gradcheck.run(config, num_examples=100, scale=0.05, dataset=digits)
  assert report['passed'] and report['failures'] == 0
  assert [c.name for c in report['checks']] == ['objective', 'regularizer']
  assert len(report['checks'][0].coords) == 650  # small problem: every coordinate
  text = gradcheck.format_report(report)
  assert 'PASS' in text and 'regularizer  W' in text and 'objective    b' in text


def test_wrong_gradient_makes_the_run_fail(digits):
  config = default_config()
  wrong = lambda p: jax.tree.map(lambda g: -g, p)  # returns params, not the gradient
  report = gradcheck.run(config, num_examples=50, dataset=digits, grad=wrong)
  assert not report['passed']
  assert 'FAIL objective W[' in gradcheck.format_report(report)


def test_large_problems_are_sampled_and_full_checks_refused():
  params = {'W': jnp.zeros((3073, 10))}
  coords = gradcheck.choose_coords(params, num_coords=7, full=False, full_below=2000,
                                   max_evals=20000, seed=0)
  assert len(coords) == 7 and len(set(coords)) == 7 and coords.max() < 30730
  with pytest.raises(UserError, match=r'30730 parameters needs 61460 loss evaluations'):
    gradcheck.choose_coords(params, num_coords=7, full=True, full_below=2000, max_evals=20000,
                            seed=0)
  with pytest.raises(UserError, match='h=0'):
    gradcheck.check_gradient(lambda p: jnp.sum(p['W']), params, coords, h=0.0)


def test_cli_passes_on_the_default_config():
  proc = run_main('--num_examples=100', module='hinge_jax.gradcheck')
  assert proc.returncode == 0, proc.stderr
  assert 'PASS' in proc.stdout and 'objective    W      (10, 64)' in proc.stdout


def test_cli_bad_input_is_one_line():
  proc = run_main('--h=0', module='hinge_jax.gradcheck')
  assert proc.returncode == 2, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and '--h=0.0 must be > 0' in lines[0] and 'Traceback' not in proc.stderr


def test_a_full_check_over_the_budget_is_refused(digits):
  config = default_config(**{'numerical.max_evals_per_step': 100})
  with pytest.raises(UserError, match='full gradient check of 650'):
    gradcheck.run(config, full=True, dataset=digits)
