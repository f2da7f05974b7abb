"""Ways to move the parameters, chosen by `config.strategy`, all in optax's init/update shape.

A strategy is a pair of pure per-member functions (the loop vmaps them over members):

  init(params, hp, *, spec) -> state
  update(params, state, hp, x, y, step, *, spec, objective) -> (params, state, loss)

`x, y` is the step's minibatch (the whole training set when `batch_size=0`), `objective(params,
x, y, hp)` the training objective (mean data loss + λR), and `loss` the objective at the
parameters the step started from. Randomness comes from `fold_in(stream_key(seed, 'search'),
step)`, so a strategy needs no key in its state. The loop (`train.py`) does not care which
strategy runs.
"""

from typing import Callable, NamedTuple

import jax
import optax

from hinge_jax import optim, regularizers
from hinge_jax.registry import Registry


class Strategy(NamedTuple):
  init: Callable
  update: Callable
  uses_optimizer: bool  # whether optimizer.* settings mean anything to it


STRATEGIES: Registry[Strategy] = Registry('strategy')


def _sgd_init(params, hp, *, spec):
  return optim.init(spec.optimizer, hp, params)


def _sgd_update(params, opt_state, hp, x, y, step, *, spec, objective):
  loss, grads = jax.value_and_grad(objective)(params, x, y, hp)
  lr = optim.learning_rate(spec.schedule, step, hp, num_steps=spec.num_steps,
                           decay_steps=spec.decay_steps)
  opt_state = optim.with_learning_rate(opt_state, lr)
  updates, opt_state = optim.make(spec.optimizer).update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  if spec.max_norm:
    params = regularizers.project_max_norm(params, hp['max_norm'], bias_row=spec.bias_trick)
  return params, opt_state, loss


# Mini-batch SGD with any optax optimizer; with batch_size=0 (the whole training set) it is
# full-batch gradient descent.
STRATEGIES.add('sgd', Strategy(_sgd_init, _sgd_update, uses_optimizer=True))


def get(name: str) -> Strategy:
  """The strategy registered under `name` (a ConfigError lists the choices otherwise)."""
  return STRATEGIES.get(name)
