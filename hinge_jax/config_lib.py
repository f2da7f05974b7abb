"""Config checks and the numeric hyperparameters that enter the compiled step as arrays.

`validate(config)` stops a run before anything is compiled, with one line naming the field
and what it accepts. `HYPER_FIELDS` maps each config field a sweep may vary to the name it
has inside the step; `hyper_arrays(configs)` stacks those values over members.
"""

import copy
import math

import ml_collections
import numpy as np
from absl import logging

from hinge_jax import losses, optim, regularizers, strategies
from hinge_jax.errors import ConfigError

# config field → key in the per-member hyperparameter dict (every value becomes an array).
HYPER_FIELDS = {
    'optimizer.learning_rate': 'learning_rate',
    'optimizer.momentum': 'momentum',
    'optimizer.b1': 'b1',
    'optimizer.b2': 'b2',
    'optimizer.eps': 'eps',
    'optimizer.weight_decay': 'weight_decay',
    'optimizer.decay_rate': 'decay_rate',
    'reg.strength': 'reg_strength',
    'reg.l1_ratio': 'l1_ratio',
    'reg.max_norm': 'max_norm',
    'loss.margin': 'margin',
    'init_scale': 'init_scale',
    'search.scale': 'search_scale',
    'search.step_size': 'search_step',
    'numerical.h': 'fd_h',
    'seed': 'seed',
}
SAMPLINGS = ('with_replacement', 'epochs')


def get_field(config: ml_collections.ConfigDict, dotted: str):
  """config['a.b.c'] for a dotted name (a ConfigError names the missing field)."""
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
      raise ConfigError(f'config has no field {dotted!r}')
    node = node[part]
  return node


