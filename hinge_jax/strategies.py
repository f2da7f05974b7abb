"""Ways to move the parameters, chosen by `config.strategy`, all in optax's init/update shape.

The lecture's ladder, each rung a registered strategy:

| name | step |
|---|---|
| `random_search` | draw `search.num_candidates` W = `search.scale`·randn, keep the best if it beats the current W |
| `random_local_search` | propose W + `search.step_size`·randn (`search.num_proposals` at once), keep the best if the loss drops |
| `numerical_gradient` | the optimizer's step on the centered finite-difference gradient (`numerical.h`) |
| `gradient_descent` | the optimizer's step on `jax.grad`, always on the whole training set |
| `sgd` | the optimizer's step on `jax.grad` of a minibatch (`batch_size=0`: the whole set) |

A strategy is a pair of pure per-member functions (the loop vmaps them over members):

  init(params, hp, *, spec) -> state
  update(params, state, hp, x, y, step, *, spec, objective) -> (params, state, loss)

`x, y` is the step's minibatch (the whole training set when `batch_size=0` or for
`gradient_descent`), `objective(params, x, y, hp)` the training objective (mean data loss +
λR), and `loss` the objective at the parameters the step started from. The search strategies
compare candidates on the same `x, y`, so with `batch_size=0` (what the configs use, as the
notes do) they search on the training loss. Randomness comes from
`fold_in(stream_key(seed, 'search'), step)`, so a strategy needs no key in its state.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hinge_jax import numgrad, optim, regularizers
from hinge_jax.errors import ConfigError
from hinge_jax.registry import Registry
from hinge_jax.streams import stream_key


class Strategy(NamedTuple):
  init: Callable
  update: Callable
  uses_optimizer: bool  # whether optimizer.* settings mean anything to it
  full_batch: bool = False  # always trains on the whole training set (batch_size is ignored)


STRATEGIES: Registry[Strategy] = Registry('strategy')


# ----------------------------------------------------------------------------- gradient rungs


def _sgd_init(params, hp, *, spec):
  return optim.init(spec.optimizer, hp, params, memory_size=getattr(spec, 'memory_size', 10))


def _optimizer_step(params, opt_state, grads, hp, step, *, spec):
  """One step of the configured optax optimizer (scheduled lr, then max-norm projection)."""
  lr = optim.learning_rate(spec.schedule, step, hp, num_steps=spec.num_steps,
                           decay_steps=spec.decay_steps)
  opt_state = optim.with_learning_rate(opt_state, lr)
  updates, opt_state = optim.make(spec.optimizer).update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  if spec.max_norm:
    params = regularizers.project_max_norm(params, hp['max_norm'], bias_column=spec.bias_trick)
  return params, opt_state


def _sgd_update(params, opt_state, hp, x, y, step, *, spec, objective):
  loss, grads = jax.value_and_grad(objective)(params, x, y, hp)
  params, opt_state = _optimizer_step(params, opt_state, grads, hp, step, spec=spec)
  return params, opt_state, loss


def _numerical_gradient_update(params, opt_state, hp, x, y, step, *, spec, objective):
  """The optimizer's step with ∇ replaced by centered differences of step `numerical.h`."""
  f = lambda p: objective(p, x, y, hp)
  grads = numgrad.numerical_grad(f, params, hp['fd_h'], batch_size=spec.fd_chunk)
  params_new, opt_state = _optimizer_step(params, opt_state, grads, hp, step, spec=spec)
  return params_new, opt_state, f(params)


# Mini-batch SGD with any optax optimizer; with batch_size=0 (the whole training set) it is
# full-batch gradient descent.
STRATEGIES.add('sgd', Strategy(_sgd_init, _sgd_update, uses_optimizer=True))
# The same step, forced onto the whole training set every step.
STRATEGIES.add('gradient_descent', Strategy(_sgd_init, _sgd_update, uses_optimizer=True,
                                            full_batch=True))
STRATEGIES.add('numerical_gradient', Strategy(_sgd_init, _numerical_gradient_update,
                                              uses_optimizer=True))


# ----------------------------------------------------------------------------- search rungs


