"""Step-size table and loss-landscape slices."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from hinge_jax import landscape, losses, model
from hinge_jax.errors import UserError
from helpers import default_config


def toy(seed=0, n=5, d=3, c=3):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.standard_normal((n, d))), jnp.asarray(rng.integers(0, c, n)),
          {'W': jnp.asarray(rng.standard_normal((c, d))), 'b': jnp.asarray(rng.standard_normal(c))})


def test_hinge_loss_along_a_line_is_piecewise_linear_and_convex(x64):
  x, y, params = toy()
  n, c = 5, 3
  f = lambda p: jnp.mean(losses.multiclass_svm(model.scores(p, x), y))
  [d1] = landscape.unit_directions(jax.random.key(3), params, 1)
  a = jnp.linspace(-4.0, 4.0, 4001)
  loss = np.asarray(landscape.slice_losses(f, params, [d1], a[:, None], batch_size=512))
  second = loss[2:] - 2 * loss[1:-1] + loss[:-2]
  assert second.min() > -1e-12  # convex
  bends = np.flatnonzero(np.abs(second) > 1e-10)
  # each margin is linear in a, so it crosses 0 at most once: at most N·(C−1) kinks, each
  # bending at most two consecutive second differences
  assert 1 <= len(bends) <= 2 * n * (c - 1)
  assert len(bends) < 0.01 * len(second)  # straight almost everywhere
  # values against the plain NumPy loop at a few grid points
  for i in (0, 1234, 4000):
    w = np.asarray(params['W'] + a[i] * d1['W'])
    b = np.asarray(params['b'] + a[i] * d1['b'])
    s = np.asarray(x) @ w.T + b
    want = np.mean([reference.ww_svm(s[k], int(y[k])) for k in range(n)])
    assert loss[i] == pytest.approx(want, rel=1e-12)


def test_softmax_along_a_line_is_smooth_and_convex(x64):
  x, y, params = toy()
  f = lambda p: jnp.mean(losses.softmax_cross_entropy(model.scores(p, x), y))
  [d1] = landscape.unit_directions(jax.random.key(3), params, 1)
  loss = np.asarray(landscape.slice_losses(f, params, [d1], jnp.linspace(-4, 4, 401)[:, None]))
  second = loss[2:] - 2 * loss[1:-1] + loss[:-2]
  assert np.all(second > 0)  # strictly curved everywhere: no straight pieces


def test_directions_are_unit_and_seeded():
  params = {'W': jnp.zeros((4, 3)), 'b': jnp.zeros(3)}
  d = landscape.unit_directions(jax.random.key(0), params, 2)
  again = landscape.unit_directions(jax.random.key(0), params, 2)
  for di, dj in zip(d, again):
    norm = sum(float(jnp.sum(v * v)) for v in jax.tree.leaves(di))
    assert norm == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(np.asarray(di['W']), np.asarray(dj['W']))
  assert abs(float(jnp.sum(d[0]['W'] * d[1]['W']))) < 0.9


def test_step_size_table(digits):
  f, params, _ = landscape.objective_on_train(default_config(), digits)
  t = landscape.step_size_table(f, params, 1e-4, 1e3, 8)
  assert t['best_loss'] < t['loss_before']  # the best step decreases the loss
  assert t['losses'][-1] > t['loss_before']  # and a far too large step increases it
  g = jax.grad(f)(params)
  for lr, got in zip(t['learning_rates'][:3], t['losses'][:3]):  # vmapped = one at a time
    want = float(f(jax.tree.map(lambda p, gg: p - jnp.float32(lr) * gg, params, g)))
    assert got == pytest.approx(want, rel=1e-5)
  with pytest.raises(UserError, match='lr_min <= lr_max'):
    landscape.step_size_table(f, params, 1e-1, 1e-3, 5)


def test_run_writes_tables_data_and_plots(tmp_path, digits):
  out = landscape.run(default_config(), str(tmp_path), num_lrs=4, lr_min=1e-3, lr_max=1.0,
                      num_1d=9, num_2d=5, extent=2.0, num_examples=300, log=lambda *a: None,
                      dataset=digits)
  t = json.loads((tmp_path / 'step_sizes.json').read_text())
  rows = list(csv.DictReader((tmp_path / 'step_sizes.csv').open()))
  assert len(rows) == 4 and float(rows[0]['learning_rate']) == pytest.approx(1e-3)
  assert float(rows[3]['loss_after']) == pytest.approx(t['losses'][3], rel=1e-6)
  s = np.load(tmp_path / 'landscape.npz')
  assert s['loss_1d'].shape == (9,) and s['loss_2d'].shape == (5, 5)
  meta = json.loads((tmp_path / 'landscape.json').read_text())
  # the grids contain a = b = 0: the centre's loss, in both slices
  assert s['loss_1d'][4] == pytest.approx(meta['loss_at_centre'], rel=1e-5)
  assert s['loss_2d'][2, 2] == pytest.approx(meta['loss_at_centre'], rel=1e-5)
  # the 2-D slice's b = 0 column is the 1-D slice at the same a (a = -2, -1, 0, 1, 2)
  np.testing.assert_allclose(s['loss_2d'][:, 2], s['loss_1d'][::2], rtol=1e-5)
  for png in ('landscape_1d.png', 'landscape_2d.png'):
    assert (tmp_path / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert out['step_sizes']['best_loss'] < out['step_sizes']['loss_before']


def test_bad_input(tmp_path, digits):
  with pytest.raises(UserError, match="--mode='contour'"):
    landscape.run(default_config(), str(tmp_path), mode='contour', dataset=digits)
  with pytest.raises(UserError, match='extent > 0'):
    landscape.run(default_config(), str(tmp_path), mode='slices', extent=0.0, dataset=digits)
  with pytest.raises(UserError, match='params.npz'):
    landscape.run(default_config(), str(tmp_path), params_path=str(tmp_path / 'nope.npz'),
                  dataset=digits)
