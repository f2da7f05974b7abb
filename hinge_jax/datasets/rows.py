"""Which rows of a split this process reads, and sums over every process's rows.

In a multi-process run each process reads only its contiguous block of a split for the host's
passes over the data (the training mean, the NaN check, the float64 objective); the small
partial sums (a `(D,)` sum, a count, K objectives and gradients) are then added across the
processes. The blocks are the rows a process's devices hold when the data axis spans every
process in order; one process reads every row, as before.
"""

from typing import Optional

import jax
import numpy as np
from jax.experimental import multihost_utils


def process_block(n: int, index: Optional[int] = None, count: Optional[int] = None
                  ) -> tuple[int, int]:
  """Rows `[start, stop)` of `n` that process `index` of `count` (default: this one of all)
  reads: equal contiguous blocks in process order, the last one shorter."""
  index = jax.process_index() if index is None else int(index)
  count = jax.process_count() if count is None else int(count)
  per = -(-n // count)
  return min(index * per, n), min((index + 1) * per, n)


def several() -> bool:
  """Whether this run spans processes: then the loaders hand over row-readable arrays
  (`lazy`) and each process reads only its block."""
  return jax.process_count() > 1


def gathered(a) -> np.ndarray:
  """Every process's host array `a` stacked in process order, `(P, ...)` (all processes must
  call it together); one process: `a[None]`."""
  a = np.asarray(a)
  if jax.process_count() == 1:
    return a[None]
  return np.asarray(multihost_utils.process_allgather(a[None], tiled=True))


def summed(tree):
  """Every process's `tree` of host arrays added up, in process order, float64 kept (all
  processes must call it together); one process: the tree itself."""
  if jax.process_count() == 1:
    return tree
  with jax.enable_x64(True):
    def one(a):
      a = np.asarray(a)
      parts = np.asarray(multihost_utils.process_allgather(a[None], tiled=True))
      return np.sum(parts.astype(a.dtype), axis=0)
    return jax.tree.map(one, tree)
