"""optax optimizers by name, with every numeric hyperparameter a traced array.

Each optimizer is wrapped in `optax.inject_hyperparams`, so its learning rate, momentum and
betas live in the optimizer state. `init(hp, params)` writes one member's values there (it
runs under `jax.vmap` for a sweep), and the training step overwrites the learning rate each
step with `learning_rate(step, hp)`: one compiled program serves every point of a sweep.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from hinge_jax import lbfgs
from hinge_jax.registry import Registry

Array = jax.Array
OPTIMIZERS: Registry[Callable[[dict], optax.GradientTransformation]] = Registry('optimizer.name')
SCHEDULES: Registry[Callable[..., Array]] = Registry('optimizer.schedule')


def _inject(factory, **static):
  return optax.inject_hyperparams(factory, static_args=tuple(static))


OPTIMIZERS.add('sgd', lambda hp: _inject(optax.sgd)(learning_rate=hp['learning_rate']))
OPTIMIZERS.add('momentum', lambda hp: _inject(optax.sgd, nesterov=False)(
    learning_rate=hp['learning_rate'], momentum=hp['momentum'], nesterov=False))
OPTIMIZERS.add('nesterov', lambda hp: _inject(optax.sgd, nesterov=True)(
    learning_rate=hp['learning_rate'], momentum=hp['momentum'], nesterov=True))
OPTIMIZERS.add('adagrad', lambda hp: _inject(optax.adagrad)(
    learning_rate=hp['learning_rate'], eps=hp['eps']))
OPTIMIZERS.add('rmsprop', lambda hp: _inject(optax.rmsprop)(
    learning_rate=hp['learning_rate'], decay=hp['b2'], eps=hp['eps']))
OPTIMIZERS.add('adam', lambda hp: _inject(optax.adam)(
    learning_rate=hp['learning_rate'], b1=hp['b1'], b2=hp['b2'], eps=hp['eps']))
OPTIMIZERS.add('adamw', lambda hp: _inject(optax.adamw)(
    learning_rate=hp['learning_rate'], b1=hp['b1'], b2=hp['b2'], eps=hp['eps'],
    weight_decay=hp['weight_decay']))
# L-BFGS: its step size comes from a line search (no learning rate, no schedule); full batch
# and smooth objectives only (`config_lib.check_lbfgs`). Registered for its name; the
# training step runs `lbfgs.members_step` on the state `lbfgs.init` makes (lbfgs.py).
OPTIMIZERS.add('lbfgs', lambda hp: optax.lbfgs(linesearch=lbfgs.line_search()))
LINE_SEARCH_OPTIMIZERS = ('lbfgs',)

# Scalar defaults used to build the transformation's structure; each member's own values
# replace them in the state at init.
_PLACEHOLDER = dict(learning_rate=1.0, momentum=0.9, b1=0.9, b2=0.999, eps=1e-8,
                    weight_decay=0.0)


def make(name: str) -> optax.GradientTransformation:
  """The named optimizer's transformation (its hyperparameters come from the state).

  Its update runs under JAX's standard dtype promotion: optax's bias correction raises an
  injected float32 decay to the int32 step count, which strict promotion (the tests') refuses.
  """
  tx = OPTIMIZERS.get(name)({k: jnp.float32(v) for k, v in _PLACEHOLDER.items()})

  def update(updates, state, params=None):
    with jax.numpy_dtype_promotion('standard'):
      return tx.update(updates, state, params)
  return optax.GradientTransformation(tx.init, update)


def init(name: str, hp: dict, params, *, memory_size: int = 10) -> optax.OptState:
  """Optimizer state for one member, holding that member's hyperparameters as arrays
  (L-BFGS: `lbfgs.init`)."""
  if name == 'lbfgs':
    return lbfgs.init(params, memory_size)
  return OPTIMIZERS.get(name)(hp).init(params)


def with_learning_rate(opt_state, lr: Array):
  """The state with its injected learning rate replaced (the schedule's value this step)."""
  return opt_state._replace(hyperparams={**opt_state.hyperparams, 'learning_rate': lr})


@SCHEDULES.register('constant')
def constant(step, hp, *, num_steps, decay_steps):
  del step, num_steps, decay_steps
  return hp['learning_rate']


@SCHEDULES.register('step')
def step_decay(step, hp, *, num_steps, decay_steps):
  """lr·rate^⌊step / decay_steps⌋: the assignment's decay once per epoch."""
  del num_steps
  return hp['learning_rate'] * hp['decay_rate'] ** jnp.floor(step / decay_steps)


@SCHEDULES.register('exponential')
def exponential(step, hp, *, num_steps, decay_steps):
  """lr·rate^(step / decay_steps), smooth."""
  del num_steps
  return hp['learning_rate'] * hp['decay_rate'] ** (step / decay_steps)


@SCHEDULES.register('cosine')
def cosine(step, hp, *, num_steps, decay_steps):
  """lr·½(1 + cos(π·step/num_steps)), from lr to 0 over the run."""
  del decay_steps
  progress = jnp.minimum(step / num_steps, 1.0)
  return hp['learning_rate'] * 0.5 * (1 + jnp.cos(jnp.pi * progress))


def learning_rate(name: str, step, hp: dict, *, num_steps: int, decay_steps: int) -> Array:
  """The learning rate at `step` (float32) under the named schedule."""
  step = jnp.asarray(step, jnp.float32)
  return SCHEDULES.get(name)(step, hp, num_steps=num_steps, decay_steps=decay_steps)
