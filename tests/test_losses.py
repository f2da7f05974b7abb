"""Every loss through one shared property checker, plus the lecture's worked numbers."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hinge_jax import losses
import reference as ref

HINGES = {
    'multiclass_svm': (losses.multiclass_svm, ref.ww_svm, ref.ww_svm_grad),
    'crammer_singer': (losses.crammer_singer, ref.crammer_singer, ref.crammer_singer_grad),
    'one_vs_all': (losses.one_vs_all, ref.one_vs_all, ref.one_vs_all_grad),
}
ALL = dict(HINGES, softmax_cross_entropy=(losses.softmax_cross_entropy, ref.softmax,
                                          ref.softmax_grad))
VARIANTS = [(name, squared) for name in HINGES for squared in (False, True)] + [
    ('softmax_cross_entropy', False)]


def draws(rng, n=64, c=5, ties=True):
  """Random scores with exact ties (integers and repeated values) mixed in."""
  s = rng.normal(size=(n, c)) * 2
  if ties:
    s[: n // 2] = rng.integers(-2, 3, size=(n // 2, c)).astype(float)  # margins hit 0 exactly
  y = rng.integers(0, c, size=n)
  return s, y


def _kwargs(name, squared, margin=1.0):
  return {} if name == 'softmax_cross_entropy' else {'margin': margin, 'squared': squared}


@pytest.mark.parametrize('name,squared', VARIANTS)
class TestLossProperties:
  """The shared property checker: each property holds for every loss."""

  def test_matches_numpy_reference_including_ties(self, name, squared, x64):
    fn, ref_fn, _ = ALL[name]
    s, y = draws(np.random.default_rng(0))
    for margin in (1.0, 0.5, 10.0):
      got = np.asarray(fn(jnp.asarray(s), jnp.asarray(y), **_kwargs(name, squared, margin)))
      want = [ref_fn(list(si), int(yi), margin, squared) for si, yi in zip(s, y)]
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  def test_gradient_equals_hand_derived_subgradient(self, name, squared, x64):
    fn, _, ref_grad = ALL[name]
    s, y = draws(np.random.default_rng(1))
    grad = jax.vmap(jax.grad(lambda si, yi: fn(si, yi, **_kwargs(name, squared))))
    got = np.asarray(grad(jnp.asarray(s), jnp.asarray(y)))
    want = np.stack([ref_grad(list(si), int(yi), 1.0, squared) for si, yi in zip(s, y)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  def test_jit_equals_eager(self, name, squared):
    fn = functools.partial(ALL[name][0], **_kwargs(name, squared))
    s, y = draws(np.random.default_rng(2))
    s, y = jnp.asarray(s, jnp.float32), jnp.asarray(y)
    # XLA may fuse the class sum in another order: equal to float32 rounding
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(s, y)), np.asarray(fn(s, y)), rtol=1e-6)

  def test_batched_equals_loop_and_keeps_leading_shape(self, name, squared):
    fn = functools.partial(ALL[name][0], **_kwargs(name, squared))
    s, y = draws(np.random.default_rng(3), n=12)
    s, y = jnp.asarray(s, jnp.float32).reshape(3, 4, 5), jnp.asarray(y).reshape(3, 4)
    batched = fn(s, y)
    assert batched.shape == (3, 4)
    loop = np.array([[float(fn(s[i, j], y[i, j])) for j in range(4)] for i in range(3)])
    np.testing.assert_allclose(np.asarray(batched), loop, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(s, y)), loop, rtol=1e-6)

  def test_nan_propagates(self, name, squared):
    fn = ALL[name][0]
    s = jnp.array([[0.5, jnp.nan, -1.0], [jnp.nan, 0.0, 0.0], [1.0, 2.0, 3.0]])
    out = np.asarray(fn(s, jnp.array([0, 1, 2]), **_kwargs(name, squared)))
    assert np.isnan(out[0]) and np.isnan(out[1]) and np.isfinite(out[2])


@pytest.mark.parametrize('name,squared', [v for v in VARIANTS if v[0] != 'softmax_cross_entropy'])
def test_hinges_are_zero_when_the_margin_is_met(name, squared):
  fn = HINGES[name][0]
  y = jnp.array([0, 1, 2, 1])
  s = 3.0 * jax.nn.one_hot(y, 4) - 1.0  # correct +2, others −1: every margin met
  if name == 'one_vs_all':
    s = 1.5 * (2 * jax.nn.one_hot(y, 4) - 1)  # ±1.5: beyond the ±1 targets
  np.testing.assert_array_equal(np.asarray(fn(s, y, squared=squared)), np.zeros(4))
  # margin exactly met: still zero loss and zero gradient (the strict indicator)
  tie = jnp.array([[2.0, 1.0, 1.0]])
  if name != 'one_vs_all':
    assert float(fn(tie, jnp.array([0]), squared=squared)[0]) == 0.0
    g = jax.grad(lambda s: fn(s, jnp.array([0]), squared=squared)[0])(tie)
    np.testing.assert_array_equal(np.asarray(g), np.zeros((1, 3)))


def test_softmax_gradient_is_probabilities_minus_onehot_and_stable():
  s = jnp.array([[1000.0, 0.0, -1000.0], [3.2, 5.1, -1.7]])
  y = jnp.array([2, 0])
  loss = losses.softmax_cross_entropy(s, y)
  np.testing.assert_allclose(np.asarray(loss[0]), 2000.0, rtol=1e-6)  # no overflow
  g = jax.grad(lambda s: losses.softmax_cross_entropy(s, y).sum())(s)
  np.testing.assert_allclose(np.asarray(g), np.asarray(jax.nn.softmax(s) - jax.nn.one_hot(y, 3)),
                             atol=1e-6)


# ------------------------------------------------------------- the lecture's worked numbers

# numpy float64: tests convert them under the x64 fixture
SLIDE_SCORES = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])  # cat, car, frog
SLIDE_LABELS = np.array([0, 1, 2])


def test_slide_ww_hinge_losses_with_the_frog_column_corrected(x64):
  got = np.asarray(losses.multiclass_svm(SLIDE_SCORES, SLIDE_LABELS))
  np.testing.assert_allclose(got, [2.9, 0.0, 12.9], atol=1e-12)  # slides print 10.9: a slip
  assert round(float(got.mean()), 2) == 5.27  # slides print 4.6


def test_slide_quiz_variants(x64):
  # summing over all j including y_i adds Δ = 1 per example
  with_target = np.asarray(losses.multiclass_svm(SLIDE_SCORES, SLIDE_LABELS)) + 1.0
  np.testing.assert_allclose(with_target, [3.9, 1.0, 13.9], atol=1e-12)
  assert round(float(with_target.mean()), 2) == 6.27
  squared = np.asarray(losses.multiclass_svm(SLIDE_SCORES, SLIDE_LABELS, squared=True))
  np.testing.assert_allclose(squared, [8.41, 0.0, 83.25], atol=1e-9)


def test_softmax_of_the_cat_image_uses_the_natural_log(x64):
  loss = float(losses.softmax_cross_entropy(SLIDE_SCORES[0], SLIDE_LABELS[0]))
  assert round(loss, 2) == 2.04  # the slides' 0.89 is log10
  assert math.isclose(math.exp(-loss), 0.13, abs_tol=0.005)


def test_notes_examples(x64):
  assert float(losses.multiclass_svm(jnp.array([13.0, -7.0, 11.0]), jnp.array(0),
                                     margin=10.0)) == pytest.approx(8.0)
  s, y = jnp.array([-2.85, 0.86, 0.28]), jnp.array(2)
  assert round(float(losses.multiclass_svm(s, y)), 2) == 1.58
  assert round(float(losses.softmax_cross_entropy(s, y)), 2) == 1.04


@pytest.mark.parametrize('seed', range(3))
def test_crammer_singer_with_unit_margin_equals_optax(seed):
  s, y = draws(np.random.default_rng(seed))
  s, y = jnp.asarray(s, jnp.float32), jnp.asarray(y)
  np.testing.assert_allclose(np.asarray(losses.crammer_singer(s, y)),
                             np.asarray(optax.losses.multiclass_hinge_loss(s, y)), rtol=1e-6,
                             atol=1e-6)


def test_expected_initial_loss():
  assert losses.expected_initial_loss('multiclass_svm', 10) == 9
  assert losses.expected_initial_loss('softmax_cross_entropy', 10) == pytest.approx(2.302585)
  with pytest.raises(ValueError, match='loss.name'):
    losses.expected_initial_loss('nope', 10)
