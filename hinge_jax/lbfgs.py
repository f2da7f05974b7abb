"""L-BFGS for K members at once, with a line search that stays one batched pass a trial.

The direction is optax's: d = −P∇f from the memory of past steps (`optax.scale_by_lbfgs`).
optax's own zoom line search is slow under `jax.vmap`: its `lax.cond` between searching and
zooming becomes a select, so every trial evaluates the objective in both branches, and the
branches' operands (the whole training set) are broadcast to every member. Here the step
size is chosen at the level of all members instead, every trial one batched evaluation of
the members' objectives, where the features are shared by every member's product:

- step size 1 first (accepted almost every step); a member passes on the sufficient
  decrease test optax's zoom applies (Armijo's, or near the minimum Hager–Zhang's
  approximate one, which float32 needs);
- a member that failed halves its step size until it passes (at most `MAX_TRIALS` trials;
  none passing: it stays where it is). While at most a quarter of the members are left,
  a trial evaluates only them (gathered into a batch of K/4): one failing member no longer
  costs a pass over the data for every member.

No trial refines a step that passed: under `vmap` any member's extra trial is a pass over the
data for all of them (docs/performance.md).

Every objective here is convex, so the curvature pair of any step has sᵀy ≥ 0 and the
memory update stays valid without the Wolfe curvature test (optax skips a pair with sᵀy = 0).
A branch is taken only when some member needs it (its predicate is over all members).

A member whose last `STALL_STEPS` steps did not lower the objective has reached its float32
resolution (each such step would spend `MAX_TRIALS` trials on nothing): it steps by zero
from then on, which the first trial accepts.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
MAX_TRIALS = 20  # trials of a step's line search (step sizes 1, 1/2, ..., 2^-19)
SLOPE_RTOL, APPROX_DEC_RTOL = 1e-4, 1e-6  # optax's zoom defaults
STALL_STEPS = 5  # steps in a row without any decrease after which a member stops


def line_search() -> optax.GradientTransformationExtraArgs:
  """optax's zoom line search as `optax.lbfgs` configures it: its state holds a member's
  last step size, value, gradient and trial count here (`init`)."""
  return optax.scale_by_zoom_linesearch(max_linesearch_steps=MAX_TRIALS,
                                        initial_guess_strategy='one')


def init(params, memory_size: int = 10) -> dict:
  """One member's state: optax's memory and line-search states, and `flat`, its steps in a
  row that did not lower the objective."""
  return {'lbfgs': optax.scale_by_lbfgs(memory_size).init(params),
          'search': line_search().init(params), 'flat': jnp.zeros((), jnp.int32)}


@functools.partial(jax.jit, static_argnames='memory_size')
def current(params, opt_state: dict, memory_size: int = 10) -> tuple[Array, Array, Array]:
  """The members' (K,) objective, gradient norm and the next step's predicted decrease
  ½·∇fᵀP∇f at their current params, from the last step's line search and the memory: a
  convergence check without another pass over the data."""
  search = opt_state['search']
  squares = sum(jnp.sum(jnp.reshape(g * g, (g.shape[0], -1)), axis=1)
                for g in jax.tree.leaves(search.grad))

  def predicted(p, s):  # −½ of the next step's slope along its direction
    return -0.5 * _vdot(_descent(p, s, s['search'].grad, memory_size)[0], s['search'].grad)
  return search.value, jnp.sqrt(squares), jax.vmap(predicted)(params, opt_state)


def retry_batch(k: int) -> int:
  """The members a retry evaluates on their own, gathered, while no more are left (K/4)."""
  return k // 4


def _vdot(a, b) -> Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _direction(params, state, member_hp, first, *, value_fn: Callable, memory_size: int):
  """One member's value and gradient at `params` and its direction −P∇f (0 once stalled)."""
  f = lambda p: value_fn(p, member_hp)
  value, grads = jax.lax.cond(first, lambda p, s: jax.value_and_grad(f)(p),
                              lambda p, s: (s['search'].value, s['search'].grad), params, state)
  direction, lbfgs_state = _descent(params, state, grads, memory_size)
  return value, grads, direction, lbfgs_state, _vdot(direction, grads)


def _descent(params, state, grads, memory_size: int):
  """One member's direction −P∇f from its memory (optax's; 0 once stalled) and the memory
  with the last step's pair added."""
  direction, lbfgs_state = optax.scale_by_lbfgs(memory_size).update(grads, state['lbfgs'],
                                                                    params)
  stalled = state['flat'] >= STALL_STEPS
  return jax.tree.map(lambda d: jnp.where(stalled, jnp.zeros_like(d), -d), direction), lbfgs_state


