"""Which rows of a split this process reads.

In a multi-process run each process reads only its contiguous block of a split for the host's
passes over the data (the training mean, the NaN check, the float64 objective); the small
partial sums (a `(D,)` sum, a count, K objectives and gradients) are then added across the
processes (`distributed.summed`). The blocks are the rows a process's devices hold when the
data axis spans every process in order; one process reads every row, as before.
"""

from typing import Optional

import jax


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
