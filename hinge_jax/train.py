"""Training and evaluation: one compiled path for a single run and for a sweep of K members.

A single run is a sweep of one member. Every array in the training state has a leading
members axis; the numeric hyperparameters (`hp`, see `config_lib.HYPER_FIELDS`) are `(K,)`
arrays, so one compiled program trains every member under `jax.vmap`. Steps are fused with
`jax.lax.scan` in chunks of `eval_every_steps` (shorter where a checkpoint is due); the
Python loop runs once per chunk.

Randomness: `jax.random.key(seed)` is split into named streams (`stream_key`); the batch at
step t comes from `fold_in(data_stream, t)`, so it depends only on the seed and the step.
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hinge_jax import (config_lib, fullbatch, fused, losses, model, optim, regularizers,
                       scaled, strategies)
from hinge_jax.objective import objective
from hinge_jax.datasets import SPLITS, Dataset, preprocess
from hinge_jax.errors import ConfigError
from hinge_jax.streams import STREAMS, stream_key  # noqa: F401 - re-exported

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything static about a run: it selects code and shapes (a change recompiles)."""
  strategy: str
  loss: str
  squared: bool
  reg: str
  regularize_bias: bool
  bias_trick: bool
  optimizer: str
  schedule: str
  num_steps: int
  decay_steps: int
  batch_size: int
  sampling: str
  num_train: int
  num_features: int
  num_classes: int
  full_batch: bool  # batch_size=0: every step sees the whole training set
  shared_data: bool  # every member has the same seed, so they share each minibatch
  max_norm: bool  # whether any member projects onto a max-norm ball
  num_candidates: int = 1  # random_search: candidates per step
  num_proposals: int = 1  # random_local_search: proposals per step
  fd_chunk: int = 256  # numerical_gradient: coordinates per vmapped batch

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, dataset: Dataset, hp: dict) -> 'Spec':
    steps_per_epoch = max(dataset.size('train') // max(int(config.batch_size), 1), 1)
    strategy = config.get('strategy', 'sgd')
    full_batch = int(config.batch_size) == 0 or strategies.get(strategy).full_batch
    return cls(
        strategy=strategy, loss=config.loss.name, squared=bool(config.loss.squared), reg=config.reg.name,
        regularize_bias=bool(config.reg.regularize_bias), bias_trick=dataset.bias_trick,
        optimizer=config.optimizer.name, schedule=config.optimizer.schedule,
        num_steps=int(config.num_steps),
        decay_steps=int(config.optimizer.decay_steps) or steps_per_epoch,
        batch_size=dataset.size('train') if full_batch else int(config.batch_size),
        sampling=config.sampling,
        num_train=dataset.size('train'), num_features=dataset.num_features,
        num_classes=dataset.num_classes, full_batch=full_batch,
        shared_data=bool(np.all(hp['seed'] == hp['seed'][0])),
        max_norm=bool(np.any(hp['max_norm'] > 0)),
        num_candidates=int(config.get('search', {}).get('num_candidates', 1)),
        num_proposals=int(config.get('search', {}).get('num_proposals', 1)),
        fd_chunk=int(config.get('numerical', {}).get('chunk', 256)))


GUARDS = ('cond', 'select', 'deferred')
# Optimizers whose update of a zero weight with a zero gradient is zero, from zero-initialized
# state (`Tuning.feature_multiple`); one registered later is trained unpadded.
PAD_SAFE_OPTIMIZERS = ('sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam', 'adamw')
ACCELERATOR_FEATURE_MULTIPLE = 128
# `Tuning.scaled_decay=None` trains as W = c·V on a GPU from this many members a device. On an
# H200 (benchmarks/gpu.py's `fused` section, one epoch of W = c·V over one of XLA's step) it
# took 0.87× the time at 2,048 members, 0.92× at 1,024, 0.98× at 512, 0.99× at 256 and
# 1.4–2.2× at 1 to 64.
SCALED_MIN_MEMBERS = 512


@dataclasses.dataclass(frozen=True)
class Tuning:
  """Speed settings of the compiled training loop: other programs, the same numbers (but see
  `fullbatch_bf16`).

  Attributes:
    scan_unroll: training steps per iteration of the `lax.scan` loop. None: 1 on the CPU, 4
      on an accelerator (fewer iterations pay the loop's fixed cost).
    guard: how the divergence guard keeps a diverged member's last finite state: 'cond'
      selects only once some member has diverged (a `lax.cond`), 'select' selects every step.
      'deferred' trains the chunk with no check per step (members frozen before it stay
      frozen) and checks once, at its end, that every loss was finite and every member's
      final weights are; only where one was not does `Trainer.run_chunk` rerun the chunk from
      its start under 'select'. A weight that turns inf or NaN stays non-finite under every
      later step (inf + u, NaN + u, inf·0), so the end check sees any step's. All three give
      the same values and divergence steps ('deferred': XLA fuses the update apart and may
      round it differently in the last bit; measured on the CPU with Adam). None: 'deferred'
      for minibatches; for the full batch, whose chunks are short (one step waited for its
      end check: 0.84 ms against 0.56 on an H200), 'cond' on the CPU and 'select' on an
      accelerator, where a conditional reads its predicate back to the host every step
      unless XLA records it in a command buffer (`compiler_options`). Measured, an epoch of
      CIFAR-shaped minibatches: on an H200 (benchmarks/gpu.py) 1,024 members 82.4 ms under
      'select', 67.0 ms 'deferred' (the update, W's penalty for the next step and no check:
      one pass over W), one model 5.47 and 5.48 ms; on the 2-core CPU one model's 1,000
      SVM steps 324 ms under 'cond', 307 ms 'deferred' (benchmarks/train_speed.py).
    compiler_options: XLA options for the training program only, as `(name, value)` pairs
      (for example `(('xla_gpu_enable_command_buffer', 'FUSION,CUBLAS,WHILE,CONDITIONAL'),)`).
    fullbatch_bf16: a full-batch run on uint8 pixels keeps the training split on the device as
      bfloat16 (exact) and computes its products from it in bfloat16 halves (`fullbatch.py`;
      16 significant bits, float32 accumulation). None: on an accelerator, not on the CPU,
      whose blocked pass over the uint8 data is faster. This one changes the rounding.
    feature_multiple: a minibatch SGD chunk whose members share their minibatches trains on
      the features zero-padded to a multiple of this many (pads after the pixels, before the
      bias trick's 1), with W padded to match on entry and cut back on exit: the same model
      (a zero feature's weight gets a zero gradient, from the data and from every
      regularizer, and stays 0 under every optimizer in `PAD_SAFE_OPTIMIZERS`), in rows the
      GPU's matmuls read aligned. None: 1 (no padding) on the CPU, where it did not pay;
      `ACCELERATOR_FEATURE_MULTIPLE` on an accelerator. Measured on an H200 (jax 0.11.2,
      CIFAR's 3,073 features, benchmarks/gpu.py): 1,024 members trained an epoch in 122.6 ms
      unpadded (cuBLAS's unaligned kernels), 81.3 ms at 3,136 (multiple 64), 82.8 ms at
      3,200 (128); one model in 6.57, 6.23 and 5.71 ms. Members that draw their own
      minibatches are not padded (K = 1,024: 703 ms an epoch unpadded, 1,077 ms at 64: the
      padded batches are materialized). The products' sums group differently, so float32
      rounding may differ from an unpadded run.
    pallas: train a chunk with hand-written kernels (`fused.py`) where `fused.applies`
      (plain minibatch SGD sharing minibatches, the deferred guard, the bias trick):
      'step' runs each step as two Pallas kernels (the WW SVM or softmax; for one or a few
      members, whose XLA step is about 11 launch-bound kernels on a GPU); 'update' keeps
      XLA's forward product and loss and runs the backward product and the SGD update as one
      Pallas kernel (any loss; for many members, whose step is bound by W's passes). The same
      model, sums grouped differently (float32 rounding differs). On the CPU the kernels run
      in Pallas's interpreter (for tests: slow). None: XLA's step. Timed on an H200
      (benchmarks/gpu.py's `fused` section), neither mode beat it anywhere: one model's epoch
      1.29× XLA's time under 'step' and 1.10× under 'update'; 1,024 members 1.63× under
      'update'. They stay for study and for cards where the balance differs.
    pallas_warps: Triton's warps per program for those kernels (None: `fused.WARPS`, 4 for
      'step' and 8 for 'update': at 4, 'update''s tile spills registers to local memory).
    pallas_tile_rows: the rows of W (members × classes) one program of 'update's kernel
      updates, by 128 features (None: `fused.WIDE_ROWS`, 128).
    pallas_batch_rows: the minibatch rows an iteration of the loop over the batch takes in
      'step''s update kernel and in 'update''s kernel (None: 32; one of `fused.BATCH_ROWS`):
      fewer, longer iterations against smaller tiles.
    scaled_decay: train a chunk as W = c·V (`scaled.py`) where `scaled.applies` (plain
      minibatch SGD sharing minibatches, the deferred guard, the bias trick, L2 on all of W
      or no regularizer): each member's decay is a scalar, so the update is an accumulate
      into W inside cuBLAS's backward GEMM and XLA's separate update pass goes (for many
      members, whose step is bound by W's passes). The same model, sums grouped differently.
      None: on a GPU where a device trains at least `SCALED_MIN_MEMBERS` members (and
      `pallas` is None), else off: `Trainer.create` decides it (`for_members`), where it
      knows the members a device trains (benchmarks/gpu.py's `fused` section times both).
      Such a member then matches its run alone (XLA's step) to float32 rounding, not
      bitwise; False keeps XLA's step everywhere. Not with `pallas`.
  """
  scan_unroll: Optional[int] = None
  guard: Optional[str] = None
  compiler_options: tuple = ()
  fullbatch_bf16: Optional[bool] = None
  feature_multiple: Optional[int] = None
  pallas: Optional[str] = None
  pallas_warps: Optional[int] = None
  pallas_tile_rows: Optional[int] = None
  pallas_batch_rows: Optional[int] = None
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
    if self.scaled_decay and self.pallas:
      raise ValueError(f'scaled_decay=True and pallas={self.pallas!r} are two ways to train a '
                       'chunk: set one')
    for name, choices in (('pallas', fused.MODES), ('pallas_warps', fused.WARP_CHOICES),
                          ('pallas_tile_rows', fused.TILE_ROWS),
                          ('pallas_batch_rows', fused.BATCH_ROWS)):
      value = getattr(self, name)  # a bool is refused, not taken as 1
      if value is not None and (isinstance(value, bool) or value not in choices):
        raise ValueError(f'{name}={value!r} must be one of {choices} (or None)')
    try:
      options = dict(self.compiler_options)
    except (TypeError, ValueError):
      raise ValueError(f'compiler_options={self.compiler_options!r} must be a dict or '
                       '(name, value) pairs') from None
    object.__setattr__(self, 'compiler_options', tuple((str(k), v) for k, v in options.items()))

  def unroll(self, length: int) -> int:
    default = 1 if jax.default_backend() == 'cpu' else 4
    return max(1, min(length, self.scan_unroll or default))

  def guard_mode(self, spec: Optional['Spec'] = None) -> str:
    """The guard a run of `spec` gets (see `guard`); without a spec, a per-step one."""
    if self.guard:
      return self.guard
    if spec is not None and not spec.full_batch:
      return 'deferred'
    return 'cond' if jax.default_backend() == 'cpu' else 'select'

  def pallas_mode(self, spec: 'Spec', guard: str) -> Optional[str]:
    """The `fused.py` mode a chunk of `spec` under `guard` trains with (None: XLA's step)."""
    return self.pallas if self.pallas and fused.applies(spec, guard, self.pallas) else None

  def for_members(self, spec: 'Spec', members_per_device: int) -> 'Tuning':
    """This tuning with `scaled_decay=None` decided for `spec` on this backend, with
    `members_per_device` members on each device (what `Trainer.create` trains with)."""
    if self.scaled_decay is not None:
      return self
    on = (jax.default_backend() == 'gpu' and not self.pallas
          and members_per_device >= SCALED_MIN_MEMBERS
          and scaled.applies(spec, self.guard_mode(spec)))
    return dataclasses.replace(self, scaled_decay=on)

  def scaled_mode(self, spec: 'Spec', guard: str) -> bool:
    """Whether a chunk of `spec` under `guard` trains as W = c·V (`scaled.py`)."""
    return bool(self.scaled_decay) and scaled.applies(spec, guard)

  def loop_block(self, spec: 'Spec') -> Optional[int]:
    """Steps an iteration of the outer loop holds where a chunk of `spec` is a loop of loops
    (W = c·V: `scaled.RENORM_EVERY`), else None (`hlo_kernels.loop_summary`'s `block`)."""
    return scaled.RENORM_EVERY if self.scaled_mode(spec, self.guard_mode(spec)) else None

  def program_options(self, spec: 'Spec', *, rerun: bool = False) -> dict:
    """XLA options for `chunk_program(spec, ..., rerun=rerun)`: `compiler_options`, and on a
    GPU where the chunk trains as W = c·V, `scaled.GPU_OPTIONS` (unless set there)."""
    options = dict(self.compiler_options)
    guard = 'select' if rerun else self.guard_mode(spec)
    if jax.default_backend() == 'gpu' and self.scaled_mode(spec, guard):
      options = {**dict(scaled.GPU_OPTIONS), **options}
    return options

  def feature_pad(self, spec: 'Spec') -> int:
    """Zero features a training chunk appends (see `feature_multiple`): 0 where it does not
    apply (not minibatch `sgd`, members with their own minibatches, or an optimizer outside
    `PAD_SAFE_OPTIMIZERS`)."""
    if (spec.strategy != 'sgd' or spec.full_batch or not spec.shared_data
        or spec.optimizer not in PAD_SAFE_OPTIMIZERS):
      return 0
    default = 1 if jax.default_backend() == 'cpu' else ACCELERATOR_FEATURE_MULTIPLE
    return -spec.num_features % (self.feature_multiple or default)

  def train_dtype(self, spec: 'Spec', dataset: Dataset):
    """The dtype the training split is stored in on the device (None: as the dataset has it)."""
    wanted = (jax.default_backend() != 'cpu' if self.fullbatch_bf16 is None
              else self.fullbatch_bf16)
    if not (wanted and spec.full_batch):
      return None
    if dataset.x['train'].dtype != np.uint8:
      if self.fullbatch_bf16:
        raise ValueError(f'fullbatch_bf16=True needs uint8 pixels (exact in bfloat16), not '
                         f'{dataset.x["train"].dtype}; leave it None')
      return None
    return jnp.bfloat16


@flax.struct.dataclass
class TrainState:
  """Training state of K members; every leaf has a leading members axis."""
  params: Any
  opt_state: Any  # the strategy's state (for sgd: the optax optimizer state)
  diverged: Array  # (K,) bool: frozen since its loss became NaN/inf
  diverged_step: Array  # (K,) int32: the step it diverged at, -1 if it did not


@flax.struct.dataclass
class DeviceData:
  """The splits on the device as stored (uint8 stays uint8), padded to whole eval chunks."""
  x: dict  # split → (N_padded, D_raw)
  y: dict  # split → (N_padded,)
  mean: Array  # (D_raw,)
  scale: Array  # ()
  bias_trick: bool = flax.struct.field(pytree_node=False)
  sizes: tuple = flax.struct.field(pytree_node=False)  # true N per split, in SPLITS order
  chunk: int = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, dataset: Dataset, eval_batch_size: int, sharding=None,
             train_dtype=None) -> 'DeviceData':
    """Puts the splits on the device (replicated over `sharding`'s mesh when given).

    `train_dtype`: stores the training split in this dtype (bfloat16 for uint8 pixels under
    `Tuning.fullbatch_bf16`: the same values), else as the dataset has it.
    """
    largest = max(dataset.size(s) for s in SPLITS)
    chunk = -(-min(eval_batch_size, largest) // 128) * 128  # a multiple of 128 rows
    xs, ys = {}, {}
    for split in SPLITS:
      n = dataset.size(split)
      pad = -(-max(n, 1) // chunk) * chunk - n
      x = np.pad(dataset.x[split], ((0, pad), (0, 0)))
      if split == 'train' and train_dtype is not None:
        x = x.astype(train_dtype)  # ml_dtypes' bfloat16 on the host: uint8 values are exact
      xs[split] = jax.device_put(x, sharding)
      ys[split] = jax.device_put(np.pad(dataset.y[split], (0, pad)), sharding)
    return cls(x=xs, y=ys, mean=jax.device_put(dataset.mean, sharding),
               scale=jax.device_put(np.float32(dataset.scale), sharding),
               bias_trick=dataset.bias_trick, sizes=tuple(dataset.size(s) for s in SPLITS),
               chunk=chunk)

  def size(self, split: str) -> int:
    return self.sizes[SPLITS.index(split)]

  def features(self, x_raw: Array, pad: int = 0) -> Array:
    return preprocess(x_raw, self.mean, self.scale, bias_trick=self.bias_trick, pad=pad)


# ----------------------------------------------------------------------------- the math


def batch_indices(seed: Array, step: Array, *, spec: Spec) -> Array:
  """The minibatch at `step` for `seed`: `(B,)` training indices.

  With replacement (the assignment's way), or as shuffled epochs: one permutation per epoch
  (the remainder of an epoch that does not fill a batch is skipped).
  """
  data_key = stream_key(seed, 'data')
  if spec.sampling == 'with_replacement':
    return jax.random.randint(jax.random.fold_in(data_key, step), (spec.batch_size,), 0,
                              spec.num_train)
  per_epoch = spec.num_train // spec.batch_size
  epoch, within = step // per_epoch, step % per_epoch
  order = jax.random.permutation(jax.random.fold_in(data_key, epoch), spec.num_train)
  return jax.lax.dynamic_slice(order, (within * spec.batch_size,), (spec.batch_size,))


# forward_feature_blocks: the smallest problem where two products beat one (measured)
_SPLIT_MIN_FEATURES, _SPLIT_MIN_BATCH = 2048, 100


def forward_feature_blocks(spec: Spec, num_members: int) -> int:
  """How many products a minibatch step's scores are computed as (`model.scores`).

  2 for a single SGD run on the CPU with D >= 2,048 features and a batch of >= 100, else 1.
  Profiled, XLA's CPU runtime runs a single (B, D)·(D, 10) product (YNNPACK) on about one
  core, the second worker joining for about half of it; two independent products over the
  halves of D it runs at the same time, one per core. Measured on the 2-core CPU the
  benchmarks ran on, with CIFAR-10's shapes (B = 200, D = 3,073): 0.40 → 0.34 ms a step;
  with B = 50 or D <= 1,024, or with several members vmapped (their product is already
  large), no gain or a loss. Accelerators keep one product.
  """
  if (jax.default_backend() == 'cpu' and num_members == 1 and spec.strategy == 'sgd'
      and not spec.full_batch and spec.num_features >= _SPLIT_MIN_FEATURES
      and spec.batch_size >= _SPLIT_MIN_BATCH):
    return 2
  return 1


def _all_finite(tree) -> Array:
  """(K,) bool: every float of member k is finite.

  Computed as isfinite(Σ 0·x): 0·x is 0 for a finite x and NaN for ±inf or NaN, so the sum is
  finite exactly when every element is (no overflow: the terms are 0). One fused reduction,
  cheaper on CPU than materializing isfinite's booleans and AND-reducing them.
  """
  leaves = [jnp.isfinite(jnp.sum(leaf * 0, axis=tuple(range(1, leaf.ndim))))
            for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]
  return functools.reduce(jnp.logical_and, leaves)


def _where_members(keep_old: Array, old, new):
  def pick(o, n):
    return jnp.where(keep_old.reshape((-1,) + (1,) * (n.ndim - 1)), o, n)
  return jax.tree.map(pick, old, new)


def _over_members(fn: Callable, in_axes: tuple, k: int) -> Callable:
  """`jax.vmap(fn, in_axes)` over the members axis; with one member, `fn` itself on the
  arrays with that axis dropped (and put back on the outputs): the same math, but XLA's CPU
  backend lays out an unbatched step's matmuls better than a batch of one.
  """
  if k > 1:
    return jax.vmap(fn, in_axes=in_axes)

  def one(*args):
    args = [jax.tree.map(lambda a: a[0], arg) if axis == 0 else arg
            for arg, axis in zip(args, in_axes)]
    return jax.tree.map(lambda a: a[None], fn(*args))
  return one


def train_step(state: TrainState, step: Array, data: DeviceData, hp: dict, *,
               spec: Spec, idx: Optional[Array] = None, guard: Optional[str] = None,
               feature_pad: int = 0) -> tuple[TrainState, Array]:
  """One step of the configured strategy for every member; NaN/inf members are frozen.

  `idx`: the step's shared minibatch indices when the caller drew them already (they equal
  `batch_indices(seed, step)`, drawn here otherwise). `guard`: see `Tuning.guard`.
  `feature_pad`: the minibatch gets this many zero features (`pad_features`: the state's W
  has them too). `guard='deferred'`: no check here; only the members diverged before the step
  stay frozen (`train_chunk_deferred` checks at the chunk's end).
  """
  k = hp['seed'].shape[0]
  if spec.full_batch:  # the whole training set every step, in one blocked pass (fullbatch.py)
    member_objective = fullbatch.make_objective(spec=spec)
  else:
    member_objective = functools.partial(objective, spec=spec,
                                         feature_blocks=forward_feature_blocks(spec, k))
  update = functools.partial(strategies.get(spec.strategy).update, spec=spec,
                             objective=member_objective)
  if spec.full_batch:
    x, y = fullbatch.blocks(data, spec.num_train)
    update = _over_members(update, (0, 0, 0, None, None, None), k)
  elif spec.shared_data:  # one gather and one conversion serve all members
    if idx is None:
      idx = batch_indices(hp['seed'][0], step, spec=spec)
    x, y = data.features(data.x['train'][idx], feature_pad), data.y['train'][idx]
    update = _over_members(update, (0, 0, 0, None, None, None), k)
  else:
    idx = jax.vmap(lambda s: batch_indices(s, step, spec=spec))(hp['seed'])
    x, y = data.features(data.x['train'][idx], feature_pad), data.y['train'][idx]
    update = jax.vmap(update, in_axes=(0, 0, 0, 0, 0, None))
  params, opt_state, loss = update(state.params, state.opt_state, hp, x, y, step)
  if guard == 'deferred':
    return state.replace(params=_where_members(state.diverged, state.params, params),
                         opt_state=_where_members(state.diverged, state.opt_state, opt_state)
                         ), loss
  ok = jnp.isfinite(loss) & _all_finite(params)
  newly = ~ok & ~state.diverged
  keep_old = state.diverged | ~ok
  freeze = lambda: (_where_members(keep_old, state.params, params),
                    _where_members(keep_old, state.opt_state, opt_state))
  if (guard or Tuning().guard_mode()) == 'cond':  # selects once some member has diverged
    params, opt_state = jax.lax.cond(jnp.any(keep_old), freeze, lambda: (params, opt_state))
  else:
    params, opt_state = freeze()
  return TrainState(
      params=params, opt_state=opt_state,
      diverged=keep_old,
      diverged_step=jnp.where(newly, step, state.diverged_step)), loss


def train_chunk(state: TrainState, start: Array, data: DeviceData, hp: dict, *, spec: Spec,
                length: int, tuning: Tuning = Tuning()) -> tuple[TrainState, Array]:
  """`length` steps from step `start`, fused with `lax.scan`; returns `(length, K)` losses.

  Shared minibatches are drawn for the whole chunk up front, in one vectorized call (the same
  draws per step): the PRNG's hash is then off the per-step path. `tuning` sets the loop's
  unrolling (by default a few steps on an accelerator), the guard (a deferred one is checked
  per step here: this is the program that reruns a chunk `train_chunk_deferred` found
  diverging) and the features' aligned width (`Tuning`).
  """
  guard = tuning.guard_mode(spec)
  return _scan_chunk(state, start, data, hp, spec=spec, length=length, tuning=tuning,
                     guard='select' if guard == 'deferred' else guard)


def train_chunk_deferred(state: TrainState, start: Array, data: DeviceData, hp: dict, *,
                         spec: Spec, length: int, tuning: Tuning = Tuning()
                         ) -> tuple[TrainState, Array, Array]:
  """`train_chunk` with the guard deferred to the chunk's end (`Tuning.guard='deferred'`).

  Returns `(state, losses, exact)`: `exact` (a bool scalar) says that no member that was
  training diverged in the chunk (every loss finite, every final weight finite), so the
  state and losses are `train_chunk`'s; where it is False, rerun `train_chunk` from `state`.
  """
  out, losses_ = _scan_chunk(state, start, data, hp, spec=spec, length=length, tuning=tuning,
                             guard='deferred')
  finite = jnp.all(jnp.isfinite(losses_), axis=0) & _all_finite(out.params)
  return out, losses_, jnp.all(state.diverged | finite)


def chunk_program(spec: Spec, length: int, tuning: Tuning, *, rerun: bool = False):
  """The jitted training program of `length` steps that `Trainer.run_chunk` runs:
  `train_chunk_deferred` under a deferred guard (keeping its input state, which a chunk that
  diverged reruns from), else `train_chunk` (donating it); `rerun=True`: the rerun's."""
  deferred = tuning.guard_mode(spec) == 'deferred' and not rerun
  return jax.jit(functools.partial(train_chunk_deferred if deferred else train_chunk,
                                   spec=spec, length=length, tuning=tuning),
                 donate_argnums=() if deferred else 0)


def _scan_chunk(state, start, data, hp, *, spec, length, tuning, guard):
  mode = tuning.pallas_mode(spec, guard)
  if mode:
    if mode == 'step':
      chunk = functools.partial(fused.step_chunk,
                                batch_rows=tuning.pallas_batch_rows or fused.ROWS)
    else:
      chunk = functools.partial(fused.update_chunk,
                                tile_rows=tuning.pallas_tile_rows or fused.WIDE_ROWS,
                                batch_rows=tuning.pallas_batch_rows or fused.WIDE_BATCH)
    return chunk(state, start, data, hp, spec=spec, length=length, unroll=tuning.unroll(length),
                 num_warps=tuning.pallas_warps or fused.WARPS[mode])
  unroll, pad = tuning.unroll(length), tuning.feature_pad(spec)
  if tuning.scaled_mode(spec, guard):
    return scaled.chunk(state, start, data, hp, spec=spec, length=length, feature_pad=pad,
                        unroll=unroll)
  steps = start + jnp.arange(length, dtype=jnp.int32)
  one_step = functools.partial(train_step, data=data, hp=hp, spec=spec, guard=guard,
                               feature_pad=pad)
  state = pad_features(state, spec, pad)
  if spec.shared_data and not spec.full_batch:
    indices = jax.vmap(lambda t: batch_indices(hp['seed'][0], t, spec=spec))(steps)
    state, chunk_losses = jax.lax.scan(
        lambda carry, inputs: one_step(carry, inputs[0], idx=inputs[1]),
        state, (steps, indices), unroll=unroll)
  else:
    state, chunk_losses = jax.lax.scan(one_step, state, steps, unroll=unroll)
  return unpad_features(state, spec, pad), chunk_losses


def _resize_features(state: TrainState, spec: Spec, pad: int, *, widen: bool) -> TrainState:
  """Every `(K, C, width)` leaf of the params and optimizer state (W and its slots) with `pad`
  zero columns inserted after the pixels' (before the bias trick's last one), or removed."""
  if not pad:
    return state
  cut = spec.num_features - spec.bias_trick  # where the pixels end
  width = spec.num_features if widen else spec.num_features + pad

  def resize(leaf):
    if getattr(leaf, 'ndim', 0) != 3 or leaf.shape[1:] != (spec.num_classes, width):
      return leaf
    middle = [jnp.zeros(leaf.shape[:2] + (pad,), leaf.dtype)] if widen else []
    return jnp.concatenate([leaf[..., :cut], *middle, leaf[..., width - spec.bias_trick:]],
                           axis=-1)
  return state.replace(params=jax.tree.map(resize, state.params),
                       opt_state=jax.tree.map(resize, state.opt_state))


def pad_features(state: TrainState, spec: Spec, pad: int) -> TrainState:
  """W (and its optimizer slots) with `pad` zero columns after the pixels' (before the bias
  trick's last one): the layout of `preprocess(..., pad=pad)`'s features."""
  return _resize_features(state, spec, pad, widen=True)


def unpad_features(state: TrainState, spec: Spec, pad: int) -> TrainState:
  """`pad_features` undone: the padded columns (zero in W) dropped."""
  return _resize_features(state, spec, pad, widen=False)


def init_state(hp: dict, *, spec: Spec) -> TrainState:
  """W0 = init_scale·randn from each member's init stream; optimizer state holds its hp."""
  def one(member_hp):
    params = model.init_params(stream_key(member_hp['seed'], 'init'), spec.num_features,
                               spec.num_classes, scale=member_hp['init_scale'],
                               use_bias=not spec.bias_trick)
    return params, strategies.get(spec.strategy).init(params, member_hp, spec=spec)
  params, opt_state = jax.vmap(one)(hp)
  k = hp['seed'].shape[0]
  return TrainState(params=params, opt_state=opt_state, diverged=jnp.zeros((k,), bool),
                    diverged_step=jnp.full((k,), -1, jnp.int32))


def eval_chunk(params, x_raw: Array, y: Array, valid: Array, data: DeviceData, hp: dict, *,
               spec: Spec) -> dict:
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


def penalty_values(params, hp: dict, *, spec: Spec) -> Array:
  """λ·R(params) for every member."""
  def one(p, member_hp):
    return member_hp['reg_strength'] * regularizers.penalty(
        p, spec.reg, regularize_bias=spec.regularize_bias, bias_column=spec.bias_trick,
        l1_ratio=member_hp['l1_ratio'])
  return jax.vmap(one)(params, hp)


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Trainer:
  """Compiled functions for one (config, dataset, members) setting, and the loop that uses them.

  Attributes:
    spec: the static part of the run.
    data: the splits on the device.
    hp: `(K,)` hyperparameter arrays.
    compile_time_s: seconds spent compiling (reported apart from training time).
    member_sharding: how the members axis is laid over devices (None: one device).
    tuning: speed settings of the training program (`Tuning`).
    reruns: chunks run twice: a deferred guard (`Tuning.guard`) found a member diverging.
  """
  spec: Spec
  data: DeviceData
  hp: dict
  eval_every: int
  compile_time_s: float = 0.0
  member_sharding: Any = None
  tuning: Tuning = Tuning()
  reruns: int = 0  # chunks a deferred guard found diverging and reran (`run_chunk`)
  _compiled: dict = dataclasses.field(default_factory=dict)  # shared by with_hyper copies

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, dataset: Dataset, member_configs: list,
             *, devices=None, spec: Optional[Spec] = None,
             tuning: Optional[Tuning] = None) -> 'Trainer':
    """Puts data and the members' hyperparameters on the device(s).

    With several `devices` (default: all local devices) and a number of members divisible by
    their count, the members axis is sharded over a 1-D mesh ('members') and the data are
    replicated: each device trains its own share of the members, with no communication.
    `spec` overrides the static settings (a sweep cut into programs shares one spec).
    `tuning`: speed settings of the training program (default `Tuning()`); its defaults that
    depend on the members a device trains are decided here (`Tuning.for_members`).
    """
    hp_np = config_lib.hyper_arrays(member_configs)
    spec = spec or Spec.create(config, dataset, hp_np)
    devices = list(jax.local_devices() if devices is None else devices)
    k, shards = len(member_configs), 1
    if len(devices) > 1 and k > 1 and k % len(devices) == 0:
      shards = len(devices)
      mesh = jax.sharding.Mesh(np.asarray(devices), ('members',))
      member_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('members'))
      replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    else:
      replicated = member_sharding = jax.sharding.SingleDeviceSharding(devices[0])
    tuning = (tuning or Tuning()).for_members(spec, k // shards)
    data = DeviceData.create(dataset, int(config.eval_batch_size), replicated,
                             train_dtype=tuning.train_dtype(spec, dataset))
    trainer = cls(spec=spec, data=data, hp={}, eval_every=int(config.eval_every_steps),
                  member_sharding=member_sharding, tuning=tuning)
    return trainer.with_hyper(hp_np)

  def with_hyper(self, hp_np: dict) -> 'Trainer':
    """The same compiled programs and data for another set of members of the same count."""
    hp = {k: jax.device_put(np.asarray(v), self.member_sharding) for k, v in hp_np.items()}
    if self.hp and hp['seed'].shape != self.hp['seed'].shape:
      raise ValueError('with_hyper needs the same number of members')
    return dataclasses.replace(self, hp=hp)

  @property
  def num_members(self) -> int:
    return int(self.hp['seed'].shape[0])

  def init(self) -> TrainState:
    """The members' initial state (compiled once, shared by `with_hyper` copies)."""
    if 'init' not in self._compiled:
      t0 = time.perf_counter()
      self._compiled['init'] = jax.jit(functools.partial(init_state, spec=self.spec),
                                       out_shardings=self.member_sharding).lower(self.hp).compile()
      self.compile_time_s += time.perf_counter() - t0
    return self._compiled['init'](self.hp)

  def compiled_chunk(self, state: TrainState, length: int, *, rerun: bool = False):
    """The compiled program of `length` training steps (compiled once per length).

    A `jax.stages.Compiled`: its `as_text()` is XLA's optimized program, what to read to see
    how a step was fused (which kernels, which matmul library calls). Under a deferred guard
    (`Tuning.guard`) it is `train_chunk_deferred`'s program, and `rerun=True` gives the one
    that reruns a chunk that diverged (`train_chunk`'s).
    """
    key = ('chunk', length, rerun)
    if key not in self._compiled:
      t0 = time.perf_counter()
      fn = chunk_program(self.spec, length, self.tuning, rerun=rerun)
      lowered = fn.lower(state, np.int32(0), self.data, self.hp)
      options = self.tuning.program_options(self.spec, rerun=rerun)
      try:
        self._compiled[key] = lowered.compile(compiler_options=options or None)
      except Exception as e:  # noqa: BLE001 - XLA's own error, rephrased in one line
        first = (str(e).strip().splitlines() or [''])[0]
        if not options or 'option' not in first:
          raise
        raise ValueError(f'XLA rejected tuning.compiler_options {options}: {first}; '
                         'fix the option name or value') from None
      self.compile_time_s += time.perf_counter() - t0
    return self._compiled[key]

  def run_chunk(self, state: TrainState, start: int, length: int) -> tuple[TrainState, Array]:
    """`length` steps from step `start`: `(state, (length, K) losses)`. Under a deferred guard
    it waits for the chunk's end check, and reruns the chunk under a per-step guard where a
    member diverged in it (`Tuning.guard`)."""
    # A NumPy scalar travels with the call's arguments; `jnp.int32(start)` first runs a program
    # of its own on the device, a conversion and a copy (seen in JAX's profiler on an H200: a
    # lone full-batch step took 0.64 ms with it, 0.50 ms without).
    args = (np.int32(start), self.data, self.hp)
    if self.tuning.guard_mode(self.spec) != 'deferred':
      return self.compiled_chunk(state, length)(state, *args)
    out, chunk_losses, exact = self.compiled_chunk(state, length)(state, *args)
    if bool(exact):
      return out, chunk_losses
    self.reruns += 1
    return self.compiled_chunk(state, length, rerun=True)(state, *args)

  def evaluate(self, params, split: str) -> dict:
    """Per-member `loss` (data loss + λR), `accuracy` and `confusion` on a split (numpy)."""
    n = self.data.size(split)
    chunk, total = self.data.chunk, None
    key = ('eval', str(self.data.x[split].dtype))  # the training split may be stored apart
    if key not in self._compiled:
      t0 = time.perf_counter()
      self._compiled[key] = jax.jit(functools.partial(eval_chunk, spec=self.spec)).lower(
          params, self.data.x[split][:chunk], self.data.y[split][:chunk],
          jnp.ones((chunk,), bool), self.data, self.hp).compile()
      if 'penalty' not in self._compiled:
        self._compiled['penalty'] = jax.jit(functools.partial(penalty_values, spec=self.spec)
                                            ).lower(params, self.hp).compile()
      self.compile_time_s += time.perf_counter() - t0
    for start in range(0, max(n, 1), chunk):
      valid = jnp.arange(start, start + chunk) < n
      part = self._compiled[key](params, self.data.x[split][start:start + chunk],
                                 self.data.y[split][start:start + chunk], valid, self.data,
                                 self.hp)
      total = part if total is None else jax.tree.map(jnp.add, total, part)
    total = jax.tree.map(np.asarray, total)
    penalty = np.asarray(self._compiled['penalty'](params, self.hp))
    conf = total['confusion']
    with np.errstate(invalid='ignore', divide='ignore'):
      acc = np.trace(conf, axis1=1, axis2=2) / n if n else np.full(self.num_members, np.nan)
      data_loss = total['loss_sum'] / n if n else np.full(self.num_members, np.nan)
    return {'loss': data_loss + penalty, 'data_loss': data_loss, 'accuracy': acc,
            'confusion': conf}

  def fit(self, state: TrainState, *, start_step: int = 0,
          on_eval: Optional[Callable[[int, TrainState, dict], bool]] = None,
          chunk_every: int = 0,
          on_chunk: Optional[Callable[[int, TrainState, dict], bool]] = None,
          pending: Optional[dict] = None) -> TrainState:
    """Trains from `start_step` to `spec.num_steps`, evaluating every `eval_every` steps.

    `on_eval(step, state, row)` receives each evaluation (`row` holds `(K,)` arrays); it
    returns False to stop early. Training also stops once every member has diverged.

    Resumable runs: `chunk_every > 0` also ends a compiled chunk every `chunk_every` steps,
    and `on_chunk(step, state, pending)` runs after every chunk (after `on_eval`); it returns
    False to stop (a checkpoint and a signal check go there). `pending` holds the batch-loss
    sums of the evaluation period so far (`{'sum': [K], 'count': [K]}`, JSON-able); passing
    it back with `start_step` resumes mid-period with the same `batch_loss` as an
    uninterrupted run. Chunk boundaries depend only on the step, so they are the same
    however often a run is restarted.
    """
    step = start_step
    k = self.num_members
    acc = {'sum': np.zeros(k), 'count': np.zeros(k, np.int64)}
    if pending:
      acc = {'sum': np.asarray(pending['sum'], np.float64),
             'count': np.asarray(pending['count'], np.int64)}
    while step < self.spec.num_steps:
      length = min(self.eval_every - step % self.eval_every, self.spec.num_steps - step)
      if chunk_every > 0:
        length = min(length, chunk_every - step % chunk_every)
      state, batch_losses = self.run_chunk(state, step, length)
      step += length
      values = np.asarray(batch_losses, np.float64)
      finite = np.isfinite(values)
      acc['sum'] = acc['sum'] + np.where(finite, values, 0.0).sum(axis=0)
      acc['count'] = acc['count'] + finite.sum(axis=0)
      stop = False
      if step % self.eval_every == 0 or step == self.spec.num_steps:
        train, val = self.evaluate(state.params, 'train'), self.evaluate(state.params, 'val')
        row = {'step': step, 'loss': train['loss'], 'train_accuracy': train['accuracy'],
               'val_accuracy': val['accuracy'], 'val_loss': val['loss'],
               'batch_loss': np.where(acc['count'] > 0,
                                      acc['sum'] / np.maximum(acc['count'], 1), np.nan),
               'learning_rate': np.asarray(jax.vmap(functools.partial(
                   optim.learning_rate, self.spec.schedule, step - 1,
                   num_steps=self.spec.num_steps, decay_steps=self.spec.decay_steps))(self.hp)),
               'diverged': np.asarray(state.diverged)}
        acc = {'sum': np.zeros(k), 'count': np.zeros(k, np.int64)}
        if on_eval is not None and on_eval(step, state, row) is False:
          stop = True
        if bool(np.all(row['diverged'])):
          stop = True
      if on_chunk is not None and on_chunk(step, state, {
          'sum': acc['sum'].tolist(), 'count': acc['count'].tolist()}) is False:
        stop = True
      if stop:
        break
    return state


def check_fits(config: ml_collections.ConfigDict, dataset: Dataset) -> None:
  """Config values that depend on the data: batch size against the training set."""
  n = dataset.size('train')
  if config.batch_size == 0 and config.sampling == 'epochs':
    raise ConfigError('batch_size=0 (full batch) and sampling=epochs do not mix; '
                      'use sampling=with_replacement')
  if config.batch_size > n and not strategies.get(config.strategy).full_batch:
    raise ConfigError(f'batch_size={config.batch_size} is larger than the training set '
                      f'({n} examples); use batch_size <= {n}')
  strategies.check_budget(config, dataset.num_features * dataset.num_classes
                          + (0 if dataset.bias_trick else dataset.num_classes))
