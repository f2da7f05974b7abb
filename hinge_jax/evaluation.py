"""Evaluation sums per member over a chunk of a split, and the penalty, each compiled once per
process for every Trainer whose spec fields and argument shapes agree (`shared_program`)."""

import collections
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from hinge_jax import losses, model
from hinge_jax.objective import penalty
from hinge_jax.state import DeviceData

Array = jax.Array


def eval_chunk(params, x_raw: Array, y: Array, valid: Array, data: DeviceData, hp: dict, *,
               spec) -> dict:
  """Sums over one chunk of a split, for every member: loss, correct count, confusion."""
  x = data.features(x_raw)

  def one(p, member_hp):
    s = model.scores(p, x)
    loss = losses.get(spec.loss)(s, y, margin=member_hp['margin'], squared=spec.squared)
    pred = jnp.argmax(s, axis=-1)
    conf = jnp.zeros((spec.num_classes, spec.num_classes), jnp.int32).at[y, pred].add(
        valid.astype(jnp.int32))
    return {'loss_sum': jnp.sum(jnp.where(valid, loss, 0.0)), 'confusion': conf}
  return jax.vmap(one)(params, hp)


def penalty_values(params, hp: dict, *, spec) -> Array:
  """λ·R(params) for every member (`objective.penalty`)."""
  return jax.vmap(functools.partial(penalty, spec=spec))(params, hp)


# The spec fields `eval_chunk` and `penalty_values` read: their programs are shared by every
# Trainer of the process whose fields and argument shapes agree (`shared_program`).
EvalFields = collections.namedtuple('EvalFields', 'loss squared num_classes')
PenaltyFields = collections.namedtuple('PenaltyFields', 'reg regularize_bias bias_trick')
_PROGRAMS: dict = {}


def shared_program(fn: Callable, fields: tuple, *args):
  """`fn(*args, spec=fields)` compiled once per process for these fields and the arguments'
  structure, shapes, dtypes and shardings."""
  leaves, treedef = jax.tree.flatten(args)
  key = (fn, fields, treedef, tuple((getattr(a, 'shape', ()), str(getattr(a, 'dtype', '')),
                                     getattr(a, 'sharding', None)) for a in leaves))
  if key not in _PROGRAMS:
    _PROGRAMS[key] = jax.jit(functools.partial(fn, spec=fields)).lower(*args).compile()
  return _PROGRAMS[key]
