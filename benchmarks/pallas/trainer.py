"""`fused.py`'s kernels plugged into hinge_jax's Trainer, for the benchmarks and their tests.

`PallasTuning` is `hinge_jax.tuning.Tuning` with the Pallas settings; `PallasTrainer` is
`hinge_jax.train.Trainer` whose chunk program runs the kernels where `fused.applies` (else,
and for a deferred guard's rerun, the package's XLA step). `trainer(...)` picks the class
for a tuning. The package itself never reaches this code.
"""

import dataclasses
import functools
from typing import Optional

import jax

from benchmarks.pallas import fused
from hinge_jax import step, train, tuning


@dataclasses.dataclass(frozen=True)
class PallasTuning(tuning.Tuning):
  """`Tuning` plus the Pallas chunk (not with `scaled_decay`).

  Attributes:
    pallas: 'step' (two kernels a step, for one or a few members) or 'update' (XLA's forward
      and loss, the backward product and the SGD update as one kernel, for many members);
      None: XLA's step.
    pallas_warps: Triton's warps per program (None: `fused.WARPS[mode]`).
    pallas_tile_rows: the rows of W one program of 'update''s kernel updates (None:
      `fused.WIDE_ROWS`).
    pallas_batch_rows: the minibatch rows an iteration of the kernels' loop over the batch
      takes (None: `fused.ROWS` for 'step', `fused.WIDE_BATCH` for 'update').
  """
  pallas: Optional[str] = None
  pallas_warps: Optional[int] = None
  pallas_tile_rows: Optional[int] = None
  pallas_batch_rows: Optional[int] = None

  def __post_init__(self):
    super().__post_init__()
    if self.scaled_decay and self.pallas:
      raise ValueError(f'scaled_decay=True and pallas={self.pallas!r} are two ways to train a '
                       'chunk: set one')
    for name, choices in (('pallas', fused.MODES), ('pallas_warps', fused.WARP_CHOICES),
                          ('pallas_tile_rows', fused.TILE_ROWS),
                          ('pallas_batch_rows', fused.BATCH_ROWS)):
      value = getattr(self, name)  # a bool is refused, not taken as 1
      if value is not None and (isinstance(value, bool) or value not in choices):
        raise ValueError(f'{name}={value!r} must be one of {choices} (or None)')

  def pallas_mode(self, spec, guard: str) -> Optional[str]:
    """The `fused.py` mode a chunk of `spec` under `guard` trains with (None: XLA's step)."""
    return self.pallas if self.pallas and fused.applies(spec, guard, self.pallas) else None

  def for_members(self, spec, members_per_device: int) -> 'PallasTuning':
    if self.pallas and self.scaled_decay is None:  # W = c·V is never decided on with Pallas
      return dataclasses.replace(self, scaled_decay=False)
    return super().for_members(spec, members_per_device)


def pallas_chunk(state, start, data, hp, *, spec, length: int, tuning: PallasTuning):
  """`step.train_chunk_deferred`'s contract, `(state, losses, exact)`, from the kernels."""
  mode = tuning.pallas_mode(spec, 'deferred')
  if mode == 'step':
    chunk = functools.partial(fused.step_chunk,
                              batch_rows=tuning.pallas_batch_rows or fused.ROWS)
  else:
    chunk = functools.partial(fused.update_chunk,
                              tile_rows=tuning.pallas_tile_rows or fused.WIDE_ROWS,
                              batch_rows=tuning.pallas_batch_rows or fused.WIDE_BATCH)
  out, losses = chunk(state, start, data, hp, spec=spec, length=length,
                      unroll=tuning.unroll(length),
                      num_warps=tuning.pallas_warps or fused.WARPS[mode])
  return out, losses, step.end_check(state, out, losses)


@dataclasses.dataclass
class PallasTrainer(train.Trainer):
  """A Trainer whose chunk runs `fused.py`'s kernels where its `PallasTuning` applies."""

  def chunk_program(self, length: int, *, rerun: bool = False):
    tuned = self.tuning
    guard = tuned.guard_mode(self.spec)
    if (rerun or not isinstance(tuned, PallasTuning)
        or not tuned.pallas_mode(self.spec, guard)):
      return super().chunk_program(length, rerun=rerun)
    return jax.jit(functools.partial(pallas_chunk, spec=self.spec, length=length,
                                     tuning=tuned))


def trainer_class(tuned) -> type:
  """`PallasTrainer` for a `PallasTuning` that asks for Pallas, else the package's Trainer."""
  return PallasTrainer if getattr(tuned, 'pallas', None) else train.Trainer