def with_fields(config: ml_collections.ConfigDict, fields: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields replaced (`{'reg.strength': 0.0}`); the original
  stays untouched. A field the config lacks raises ConfigError."""
  out = copy.deepcopy(config)
  with out.unlocked():
    for dotted, value in fields.items():
      *parents, leaf = dotted.split('.')
      node = get_field(out, '.'.join(parents)) if parents else out
      if leaf not in node:
        raise ConfigError(f'config has no field {dotted!r}')
      node[leaf] = value
  return out


def hyper_arrays(configs, dtype=np.float32) -> dict:
  """Stacks each member's numeric hyperparameters into `(K,)` arrays of `dtype` (float64:
  the configs' exact values, for a float64 objective), the seed as uint32."""
  out = {}
  for field, key in HYPER_FIELDS.items():
    values = [get_field(c, field) for c in configs]
    out[key] = np.asarray(values, np.uint32 if key == 'seed' else dtype)
  return out


def _number(config, field: str, *, low=None, high=None, strict_low=False, integer=False):
  value = get_field(config, field)
  ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
  if integer and ok_type:
    ok_type = float(value) == int(value)
  if not ok_type or not math.isfinite(value):
    kind = 'an integer' if integer else 'a finite number'
    raise ConfigError(f'{field}={value!r} must be {kind}')
  if low is not None and (value <= low if strict_low else value < low):
    bound = f'> {low}' if strict_low else f'>= {low}'
    raise ConfigError(f'{field}={value} must be {bound}')
  if high is not None and value > high:
    raise ConfigError(f'{field}={value} must be <= {high}')
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks names and numeric ranges; raises ConfigError with one line on the first problem."""
  strategies.get(config.get('strategy', 'sgd'))
  losses.get(get_field(config, 'loss.name'))
  regularizers.get(get_field(config, 'reg.name'))
  optim.OPTIMIZERS.get(get_field(config, 'optimizer.name'))
  optim.SCHEDULES.get(get_field(config, 'optimizer.schedule'))
  if get_field(config, 'sampling') not in SAMPLINGS:
    raise ConfigError(f"sampling={config.sampling!r} is not known; choose one of: "
                      f"{', '.join(SAMPLINGS)}")
  _number(config, 'seed', low=0, integer=True, high=2**32 - 1)
  _number(config, 'reg.strength', low=0)
  _number(config, 'reg.l1_ratio', low=0, high=1)
  _number(config, 'reg.max_norm', low=0)
  _number(config, 'loss.margin', low=0, strict_low=True)
  _number(config, 'init_scale', low=0)
  _number(config, 'optimizer.learning_rate', low=0, strict_low=True)
  _number(config, 'optimizer.momentum', low=0, high=1)
  _number(config, 'optimizer.b1', low=0, high=1)
  _number(config, 'optimizer.b2', low=0, high=1)
  _number(config, 'optimizer.eps', low=0)
  _number(config, 'optimizer.weight_decay', low=0)
  _number(config, 'optimizer.decay_rate', low=0, strict_low=True)
  _number(config, 'optimizer.decay_steps', low=0, integer=True)
  _number(config, 'batch_size', low=0, integer=True)  # 0: the whole training set
  _number(config, 'num_steps', low=0, integer=True)
  _number(config, 'eval_every_steps', low=1, integer=True)
  _number(config, 'eval_batch_size', low=1, integer=True)
  _number(config, 'checkpoint_every_steps', low=0, integer=True)
  _number(config, 'checkpoint_keep', low=1, integer=True)
  if not isinstance(get_field(config, 'loss.squared'), bool):
    raise ConfigError(f'loss.squared={config.loss.squared!r} must be True or False')
  _number(config, 'search.scale', low=0, strict_low=True)
  _number(config, 'search.step_size', low=0, strict_low=True)
  _number(config, 'search.num_candidates', low=1, integer=True)
  _number(config, 'search.num_proposals', low=1, integer=True)
  _number(config, 'numerical.h', low=0, strict_low=True)
  _number(config, 'numerical.max_evals_per_step', low=1, integer=True)
  _number(config, 'numerical.chunk', low=1, integer=True)
  check_lbfgs(config)
  check_stop(config)
  for message in strategies.ignored_settings(config):  # once per run: validate runs once
    logging.warning(message)


SMOOTH_HINGES = ('multiclass_svm', 'one_vs_all')  # squared: differentiable everywhere
SMOOTH_REGULARIZERS = ('l2', 'none')


def check_lbfgs(config: ml_collections.ConfigDict) -> None:
  """Refuses `optimizer.name=lbfgs` where L-BFGS does not apply: it needs the whole training
  set every step (its line search compares objective values) and a differentiable objective."""
  if get_field(config, 'optimizer.name') not in optim.LINE_SEARCH_OPTIMIZERS:
    return
  memory = config.optimizer.get('memory_size', 10)
  if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
    raise ConfigError(f'optimizer.memory_size={memory!r} must be an integer >= 1')
  strategy = config.get('strategy', 'sgd')
  if strategy not in ('sgd', 'gradient_descent'):
    raise ConfigError(f'optimizer.name=lbfgs does not apply to strategy={strategy!r}; use '
                      f'strategy=sgd with batch_size=0 (or strategy=gradient_descent)')
  if strategy == 'sgd' and int(config.batch_size) != 0:
    raise ConfigError(f'optimizer.name=lbfgs needs the full batch (its line search compares '
                      f'objective values), not batch_size={config.batch_size}; set '
                      f'batch_size=0, or use a stochastic optimizer such as adam')
  smooth = ('softmax_cross_entropy, or loss.squared=True with loss.name=' + ' or '.join(
      SMOOTH_HINGES) + ', with reg.name=' + ' or '.join(SMOOTH_REGULARIZERS))
  loss, squared = config.loss.name, bool(config.loss.squared)
  if loss != 'softmax_cross_entropy' and not (loss in SMOOTH_HINGES and squared):
    what = f'loss.name={loss}' + ('' if squared else ' with loss.squared=False')
    raise ConfigError(f'optimizer.name=lbfgs needs a smooth objective, and {what} is not '
                      f'differentiable; use {smooth} (or a first-order optimizer)')
  if config.reg.name not in SMOOTH_REGULARIZERS:
    raise ConfigError(f'optimizer.name=lbfgs needs a smooth objective, and '
                      f'reg.name={config.reg.name} is not differentiable at 0; use {smooth}')
  if float(config.reg.max_norm) > 0:
    raise ConfigError(f'optimizer.name=lbfgs takes no max-norm projection '
                      f'(reg.max_norm={config.reg.max_norm:g}); set reg.max_norm=0')
  if config.optimizer.schedule != 'constant':
    logging.warning(f'optimizer.name=lbfgs takes its step from a line search, so '
                    f'optimizer.schedule={config.optimizer.schedule!r} is ignored; set '
                    f'optimizer.schedule=constant to silence this')


def check_stop(config: ml_collections.ConfigDict) -> None:
  """The `stop` block (absent: never stop early): tolerances None or > 0, counts >= 0."""
  stop = config.get('stop')
  if stop is None:
    return
  for name in ('tol', 'grad_tol'):
    value = stop.get(name)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise ConfigError(f'stop.{name}={value!r} must be a positive number or None (no test)')
    if value <= 0:
      raise ConfigError(f'stop.{name}={value} must be > 0 (a relative decrease such as 1e-6), '
                        f'or None to leave this test off')
  _number(config, 'stop.max_steps', low=0, integer=True)
  _number(config, 'stop.check_every', low=0, integer=True)
