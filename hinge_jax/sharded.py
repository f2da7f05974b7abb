"""The training and evaluation programs of a data-sharded run, under `jax.shard_map`.

Each device runs the single-device code on its members ('members' axis) and its rows ('data'
axis); the spec's `data_axis` makes the full-batch sums and the per-shard minibatch
objective (`step.shard_objective`) reduce over the data axis with `psum`, and evaluation sums
its counts the same way. Nothing else crosses devices. Gradients are formed on each shard and
psum'd, never by differentiating a `psum`, so the programs skip shard_map's replication
typing (`check_vma=False`).
"""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from hinge_jax import step as step_lib
from hinge_jax.datasets import SPLITS
from hinge_jax.errors import ConfigError
from hinge_jax.mesh import DATA, MEMBERS, Layout

Array = jax.Array


def check_minibatches(config, spec, shards: int) -> None:
  """Minibatches on a data axis of `shards` devices (`mesh.data` > 1) drawn per shard: the
  batch splits evenly over the shards, drawn with replacement."""
  if spec.full_batch or (config.get('mesh') or {}).get('global_batch', False):
    return
  if spec.sampling != 'with_replacement':
    raise ConfigError(f'sampling={spec.sampling} with mesh.data={shards}: each data shard '
                      'draws with replacement; use sampling=with_replacement or '
                      'mesh.global_batch=True')
  if spec.batch_size % shards:
    raise ConfigError(f'batch_size={spec.batch_size} does not split over mesh.data={shards} '
                      f'shards; use a multiple of {shards} or mesh.global_batch=True')


def data_specs(data):
  """The `in_specs` of a `DeviceData`: every split by rows over 'data', the rest replicated."""
  rows = {split: P(DATA) for split in SPLITS}
  return data.replace(x=rows, y=dict(rows), mean=P(), scale=P())


def chunk_program(spec, length: int, tuning, layout: Layout, data, *, rerun: bool = False):
  """`step.chunk_program`'s program with the rows split over the data axis."""
  inner = dataclasses.replace(spec, data_axis=DATA, data_shards=layout.data_shards)
  deferred = tuning.guard_mode(spec) == 'deferred' and not rerun
  fn = functools.partial(step_lib.train_chunk_deferred if deferred else step_lib.train_chunk,
                         spec=inner, length=length, tuning=tuning)

  def body(state, start, data, hp):
    out = fn(state, start, data, hp)
    if deferred:  # every member shard's check, so all shards agree on a rerun
      bad = jax.lax.psum((~out[2]).astype(jnp.int32), MEMBERS)
      out = (out[0], out[1], bad == 0)
    return out

  out_specs = (P(MEMBERS), P(None, MEMBERS)) + ((P(),) if deferred else ())
  mapped = jax.shard_map(body, mesh=layout.mesh,
                         in_specs=(P(MEMBERS), P(), data_specs(data), P(MEMBERS)),
                         out_specs=out_specs, check_vma=False)
  return jax.jit(mapped, donate_argnums=() if deferred else 0)


def eval_program(chunk_fn: Callable, spec_fields, layout: Layout, data, split: str):
  """The jitted sums of `chunk_fn` (`train.eval_chunk`) over a whole split: each device walks
  its rows in eval chunks (padding rows masked), then the sums add up over 'data'."""
  n = data.size(split)

  def body(params, data, hp):
    x, y = data.x[split], data.y[split]
    rows, chunk = y.shape[0], data.chunk
    offset = jax.lax.axis_index(DATA) * rows

    def part(i):
      start = i * chunk
      xs = jax.lax.dynamic_slice_in_dim(x, start, chunk)
      ys = jax.lax.dynamic_slice_in_dim(y, start, chunk)
      valid = offset + start + jnp.arange(chunk) < n
      return chunk_fn(params, xs, ys, valid, data, hp, spec=spec_fields)

    # the first chunk starts the sums (its values carry the arguments' device variance)
    total, _ = jax.lax.scan(lambda t, i: (jax.tree.map(jnp.add, t, part(i)), None), part(0),
                            jnp.arange(1, rows // chunk))
    return jax.lax.psum(total, DATA)

  return jax.jit(jax.shard_map(body, mesh=layout.mesh,
                               in_specs=(P(MEMBERS), data_specs(data), P(MEMBERS)),
                               out_specs=P(MEMBERS), check_vma=False))
