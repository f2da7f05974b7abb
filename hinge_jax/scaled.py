"""Minibatch SGD with L2 where each member's W carries its decay as a scalar: `Tuning.scaled_decay`.

Plain SGD with an L2 penalty on all of W (the bias trick's column included) updates

    W ← (1 − 2·lr·λ)·W − lr·dSᵀX,

which on a GPU is a backward GEMM that writes dW, then a pass that reads W and dW and writes
W. Written as W = c·V with a scalar c per member (Pegasos's trick), the same step is

    c′ = (1 − 2·lr·λ)·c,   V ← V + α·dSᵀX,   α = −lr/c′,

an accumulate that cuBLAS's GEMM does in place (β = 1): XLA's GEMM rewriter emits it where
its Triton GEMMs are off (`GPU_OPTIONS`, which `tuning.Tuning.program_options` adds on a
GPU). dW and the separate pass are gone. The scores are c·(V·Xᵀ). The penalty λ·c²·‖V‖² of
each step's loss needs no pass over V: ‖V‖² is carried from step to step,

    ‖V + αG‖² = ‖V‖² + 2α⟨V, G⟩ + α²‖G‖²,   G = dSᵀX,
    ⟨V, G⟩ = Σ dS ⊙ (V·Xᵀ)  (the forward product),   ‖G‖² = Σ_c dS_cᵀ (XXᵀ) dS_c,

with XXᵀ the minibatch's Gram matrix, and recomputed exactly whenever V is folded back into
W: every `RENORM_EVERY` steps (V ← c·V, c ← 1) and at the chunk's end. A member whose |c|
would fall below `C_FLOOR` within a block (a decay that nearly zeroes W every step) gets NaN
instead, and the deferred guard reruns the chunk with XLA's plain step, which is exact.
Frozen members (diverged before the chunk) take no step: lr 0, so c stays 1.

It wins over XLA's step only for many members a device (the saved pass outweighs the Gram
terms and cuBLAS's small GEMMs), so `Tuning` turns it on for a GPU from
`tuning.SCALED_MIN_MEMBERS` members a device (figures: docs/performance.md).

Scope (`applies`): strategy `sgd`, the plain `sgd` optimizer (any schedule), shared
minibatches, the bias trick, regularizer none or L2 on all of W (`reg.regularize_bias`), no
max-norm, the deferred guard; any loss (`jax.grad` of losses.py's). Elsewhere the XLA step
runs. The same model as the XLA step; sums group differently (float32 rounding).
"""

import jax
import jax.numpy as jnp

from hinge_jax import losses, optim
from hinge_jax.state import batch_indices, pad_features, unpad_features

Array = jax.Array

RENORM_EVERY = 16  # steps between foldings of c into V (and an exact ‖V‖²)
C_FLOOR = 1e-15  # a smaller |c| is poisoned to NaN (the deferred guard's rerun is exact)
# XLA options the chunk's program needs on a GPU: cuBLAS's GEMMs (XLA's rewriter fuses the
# accumulate into them), not XLA's Triton GEMMs (into which it does not)
GPU_OPTIONS = (('xla_gpu_enable_triton_gemm', False),)


def applies(spec, guard: str) -> bool:
  """Whether `chunk` trains `spec` under `guard` (see the module's docstring)."""
  return (spec.strategy == 'sgd' and spec.optimizer == 'sgd' and not spec.full_batch
          and not spec.data_axis and spec.shared_data and spec.bias_trick and not spec.max_norm
          and guard == 'deferred'
          and (spec.reg == 'none' or (spec.reg == 'l2' and spec.regularize_bias)))