def _trial(params, direction, member_hp, size, value, slope0, *, value_fn: Callable):
  """One member's value and gradient at params + size·d, and whether they decrease f
  enough: Armijo's test, or near the minimum Hager–Zhang's approximate one (both as
  optax's zoom line search tests them)."""
  point = jax.tree.map(lambda p, d: p + size.astype(d.dtype) * d, params, direction)
  value1, grads1 = jax.value_and_grad(lambda p: value_fn(p, member_hp))(point)
  slope1 = _vdot(direction, grads1)
  armijo = value1 - value - SLOPE_RTOL * size * slope0
  approx = jnp.maximum(slope1 - (2 * SLOPE_RTOL - 1) * slope0,
                       value1 - value - APPROX_DEC_RTOL * jnp.abs(value))
  return point, value1, grads1, jnp.minimum(armijo, approx) <= 0


def _members(ok: Array, a, b):
  """Per member: `a` where `ok`, else `b` (leaves with a leading members axis)."""
  return jax.tree.map(lambda x, y: jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, y),
                      a, b)


def members_step(params, opt_state, hp: dict, step: Array, *, value_fn: Callable,
                 memory_size: int, over_members: Callable):
  """One L-BFGS step of K members: `(params, opt_state, (K,) values at the old params)`.

  `value_fn(params, member_hp)`: one member's objective on the whole training set.
  `over_members(fn, in_axes, k)`: maps a one-member function over k members (`jax.vmap`).
  """
  k = jax.tree.leaves(hp)[0].shape[0]
  with jax.numpy_dtype_promotion('standard'):
    first = step == 0  # one scalar for every member: a real branch
    value, grads, direction, lbfgs_state, slope0 = over_members(
        lambda p, s, h: _direction(p, s, h, first, value_fn=value_fn,
                                   memory_size=memory_size), (0, 0, 0), k)(params, opt_state, hp)
    one_trial = lambda p, d, h, t, v, s0: _trial(p, d, h, t, v, s0, value_fn=value_fn)
    trial = over_members(one_trial, (0,) * 6, k)
    args = (params, direction, hp)
    size = jnp.ones_like(value)
    point, value1, grads1, ok = trial(*args, size, value, slope0)
    trials = jnp.ones_like(size, jnp.int32)
    few = retry_batch(k)

    def retry(size, current):
      """`current` (point, value, grads, ok) with the not yet accepted members' trials."""
      ok = current[-1]
      every = lambda: _members(ok, current, trial(*args, size, value, slope0))
      if few == 0:
        return every()

      def some():  # at most `few` members left: only they are evaluated
        idx = jnp.nonzero(~ok, size=few, fill_value=jnp.argmin(ok))[0]
        take = lambda tree: jax.tree.map(lambda a: a[idx], tree)
        part = over_members(one_trial, (0,) * 6, few)(*take((*args, size, value, slope0)))
        return jax.tree.map(lambda a, b: a.at[idx].set(b), current, part)
      return jax.lax.cond(jnp.sum(~ok) <= few, some, every)

    def halve(carry):  # every member not yet accepted halves its step size
      count, trials, size, point, value1, grads1, ok = carry
      size = jnp.where(ok, size, size / 2)
      point, value1, grads1, now = retry(size, (point, value1, grads1, ok))
      return count + 1, trials + ~ok, size, point, value1, grads1, now

    _, trials, size, point, value1, grads1, ok = jax.lax.while_loop(
        lambda c: ~jnp.all(c[-1]) & (c[0] < MAX_TRIALS), halve,
        (jnp.ones((), jnp.int32), trials, size, point, value1, grads1, ok))
    # a member that found no decrease stays where it was
    point, value1, grads1 = _members(ok, (point, value1, grads1), (params, value, grads))
    size = jnp.where(ok, size, 0.0)
    search = opt_state['search']
    search = search._replace(
        learning_rate=size, value=value1, grad=grads1,
        info=search.info._replace(
            num_linesearch_steps=trials.astype(search.info.num_linesearch_steps.dtype),
            decrease_error=jnp.where(ok, 0.0, jnp.inf).astype(search.info.decrease_error.dtype),
            curvature_error=jnp.zeros_like(search.info.curvature_error)))
    flat = jnp.where(value1 < value, 0, opt_state['flat'] + 1)  # NaN counts as flat
    return point, {'lbfgs': lbfgs_state, 'search': search, 'flat': flat}, value
