"""Backend-dependent defaults of the training programs: the one place that asks the backend.

`Tuning` holds the speed settings of the compiled training loop; a field left None takes the
default for `jax.default_backend()`, decided here and nowhere else. Other programs, the same
model (each field says where the rounding may differ). Measured figures behind each default:
docs/performance.md.
"""

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from hinge_jax import scaled
from hinge_jax.datasets import Dataset

GUARDS = ('cond', 'select', 'deferred')
# Optimizers whose update of a zero weight with a zero gradient is zero, from zero-initialized
# state (`Tuning.feature_multiple`); one registered later is trained unpadded.
PAD_SAFE_OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam', 'adamw')
ACCELERATOR_FEATURE_MULTIPLE = 128  # aligned rows for a GPU's matmuls
# W = c·V (`scaled.py`) is the GPU default from this many members a device, where it wins
SCALED_MIN_MEMBERS = 512
# forward_feature_blocks: the smallest problem where two products beat one on the CPU
_SPLIT_MIN_FEATURES, _SPLIT_MIN_BATCH = 2048, 100


def on_cpu() -> bool:
  return jax.default_backend() == 'cpu'


@dataclasses.dataclass(frozen=True)
class Tuning:
  """Speed settings of the compiled training loop (None: this backend's default).

  Attributes:
    scan_unroll: training steps per iteration of the `lax.scan` loop. None: 1 on the CPU, 4
      on an accelerator (fewer iterations pay the loop's fixed cost).
    guard: how the divergence guard keeps a diverged member's last finite state: 'cond'
      selects only once some member has diverged (a `lax.cond`), 'select' selects every step,
      'deferred' trains the chunk unchecked and checks once at its end that every loss and
      final weight is finite, rerunning the chunk under 'select' where one is not
      (`Trainer.run_chunk`); a non-finite weight stays non-finite, so the end check sees any
      step's. Same values and divergence steps (deferred: the update may round differently in
      the last bit). None: 'deferred' for minibatches; for the full batch, whose chunks are
      short, 'cond' on the CPU and 'select' on an accelerator (a conditional there reads its
      predicate back to the host every step).
    compiler_options: XLA options for the training program only, as `(name, value)` pairs.
    fullbatch_bf16: a full-batch run on uint8 pixels keeps the training split on the device as
      bfloat16 (exact) and computes its products in bfloat16 halves (`fullbatch.py`: 16
      significant bits, float32 accumulation; changes the rounding). None: on an
      accelerator, where XLA would convert uint8 in a pass of its own; not on the CPU.
    feature_multiple: a minibatch SGD chunk whose members share their minibatches trains on
      the features zero-padded to a multiple of this (after the pixels, before the bias
      trick's 1), W padded to match and cut back on exit: the same model (a zero feature
      gets a zero gradient and stays 0 under `PAD_SAFE_OPTIMIZERS`), in rows a GPU's
      matmuls read aligned; sums may round differently. None: 1 (no padding) on the CPU,
      `ACCELERATOR_FEATURE_MULTIPLE` on an accelerator.
    scaled_decay: train a chunk as W = c·V (`scaled.py`) where `scaled.applies`: the update
      accumulates into W inside cuBLAS's backward GEMM, with no separate update pass. None:
      on a GPU where a device trains at least `SCALED_MIN_MEMBERS` members, decided by
      `Trainer.create` (`for_members`); such a member matches its run alone to float32
      rounding, not bitwise. False: XLA's step everywhere.
  """
  scan_unroll: Optional[int] = None
  guard: Optional[str] = None
  compiler_options: tuple = ()
  fullbatch_bf16: Optional[bool] = None
  feature_multiple: Optional[int] = None
  scaled_decay: Optional[bool] = None

  def __post_init__(self):
    if self.scan_unroll is not None and (not isinstance(self.scan_unroll, int)
                                         or self.scan_unroll < 1):
      raise ValueError(f'scan_unroll={self.scan_unroll!r} must be a positive integer or None')
    if self.guard is not None and self.guard not in GUARDS:
      raise ValueError(f'guard={self.guard!r} is not one of {GUARDS} (or None)')
    if self.feature_multiple is not None and (not isinstance(self.feature_multiple, int)
                                              or self.feature_multiple < 1):
      raise ValueError(f'feature_multiple={self.feature_multiple!r} must be a positive integer '
                       'or None')
    for name in ('fullbatch_bf16', 'scaled_decay'):
      value = getattr(self, name)
      if value is not None and not isinstance(value, (bool, np.bool_)):  # not 1 for True
        raise ValueError(f'{name}={value!r} must be True, False or None')
    try:
      options = dict(self.compiler_options)
    except (TypeError, ValueError):
      raise ValueError(f'compiler_options={self.compiler_options!r} must be a dict or '
                       '(name, value) pairs') from None
    object.__setattr__(self, 'compiler_options', tuple((str(k), v) for k, v in options.items()))

  def unroll(self, length: int) -> int:
    return max(1, min(length, self.scan_unroll or (1 if on_cpu() else 4)))

  def guard_mode(self, spec=None) -> str:
    """The guard a run of `spec` gets (see `guard`); without a spec, a per-step one."""
    if self.guard:
      return self.guard
    if spec is not None and not spec.full_batch:
      return 'deferred'
    return 'cond' if on_cpu() else 'select'

  def for_members(self, spec, members_per_device: int) -> 'Tuning':
    """This tuning with `scaled_decay=None` decided for `spec` on this backend, with
    `members_per_device` members on each device (what `Trainer.create` trains with)."""
    if self.scaled_decay is not None:
      return self
    on = (jax.default_backend() == 'gpu' and members_per_device >= SCALED_MIN_MEMBERS
          and scaled.applies(spec, self.guard_mode(spec)))
    return dataclasses.replace(self, scaled_decay=on)

  def scaled_mode(self, spec, guard: str) -> bool:
    """Whether a chunk of `spec` under `guard` trains as W = c·V (`scaled.py`)."""
    return bool(self.scaled_decay) and scaled.applies(spec, guard)

  def loop_block(self, spec) -> Optional[int]:
    """Steps an iteration of the outer loop holds where a chunk of `spec` is a loop of loops
    (W = c·V: `scaled.RENORM_EVERY`), else None (`hlo_kernels.loop_summary`'s `block`)."""
    return scaled.RENORM_EVERY if self.scaled_mode(spec, self.guard_mode(spec)) else None

  def program_options(self, spec, *, rerun: bool = False) -> dict:
    """XLA options for the chunk program of `spec` (`rerun`: the per-step rerun's):
    `compiler_options`, and on a GPU where the chunk trains as W = c·V, `scaled.GPU_OPTIONS`
    (unless set there)."""
    options = dict(self.compiler_options)
    guard = 'select' if rerun else self.guard_mode(spec)
    if jax.default_backend() == 'gpu' and self.scaled_mode(spec, guard):
      options = {**dict(scaled.GPU_OPTIONS), **options}
    return options

  def feature_pad(self, spec) -> int:
    """Zero features a training chunk appends (see `feature_multiple`): 0 where it does not
    apply (not minibatch `sgd`, members with their own minibatches, or an optimizer outside
    `PAD_SAFE_OPTIMIZERS`)."""
    if (spec.strategy != 'sgd' or spec.full_batch or not spec.shared_data
        or spec.optimizer not in PAD_SAFE_OPTIMIZERS):
      return 0
    default = 1 if on_cpu() else ACCELERATOR_FEATURE_MULTIPLE
    return -spec.num_features % (self.feature_multiple or default)

  def train_dtype(self, spec, dataset: Dataset):
    """The dtype the training split is stored in on the device (None: as the dataset has it)."""
    wanted = not on_cpu() if self.fullbatch_bf16 is None else self.fullbatch_bf16
    if not (wanted and spec.full_batch):
      return None
    if dataset.x['train'].dtype != np.uint8:
      if self.fullbatch_bf16:
        raise ValueError(f'fullbatch_bf16=True needs uint8 pixels (exact in bfloat16), not '
                         f'{dataset.x["train"].dtype}; leave it None')
      return None
    return jnp.bfloat16


def forward_feature_blocks(spec, num_members: int) -> int:
  """How many products a minibatch step's scores are computed as (`model.scores`).

  2 for a single SGD run on the CPU with D >= 2,048 features and a batch of >= 100, else 1:
  XLA's CPU runtime runs one (B, D)·(D, C) product on about one core, but two independent
  products over the halves of D one per core. Several members vmapped (already a large
  product), smaller problems and accelerators keep one product.
  """
  if (on_cpu() and num_members == 1 and spec.strategy == 'sgd'
      and not spec.full_batch and spec.num_features >= _SPLIT_MIN_FEATURES
      and spec.batch_size >= _SPLIT_MIN_BATCH):
    return 2
  return 1


def fullbatch_block_rows(num_rows: int) -> int:
  """Rows per block of the full-batch pass (`fullbatch.blocks`): on the CPU the largest of
  512, 256, 128 dividing `num_rows` (DeviceData pads to 128s), a block that stays in cache;
  on an accelerator all rows at once (one big matmul, the conversion fused into it)."""
  if not on_cpu():
    return num_rows
  for size in (512, 256, 128):
    if num_rows % size == 0:
      return size
  return num_rows
