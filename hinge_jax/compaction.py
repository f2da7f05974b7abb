"""Converged members leave the chunk program: `Trainer.fit` trains only the live ones.

Once a sweep's live members (neither converged nor diverged) fit a program of half the size,
a smaller program is compiled for them (its size a power of two the members axis divides,
padded with copies of the first live member) and the chunks train only them; the frozen
members keep their state and the evaluations of it. It pays where the work a step saves,
N·D·C per dropped member, outweighs compiling the smaller program (`COMPACT_MIN_FLOPS`).
"""

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from hinge_jax import distributed

# Compaction where it saves this many FLOPs a step: below it, compiling a smaller program costs
# more than it saves (docs/performance.md).
COMPACT_MIN_FLOPS = 1e9


def take_members(tree, members: np.ndarray, sharding=None):
  """The rows `members` of every leaf (laid over `sharding`'s members axis when given)."""
  return _take_program(sharding)(tree, jnp.asarray(members))


@functools.lru_cache(maxsize=None)
def _take_program(sharding):
  return jax.jit(lambda t, i: jax.tree.map(lambda a: a[i], t), out_shardings=sharding)


@jax.jit
def put_members(tree, members, part):
  """`tree` with rows `members` of every leaf replaced by the first rows of `part`'s."""
  n = members.shape[0]
  return jax.tree.map(lambda a, b: a.at[members].set(b[:n]), tree, part)


def fill(every, members: np.ndarray, part):
  """`every` (a dict of (K, ...) arrays, an array, or None) with rows `members` from `part`'s
  first rows (the padding's copies are not written)."""
  if part is None:
    return None
  live = len(np.unique(members))
  if isinstance(every, dict):
    out = {k: np.array(v) for k, v in every.items()}
    for k in out:
      out[k][members[:live]] = np.asarray(part[k])[:live]
    return out
  out = np.array(every)
  out[members[:live]] = np.asarray(part)[:live]
  return out


def shrunk(trainer, frozen: np.ndarray, current: int) -> Optional[np.ndarray]:
  """The members a smaller program would train (the live ones, padded to a power of two the
  members axis divides), or None where it does not pay: it must at most halve the `current`
  program and save `trainer.compact_min_flops` a step."""
  live = np.flatnonzero(~frozen)
  shards = trainer.layout.member_shards if trainer.layout is not None else 1
  size = max(1 << max(len(live) - 1, 0).bit_length(), shards)
  size = -(-size // shards) * shards
  per_member = (trainer.data.size('train') * trainer.spec.num_features
                * trainer.spec.num_classes)
  if (len(live) == 0 or 2 * size > current
      or (current - size) * per_member < trainer.compact_min_flops):
    return None
  return np.concatenate([live, np.full(size - len(live), live[0])]).astype(np.int32)


def members_trainer(trainer, members: np.ndarray):
  """A Trainer of these members (indices into `trainer`'s) on the same data; its programs are
  compiled once per member count and kept with `trainer`'s."""
  hp = {k: np.asarray(v)[members] for k, v in distributed.to_host(trainer.hp).items()}
  compiled = trainer._compiled.setdefault(('members', len(members)), {})  # noqa: SLF001
  return dataclasses.replace(trainer, hp={}, _compiled=compiled, reruns=0, compile_time_s=0.0,
                             convergence_record=None).with_hyper(hp)


@dataclasses.dataclass
class Part:
  """The live members a compacted `fit` trains: their indices into the whole run's (padded),
  their Trainer, and every member's evaluations when it was made (the frozen ones' stay).
  Its `evaluate` takes and returns the whole run's members, as `Trainer.evaluate` does."""
  members: np.ndarray
  trainer: Any
  kept: dict  # 'train', 'val': evaluations; 'grad_norm': (K,) or None

  @classmethod
  def create(cls, whole, members: np.ndarray, kept: dict) -> 'Part':
    return cls(members, members_trainer(whole, members), kept)

  def _take(self, tree):
    return take_members(tree, self.members, self.trainer.member_sharding)

  def evaluate(self, params, split: str) -> dict:
    return fill(self.kept[split], self.members, self.trainer.evaluate(self._take(params), split))

  def grad_norms(self, params) -> Optional[np.ndarray]:
    return fill(self.kept['grad_norm'], self.members,
                self.trainer._grad_norms(self._take(params)))  # noqa: SLF001

  def run(self, whole, state, start: int, length: int):
    """`length` steps of these members: the whole state with theirs updated, and `(length,
    K)` batch losses (NaN for the members not trained). Compile time and reruns go to
    `whole`'s."""
    sub, members = self.trainer, self.members
    compile_s, reruns = sub.compile_time_s, sub.reruns
    out, losses = sub.run_chunk(self._take(state), start, length)
    whole.compile_time_s += sub.compile_time_s - compile_s
    whole.reruns += sub.reruns - reruns
    live = len(np.unique(members))  # the padding repeats the first member: written once
    state = put_members(state, members[:live], out)
    values = np.full((length, whole.num_members), np.nan)
    values[:, members[:live]] = distributed.to_host(losses).astype(np.float64)[:, :live]
    return state, values