def chunk(state, start: Array, data, hp: dict, *, spec, length: int, feature_pad: int = 0,
          unroll: int = 1):
  """`length` steps of every member from step `start` as W = c·V: `(state, (length, K)
  losses)`, as `step.scan_chunk` returns them. `feature_pad`: zero features after the
  pixels (`Tuning.feature_multiple`). `unroll`: steps per loop iteration."""
  if not applies(spec, 'deferred'):
    raise ValueError('scaled.chunk trains plain SGD with L2 on all of W (or none), shared '
                     'minibatches and the bias trick; Tuning.scaled_mode says where')
  l2 = spec.reg == 'l2'
  pixels = spec.num_features - 1  # the bias trick's 1 is W's last feature
  idx, lr = chunk_draws(start, hp, spec=spec, length=length)
  step_lr = jnp.where(state.diverged[None, :], 0.0, lr)  # frozen members take no step
  lam = hp['reg_strength'].astype(jnp.float32)
  decay = 1 - 2 * step_lr * lam[None, :] if l2 else jnp.ones_like(step_lr)

  def member_loss(s, y, margin):
    return jnp.mean(losses.get(spec.loss)(s, y, margin=margin, squared=spec.squared))

  def step(carry, inputs):
    v, c, q = carry
    ids, lr_t, decay_t = inputs
    x = data.features(data.x['train'][ids], feature_pad)
    y = data.y['train'][ids]
    raw = jnp.einsum('kcd,bd->kcb', v, x)  # V·Xᵀ as the GEMM writes it (model.scores too)
    data_loss, ds = jax.vmap(jax.value_and_grad(member_loss), in_axes=(0, None, 0))(
        jnp.swapaxes(c[:, None, None] * raw, 1, 2), y, hp['margin'])
    ds = jnp.swapaxes(ds, 1, 2)
    c_next = decay_t * c
    c_next = jnp.where(jnp.abs(c_next) < C_FLOOR, jnp.nan, c_next)
    alpha = -lr_t / c_next
    loss = data_loss
    if l2:
      loss = loss + lam * c * c * q
      # XXᵀ from the pixels' columns (the padding adds 0, the bias trick's 1 adds 1): from X
      # itself, XLA's dot merger joins it to V·Xᵀ by copying V and X into one operand
      p = x[:, :pixels]
      gram = p @ p.T + 1.0
      cross = jnp.sum(ds * raw, axis=(1, 2))  # ⟨V, dSᵀX⟩
      sq = jnp.sum(ds * jnp.einsum('kcb,bB->kcB', ds, gram), axis=(1, 2))  # ‖dSᵀX‖²
      q = q + 2 * alpha * cross + alpha * alpha * sq
    v = v + jnp.einsum('kcb,bd->kcd', ds * alpha[:, None, None], x)
    return (v, c_next, q), loss

  def fold(v, c):  # V ← c·V, c ← 1, ‖V‖² exact
    v = c[:, None, None] * v
    return v, jnp.ones_like(c), jnp.sum(v * v, axis=(1, 2))

  def block(carry, inputs):
    carry, block_losses = jax.lax.scan(step, carry, inputs, unroll=max(1, min(
        unroll, jax.tree.leaves(inputs)[0].shape[0])))
    return (fold(*carry[:2]) if l2 else carry), block_losses  # without L2, c stays 1

  w = pad_features(state, spec, feature_pad).params['W'].astype(jnp.float32)
  carry = fold(w, jnp.ones((w.shape[0],), jnp.float32))
  inputs = (idx, step_lr, decay)
  blocks, tail = divmod(length, RENORM_EVERY)
  parts = []
  if blocks:
    head = jax.tree.map(lambda a: a[:blocks * RENORM_EVERY].reshape(
        (blocks, RENORM_EVERY) + a.shape[1:]), inputs)
    carry, head_losses = jax.lax.scan(block, carry, head)
    parts.append(head_losses.reshape((blocks * RENORM_EVERY,) + head_losses.shape[2:]))
  if tail:
    carry, tail_losses = block(carry, jax.tree.map(lambda a: a[blocks * RENORM_EVERY:], inputs))
    parts.append(tail_losses)
  w = carry[0]
  padded = state.replace(params={**state.params, 'W': w})
  w = unpad_features(padded, spec, feature_pad).params['W']
  return finish_chunk(state, w, lr, length), jnp.concatenate(parts, axis=0)


def chunk_draws(start, hp: dict, *, spec, length: int):
  """The chunk's shared minibatch indices `(length, B)` (`state.batch_indices`: the XLA step's
  draws) and each member's scheduled learning rate `(length, K)`."""
  steps = start + jnp.arange(length, dtype=jnp.int32)
  idx = jax.vmap(lambda t: batch_indices(hp['seed'][0], t, spec=spec))(steps)
  rate = lambda t: jax.vmap(lambda h: optim.learning_rate(
      spec.schedule, t, h, num_steps=spec.num_steps, decay_steps=spec.decay_steps))(hp)
  return idx.astype(jnp.int32), jax.vmap(rate)(steps).astype(jnp.float32)


def finish_chunk(state, w: Array, lr: Array, length: int):
  """The state after the chunk: W, and the sgd optimizer's state as `length` optax updates
  leave it (its step count, the last step's injected learning rate); frozen members kept."""
  training = ~state.diverged
  opt = state.opt_state
  opt = opt._replace(count=jnp.where(training, opt.count + length, opt.count),
                     hyperparams={**opt.hyperparams, 'learning_rate': jnp.where(
                         training, lr[-1], opt.hyperparams['learning_rate'])})
  params = {**state.params, 'W': w.astype(state.params['W'].dtype)}
  return state.replace(params=params, opt_state=opt)
