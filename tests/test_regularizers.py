"""Regularizers against NumPy, the bias switch, and the max-norm projection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hinge_jax import regularizers
from hinge_jax.errors import ConfigError


def _params(rng, bias=True):
  p = {'W': jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)}
  if bias:
    p['b'] = jnp.asarray(rng.normal(size=(3,)), jnp.float32)
  return p


@pytest.mark.parametrize('regularize_bias', [False, True])
def test_values_match_numpy(regularize_bias):
  p = _params(np.random.default_rng(0))
  w, b = np.asarray(p['W'], np.float64), np.asarray(p['b'], np.float64)
  arrays = [w, b] if regularize_bias else [w]
  want = {'none': 0.0, 'l2': sum((a**2).sum() for a in arrays),
          'l1': sum(np.abs(a).sum() for a in arrays)}
  want['elastic_net'] = 0.3 * want['l1'] + 0.7 * want['l2']
  for name, value in want.items():
    got = regularizers.penalty(p, name, regularize_bias=regularize_bias, bias_column=False,
                               l1_ratio=0.3)
    np.testing.assert_allclose(float(got), value, rtol=1e-5)


def test_bias_trick_column_is_excluded_unless_asked():
  p = {'W': jnp.arange(12.0).reshape(3, 4)}  # (C, D): last column = bias under the bias trick
  w = np.arange(12.0).reshape(3, 4)
  assert float(regularizers.penalty(p, 'l2', regularize_bias=False, bias_column=True)) == (w[:, :3]**2).sum()
  assert float(regularizers.penalty(p, 'l2', regularize_bias=True, bias_column=True)) == (w**2).sum()


def test_lecture_example_prefers_diffuse_weights():
  w1, w2 = jnp.array([[1.0, 0.0, 0.0, 0.0]]), jnp.full((1, 4), 0.25)  # (C, D), one class
  x = jnp.ones((1, 4))
  assert float((x @ w1.T)[0, 0]) == float((x @ w2.T)[0, 0]) == 1.0
  r = lambda w: float(regularizers.penalty({'W': w}, 'l2', regularize_bias=True, bias_column=False))
  assert r(w1) == 1.0 and r(w2) == 0.25


def test_gradients():
  p = _params(np.random.default_rng(1), bias=False)
  g = jax.grad(lambda p: regularizers.penalty(p, 'l2', regularize_bias=True, bias_column=False))(p)
  np.testing.assert_allclose(np.asarray(g['W']), 2 * np.asarray(p['W']), rtol=1e-6)
  g = jax.grad(lambda p: regularizers.penalty(p, 'l1', regularize_bias=True, bias_column=False))(p)
  np.testing.assert_array_equal(np.asarray(g['W']), np.sign(np.asarray(p['W'])))


def test_max_norm_projection():
  p = {'W': jnp.array([[3.0, 4.0, 7.0], [0.1, 0.1, 7.0]])}  # (C, D), last column: bias
  out = np.asarray(regularizers.project_max_norm(p, jnp.float32(1.0), bias_column=True)['W'])
  np.testing.assert_allclose(np.linalg.norm(out[0, :2]), 1.0, rtol=1e-6)  # 5 → 1
  np.testing.assert_allclose(out[1, :2], [0.1, 0.1])  # already inside the ball
  np.testing.assert_allclose(out[:, 2], [7.0, 7.0])  # bias untouched
  off = regularizers.project_max_norm(p, jnp.float32(0.0), bias_column=True)['W']
  np.testing.assert_array_equal(np.asarray(off), np.asarray(p['W']))


def test_unknown_name_lists_choices():
  with pytest.raises(ConfigError, match=r"reg.name='l3' is not known; choose one of: elastic_net, l1, l2, none"):
    regularizers.get('l3')


@pytest.mark.parametrize('name', ['l1', 'elastic_net'])
def test_l1_subgradient_is_numpy_sign_including_zero(name):
  """L1's subgradient is sign(w), as the assignment's `np.sign(W)`: 0 at an exact 0 (where
  `jnp.abs` would give 1), under jit, grad and vmap alike."""
  w = np.array([[-2.0, 0.0, 3.0, -0.0], [0.0, 1e-30, -1e-30, 5.0]], np.float32)
  grad = jax.jit(jax.grad(lambda p: regularizers.penalty(
      {'W': p}, name, regularize_bias=True, bias_column=False, l1_ratio=0.25)))
  alpha = 1.0 if name == 'l1' else 0.25
  want = alpha * np.sign(w) + (1 - alpha) * 2 * w * (name != 'l1')
  np.testing.assert_allclose(grad(jnp.asarray(w)), want, rtol=1e-6)
  batched = jax.vmap(grad)(jnp.stack([jnp.asarray(w), jnp.zeros_like(w)]))
  np.testing.assert_array_equal(np.asarray(batched[1]), np.zeros_like(w))
