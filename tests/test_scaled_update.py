"""benchmarks/scaled_update.py: K members' SGD with L2 where W = c·V carries its decay as a
scalar, against the plain update and against float64 NumPy from the textbook formulas."""

import numpy as np
import pytest

from benchmarks import baselines
from benchmarks import scaled_update as su


def _numpy_sgd(w0, x, y, mean, idx, lrs, lam):
  """Each member's SGD in float64 from the standard math (baselines.svm_loss_grad: the
  assignment's vectorized WW SVM + λ‖W‖², W as (D, C)): the final W as (K, C, D) and every
  step's loss (before its update) as (steps, K)."""
  feats = np.zeros((x.shape[0], su.FEATURES))
  feats[:, :x.shape[1]] = x.astype(np.float64) - mean
  feats[:, -1] = 1.0
  ws, losses = [], []
  for k in range(w0.shape[0]):
    w = w0[k].T.astype(np.float64)
    member = []
    for rows in idx:
      loss, grad = baselines.svm_loss_grad(w, feats[rows], y[rows], lam)
      member.append(loss)
      w = w - lrs[k] * grad
    ws.append(w.T)
    losses.append(member)
  return np.stack(ws), np.asarray(losses).T


@pytest.fixture(scope='module')
def problem():
  rng = np.random.default_rng(0)
  n, d, c, steps, batch = 300, 3072, 10, 6, 40
  y = rng.integers(0, c, n).astype(np.int32)
  x = np.clip(rng.integers(60, 196, (c, d))[y] + rng.integers(-50, 51, (n, d)), 0, 255
              ).astype(np.uint8)
  mean = x.mean(0).astype(np.float32)
  idx = rng.integers(0, n, (steps, batch)).astype(np.int32)
  lrs = np.array([1e-7, 1e-6, 4e-6], np.float32)
  lam = 5e3  # 2·lr·λ up to 0.04 a step: c falls to 0.78 in 6 steps
  w0 = (rng.standard_normal((3, c, su.FEATURES)) * 1e-3).astype(np.float32)
  want_w, want_loss = _numpy_sgd(w0, x, y, mean, idx, lrs, lam)
  return (w0, x, y, mean, idx, lrs, np.float32(lam)), want_w, want_loss


@pytest.mark.parametrize('variant', su.VARIANTS)
def test_every_variant_trains_the_textbook_models(problem, variant):
  """W = c·V (with ‖V‖² by a reduction or carried through the Gram-matrix recursion) gives
  the same W and the same step losses, penalty included, as plain SGD and as float64 NumPy."""
  import jax
  args, want_w, want_loss = problem
  w, step_losses = jax.jit(su.epoch_program(variant, len(args[4])))(*args)
  w, step_losses = np.asarray(w), np.asarray(step_losses)
  assert np.abs(w - want_w).max() <= 1e-5 * np.abs(want_w).max()
  np.testing.assert_allclose(step_losses, want_loss, rtol=2e-5)
  # the penalty is a visible share of each loss, so a wrong ‖W‖² would show
  penalty = float(args[6]) * np.sum(want_w.astype(np.float64) ** 2, axis=(1, 2))
  assert (penalty > 1e-3 * want_loss[-1]).all()


def test_decay_floor_is_the_smallest_members_decay_over_the_chunk():
  assert su.decay_floor([1e-3, 1e-2], 10.0, 3) == pytest.approx(0.8 ** 3)
  assert su.decay_floor([0.05], 10.0, 5) == 0.0  # 2·lr·λ = 1: W = c·V cannot hold W
  assert su.decay_floor([0.15], 10.0, 2) == pytest.approx(4.0)  # |1 − 3|²: SGD diverging


def test_unknown_variant_is_one_line():
  with pytest.raises(ValueError, match=r"unknown variant 'fast'; choose from"):
    su.epoch_program('fast', 4)


def test_h200_program_accumulates_into_w_inside_the_gemm():
  """Compiled for an H200 without a card (JAX's CUDA plugin; skipped without it): in
  'scaled', cuBLAS's GEMM writes V + α·dSᵀX over V itself (β = 1, the output aliasing V),
  no loop pass writes a W-sized array, and a step moves more than half W's size less than
  the plain update's (W: 33 MB at K = 256; the update pass's 3 W go, the GEMM's read of V
  and the penalty's reduction over V come)."""
  from benchmarks import hlo_kernels
  k = 256
  try:
    plain = su.card_program('plain_cublas', k, 8)
  except RuntimeError as e:
    pytest.skip(str(e))
  scaled = su.card_program('scaled', k, 8)
  in_place = [line for line in scaled.splitlines() if 'cublas' in line and 'custom_call_target'
              in line and 'output_to_operand_aliasing={{0}: (2' in line]
  assert len(in_place) == su.UNROLL
  w_sized = f'f32[{k},10,{su.FEATURES}]'
  loop = [kn for kn in hlo_kernels.kernels(scaled) if kn.computation.startswith('ENTRY/body')]
  assert not [kn for kn in loop if kn.op.startswith('fusion') and kn.shape.startswith(w_sized)]
  saved = (hlo_kernels.loop_summary(plain, su.UNROLL)['bytes_per_step']
           - hlo_kernels.loop_summary(scaled, su.UNROLL)['bytes_per_step'])
  assert saved > k * 10 * su.FEATURES * 4 / 2
