"""One training step of K members, and a chunk of steps fused into one compiled program.

Every member's step is the same function under `jax.vmap` (one member: the function itself).
A chunk is a `lax.scan` over steps; a member whose loss or weights turn NaN/inf is frozen at
its last finite state (the divergence guard, `Tuning.guard`).
"""

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from hinge_jax import fullbatch, lbfgs, optim, scaled, strategies
from hinge_jax.objective import objective, penalty
from hinge_jax.state import (DeviceData, TrainState, batch_indices, pad_features, shard_rows,
                             unpad_features)
from hinge_jax.tuning import Tuning, forward_feature_blocks

Array = jax.Array


def all_finite(tree) -> Array:
  """(K,) bool: every float of member k is finite.

  Computed as isfinite(Σ 0·x): 0·x is 0 for a finite x and NaN for ±inf or NaN, so the sum is
  finite exactly when every element is (no overflow: the terms are 0). One fused reduction,
  cheaper on CPU than materializing isfinite's booleans and AND-reducing them.
  """
  leaves = [jnp.isfinite(jnp.sum(leaf * 0, axis=tuple(range(1, leaf.ndim))))
            for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
  return functools.reduce(jnp.logical_and, leaves)


def _where_members(keep_old: Array, old, new):
  def pick(o, n):
    return jnp.where(keep_old.reshape((-1,) + (1,) * (n.ndim - 1)), o, n)
  return jax.tree.map(pick, old, new)


def _over_members(fn: Callable, in_axes: tuple, k: int) -> Callable:
  """`jax.vmap(fn, in_axes)` over the members axis; with one member, `fn` itself on the
  arrays with that axis dropped (and put back on the outputs): the same math, but XLA's CPU
  backend lays out an unbatched step's matmuls better than a batch of one.
  """
  if k > 1:
    return jax.vmap(fn, in_axes=in_axes)

  def one(*args):
    args = [jax.tree.map(lambda a: a[0], arg) if axis == 0 else arg
            for arg, axis in zip(args, in_axes)]
    return jax.tree.map(lambda a: a[None], fn(*args))
  return one


def shard_objective(member_objective: Callable, weight: Array, *, spec) -> Callable:
  """The minibatch objective over every data shard's draws: Σ_s weight_s·(shard s's mean
  data loss) + λR, weight_s = its share of the rows (`batch_indices`). The data part and its
  gradient are formed on each shard and psum'd (a psum is never differentiated)."""

  def local(params, x, y, hp):
    return weight * (member_objective(params, x, y, hp) - penalty(params, hp, spec=spec))

  @jax.custom_vjp
  def data_part(params, x, y, hp):
    return jax.lax.psum(local(params, x, y, hp), spec.data_axis)

  def fwd(params, x, y, hp):
    return jax.lax.psum(jax.value_and_grad(local)(params, x, y, hp), spec.data_axis)

  def bwd(grads, cotangent):
    return (jax.tree.map(lambda g: cotangent * g, grads), None, None, None)

  data_part.defvjp(fwd, bwd)
  return lambda params, x, y, hp: data_part(params, x, y, hp) + penalty(params, hp, spec=spec)


def train_step(state: TrainState, step: Array, data: DeviceData, hp: dict, *,
               spec, idx: Optional[Array] = None, guard: Optional[str] = None,
               feature_pad: int = 0) -> tuple[TrainState, Array]:
  """One step of the configured strategy for every member; NaN/inf members are frozen.

  `idx`: the step's shared minibatch indices when the caller drew them already (they equal
  `batch_indices(seed, step)`, drawn here otherwise). `guard`: see `Tuning.guard`.
  `feature_pad`: the minibatch gets this many zero features (`pad_features`: the state's W
  has them too). `guard='deferred'`: no check here; only the members diverged before the step
  stay frozen (`train_chunk_deferred` checks at the chunk's end).
  """
  k = hp['seed'].shape[0]
  if spec.full_batch:  # the whole training set every step, in one blocked pass (fullbatch.py)
    member_objective = fullbatch.make_objective(spec=spec)
  else:
    member_objective = functools.partial(objective, spec=spec,
                                         feature_blocks=forward_feature_blocks(spec, k))
    if spec.data_axis:  # each data shard's own draws (`batch_indices`)
      rows = data.y['train'].shape[0]
      member_objective = shard_objective(
          member_objective, shard_rows(rows, spec=spec) / spec.num_train, spec=spec)
  update = functools.partial(strategies.get(spec.strategy).update, spec=spec,
                             objective=member_objective)
  if spec.full_batch and spec.optimizer in optim.LINE_SEARCH_OPTIMIZERS:  # lbfgs.py
    x, y = fullbatch.blocks(data, spec.num_train, spec.data_axis)
    update = lambda params, opt_state, hp_, x_, y_, step_: lbfgs.members_step(
        params, opt_state, hp_, step_, value_fn=lambda p, h: member_objective(p, x_, y_, h),
        memory_size=spec.memory_size, over_members=_over_members)
  elif spec.full_batch:
    x, y = fullbatch.blocks(data, spec.num_train, spec.data_axis)
    update = _over_members(update, (0, 0, 0, None, None, None), k)
  elif spec.shared_data:  # one gather and one conversion serve all members
    if idx is None:
      idx = batch_indices(hp['seed'][0], step, spec=spec, rows=data.y['train'].shape[0])
    x, y = data.features(data.x['train'][idx], feature_pad), data.y['train'][idx]
    update = _over_members(update, (0, 0, 0, None, None, None), k)
  else:
    rows = data.y['train'].shape[0]
    idx = jax.vmap(lambda s: batch_indices(s, step, spec=spec, rows=rows))(hp['seed'])
    x, y = data.features(data.x['train'][idx], feature_pad), data.y['train'][idx]
    update = jax.vmap(update, in_axes=(0, 0, 0, 0, 0, None))
  params, opt_state, loss = update(state.params, state.opt_state, hp, x, y, step)
  if guard == 'deferred':
    return state.replace(params=_where_members(state.diverged, state.params, params),
                         opt_state=_where_members(state.diverged, state.opt_state, opt_state)
                         ), loss
  ok = jnp.isfinite(loss) & all_finite(params)
  newly = ~ok & ~state.diverged
  keep_old = state.diverged | ~ok
  freeze = lambda: (_where_members(keep_old, state.params, params),
                    _where_members(keep_old, state.opt_state, opt_state))
  if (guard or Tuning().guard_mode()) == 'cond':  # selects once some member has diverged
    params, opt_state = jax.lax.cond(jnp.any(keep_old), freeze, lambda: (params, opt_state))
  else:
    params, opt_state = freeze()
  return TrainState(
      params=params, opt_state=opt_state,
      diverged=keep_old,
      diverged_step=jnp.where(newly, step, state.diverged_step)), loss


def scan_chunk(state, start, data, hp, *, spec, length, tuning, guard):
  """`length` steps from `start` under `guard`: `(state, (length, K) losses)`. W = c·V where
  `tuning.scaled_mode` says so, else `train_step` in a `lax.scan`."""
  unroll, pad = tuning.unroll(length), tuning.feature_pad(spec)
  if tuning.scaled_mode(spec, guard):
    return scaled.chunk(state, start, data, hp, spec=spec, length=length, feature_pad=pad,
                        unroll=unroll)
  steps = start + jnp.arange(length, dtype=jnp.int32)
  one_step = functools.partial(train_step, data=data, hp=hp, spec=spec, guard=guard,
                               feature_pad=pad)
  state = pad_features(state, spec, pad)
  if spec.shared_data and not spec.full_batch:
    rows = data.y['train'].shape[0]
    indices = jax.vmap(
        lambda t: batch_indices(hp['seed'][0], t, spec=spec, rows=rows))(steps)
    state, chunk_losses = jax.lax.scan(
        lambda carry, inputs: one_step(carry, inputs[0], idx=inputs[1]),
        state, (steps, indices), unroll=unroll)
  else:
    state, chunk_losses = jax.lax.scan(one_step, state, steps, unroll=unroll)
  return unpad_features(state, spec, pad), chunk_losses


def train_chunk(state: TrainState, start: Array, data: DeviceData, hp: dict, *, spec,
                length: int, tuning: Tuning = Tuning()) -> tuple[TrainState, Array]:
  """`length` steps from step `start`, fused with `lax.scan`; returns `(length, K)` losses.

  Shared minibatches are drawn for the whole chunk up front, in one vectorized call (the same
  draws per step): the PRNG's hash is then off the per-step path. `tuning` sets the loop's
  unrolling, the guard (a deferred one is checked per step here: this is the program that
  reruns a chunk `train_chunk_deferred` found diverging) and the features' aligned width.
  """
  guard = tuning.guard_mode(spec)
  return scan_chunk(state, start, data, hp, spec=spec, length=length, tuning=tuning,
                    guard='select' if guard == 'deferred' else guard)


def end_check(before: TrainState, after: TrainState, chunk_losses: Array) -> Array:
  """A bool scalar: no member that was training before the chunk diverged in it (every loss
  finite, every final weight finite)."""
  finite = jnp.all(jnp.isfinite(chunk_losses), axis=0) & all_finite(after.params)
  return jnp.all(before.diverged | finite)


def train_chunk_deferred(state: TrainState, start: Array, data: DeviceData, hp: dict, *,
                         spec, length: int, tuning: Tuning = Tuning()
                         ) -> tuple[TrainState, Array, Array]:
  """`train_chunk` with the guard deferred to the chunk's end (`Tuning.guard='deferred'`).

  Returns `(state, losses, exact)`: `exact` (`end_check`) says the state and losses are
  `train_chunk`'s; where it is False, rerun `train_chunk` from `state`.
  """
  out, losses_ = scan_chunk(state, start, data, hp, spec=spec, length=length, tuning=tuning,
                            guard='deferred')
  return out, losses_, end_check(state, out, losses_)


def chunk_program(spec, length: int, tuning: Tuning, *, rerun: bool = False):
  """The jitted training program of `length` steps that `Trainer.run_chunk` runs:
  `train_chunk_deferred` under a deferred guard (keeping its input state, which a chunk that
  diverged reruns from), else `train_chunk` (donating it); `rerun=True`: the rerun's."""
  deferred = tuning.guard_mode(spec) == 'deferred' and not rerun
  return jax.jit(functools.partial(train_chunk_deferred if deferred else train_chunk,
                                   spec=spec, length=length, tuning=tuning),
                 donate_argnums=() if deferred else 0)