def _normal_like(key: jax.Array, params, num: int):
  """`num` standard-normal draws shaped like each leaf of `params`: leaves `(num, ...)`."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, (num,) + leaf.shape, leaf.dtype)
                                      for k, leaf in zip(keys, leaves)])


def _keep_best(params, loss, candidates, x, y, hp, objective):
  """The candidate of lowest objective if it beats `loss`, else `params`; and whether it did."""
  cand_loss = jax.vmap(lambda c: objective(c, x, y, hp))(candidates)
  cand_loss = jnp.where(jnp.isnan(cand_loss), jnp.inf, cand_loss)  # NaN never wins
  best = jnp.argmin(cand_loss)
  accept = cand_loss[best] < loss
  chosen = jax.tree.map(lambda c, p: jnp.where(accept, c[best], p), candidates, params)
  return chosen, accept


def _search_init(params, hp, *, spec):
  del params, hp, spec
  return {'accepted': jnp.zeros((), jnp.int32)}  # how many steps moved W


def _random_search_update(params, state, hp, x, y, step, *, spec, objective):
  """Strategy 1: W = scale·randn candidates, evaluated together; keep the best so far.

  The incumbent is W0 (`init_scale`·randn, itself a random guess); each step draws
  `spec.num_candidates` fresh candidates and keeps the best if its loss on this step's data is
  lower than the incumbent's. With `batch_size=0` this is the lecture's loop, vmapped.
  """
  key = jax.random.fold_in(stream_key(hp['seed'], 'search'), step)
  loss = objective(params, x, y, hp)
  candidates = jax.tree.map(lambda z: hp['search_scale'].astype(z.dtype) * z,
                            _normal_like(key, params, spec.num_candidates))
  params, accept = _keep_best(params, loss, candidates, x, y, hp, objective)
  return params, {'accepted': state['accepted'] + accept.astype(jnp.int32)}, loss


def _random_local_search_update(params, state, hp, x, y, step, *, spec, objective):
  """Strategy 2: propose W + step·randn (`spec.num_proposals` at once); keep if the loss drops."""
  key = jax.random.fold_in(stream_key(hp['seed'], 'search'), step)
  loss = objective(params, x, y, hp)
  candidates = jax.tree.map(lambda p, z: p[None] + hp['search_step'].astype(z.dtype) * z, params,
                            _normal_like(key, params, spec.num_proposals))
  params, accept = _keep_best(params, loss, candidates, x, y, hp, objective)
  return params, {'accepted': state['accepted'] + accept.astype(jnp.int32)}, loss


STRATEGIES.add('random_search', Strategy(_search_init, _random_search_update,
                                         uses_optimizer=False))
STRATEGIES.add('random_local_search', Strategy(_search_init, _random_local_search_update,
                                               uses_optimizer=False))


def get(name: str) -> Strategy:
  """The strategy registered under `name` (a ConfigError lists the choices otherwise)."""
  return STRATEGIES.get(name)


# ----------------------------------------------------------------------------- combinations


def ignored_settings(config) -> list[str]:
  """Warnings for settings the configured strategy ignores (the run goes on without them).

  The policy: settings that a strategy cannot use are *ignored with one warning line*, never
  silently. A search strategy follows no gradient, so an optimizer other than plain `sgd`, a
  schedule other than `constant`, or a max-norm constraint means nothing to it;
  `gradient_descent` always uses the whole training set, so a `batch_size` other than 0 is
  ignored. Combinations that cannot run at all are refused by `check_budget` / `validate`.
  """
  name = config.get('strategy', 'sgd')
  strategy = get(name)
  out = []
  if not strategy.uses_optimizer:
    opt = config.optimizer
    unused = []
    if opt.name != 'sgd':
      unused.append(f'optimizer.name={opt.name!r}')
    if opt.schedule != 'constant':
      unused.append(f'optimizer.schedule={opt.schedule!r}')
    if config.reg.max_norm > 0:
      unused.append(f'reg.max_norm={config.reg.max_norm:g}')
    if unused:
      out.append(f'strategy={name!r} follows no gradient, so {", ".join(unused)} '
                 f'(and the learning rate) are ignored; set optimizer.name=sgd, '
                 f'optimizer.schedule=constant, reg.max_norm=0 to silence this')
  if strategy.full_batch and int(config.batch_size) != 0:
    out.append(f'strategy={name!r} uses the whole training set every step, so '
               f'batch_size={config.batch_size} is ignored; set batch_size=0 to silence this')
  return out


def check_budget(config, num_params: int) -> None:
  """Refuses a `numerical_gradient` run whose step would cost more than the budget.

  One step costs 2·P evaluations of the objective for P parameters; the budget is
  `numerical.max_evals_per_step`.
  """
  if config.get('strategy', 'sgd') != 'numerical_gradient':
    return
  evals, budget = 2 * num_params, int(config.numerical.max_evals_per_step)
  if evals > budget:
    raise ConfigError(
        f'strategy=numerical_gradient needs 2·{num_params} = {evals} loss evaluations per step '
        f'(one pair per parameter), over numerical.max_evals_per_step={budget}; use '
        f'strategy=gradient_descent (jax.grad, exact and fast), a smaller problem, or raise '
        f'numerical.max_evals_per_step')
