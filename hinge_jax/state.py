"""The training state of K members and the data on the device, with the draws a step reads.

Every leaf of `TrainState` has a leading members axis. `DeviceData` keeps the splits as stored
(uint8 stays uint8). The batch at step t comes from `fold_in(data_stream, t)`, so it depends
only on the seed and the step.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np

from hinge_jax import model, strategies
from hinge_jax.datasets import SPLITS, Dataset, preprocess
from hinge_jax.streams import stream_key

Array = jax.Array


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
             train_dtype=None, rows=None, shards: int = 1) -> 'DeviceData':
    """Puts the splits on the device (replicated over `sharding`'s mesh when given).

    `train_dtype`: stores the training split in this dtype (bfloat16 for uint8 pixels under
    `Tuning.fullbatch_bf16`: the same values), else as the dataset has it. `shards > 1`: every
    split is split by rows over `rows` (`mesh.Layout.rows`), padded to `shards` equal runs
    of whole eval chunks.
    """
    largest = max(dataset.size(s) for s in SPLITS)
    chunk = -(-min(eval_batch_size, largest) // 128) * 128  # a multiple of 128 rows
    if shards == 1:
      chunk = least_padding_chunk(largest, chunk)
    else:  # the fewest chunks that cover a shard of the largest split, made even
      per_shard = -(-largest // shards)
      chunk = -(-per_shard // -(-per_shard // chunk) // 128) * 128
    xs, ys = {}, {}
    for split in SPLITS:
      n = dataset.size(split)
      whole = chunk * shards
      padded = -(-max(n, 1) // whole) * whole
      dtype = train_dtype if split == 'train' and train_dtype is not None else None
      if shards > 1:  # each device's rows only: no padded copy of the whole split
        xs[split] = put_rows(dataset.x[split], padded, rows, dtype)
        ys[split] = put_rows(dataset.y[split], padded, rows)
        continue
      x = np.pad(dataset.x[split], ((0, padded - n), (0, 0)))
      if dtype is not None:
        x = x.astype(dtype)  # ml_dtypes' bfloat16 on the host: uint8 values are exact
      xs[split] = jax.device_put(x, sharding)
      ys[split] = jax.device_put(np.pad(dataset.y[split], (0, padded - n)), sharding)
    return cls(x=xs, y=ys, mean=jax.device_put(dataset.mean, sharding),
               scale=jax.device_put(np.float32(dataset.scale), sharding),
               bias_trick=dataset.bias_trick, sizes=tuple(dataset.size(s) for s in SPLITS),
               chunk=chunk)

  def size(self, split: str) -> int:
    return self.sizes[SPLITS.index(split)]

  def features(self, x_raw: Array, pad: int = 0) -> Array:
    return preprocess(x_raw, self.mean, self.scale, bias_trick=self.bias_trick, pad=pad)


def least_padding_chunk(rows: int, chunk: int) -> int:
  """The largest eval chunk of at most `chunk` rows that pads `rows` within 1 % of the least
  padding, in whole 512-row blocks (128 below 4,096 rows): the full-batch pass's best block."""
  unit = 512 if rows >= 4096 else 128
  sizes = range(unit, chunk + 1, unit) or [chunk]
  padded = {c: -(-rows // c) * c for c in sizes}
  return max(c for c in sizes if padded[c] <= min(padded.values()) + rows // 100)


def put_rows(a: np.ndarray, padded: int, sharding, dtype=None) -> Array:
  """`a` zero-padded to `padded` rows as a global array split by rows over `sharding`: each
  addressable device's rows are read from `a` (a memory map reads only those) and converted
  to `dtype` alone, so the host never holds a padded copy of the whole array."""

  def rows(index):
    start, stop, _ = index[0].indices(padded)
    part = np.asarray(a[min(start, len(a)):min(stop, len(a))])
    part = np.pad(part, ((0, stop - start - len(part)),) + ((0, 0),) * (a.ndim - 1))
    return part if dtype is None else part.astype(dtype)
  return jax.make_array_from_callback((padded,) + a.shape[1:], sharding, rows)


def initial_params(hp: dict, *, spec):
  """W0 = init_scale·randn from each member's init stream (b = 0 without the bias trick)."""
  return jax.vmap(lambda seed, scale: model.init_params(
      stream_key(seed, 'init'), spec.num_features, spec.num_classes, scale=scale,
      use_bias=not spec.bias_trick))(hp['seed'], hp['init_scale'])


def state_from_params(params, hp: dict, *, spec) -> TrainState:
  """The members' state at `params`: the strategy's initial state (it holds each member's
  hyperparameters), no member diverged."""
  opt_state = jax.vmap(lambda p, member_hp: strategies.get(spec.strategy).init(
      p, member_hp, spec=spec))(params, hp)
  k = hp['seed'].shape[0]
  return TrainState(params=params, opt_state=opt_state, diverged=jnp.zeros((k,), bool),
                    diverged_step=jnp.full((k,), -1, jnp.int32))


def init_state(hp: dict, *, spec) -> TrainState:
  """W0 = init_scale·randn from each member's init stream; optimizer state holds its hp."""
  return state_from_params(initial_params(hp, spec=spec), hp, spec=spec)


@functools.lru_cache(maxsize=None)
def _params_program(num_features: int, num_classes: int, bias_trick: bool, sharding):
  shape = _ParamShape(num_features, num_classes, bias_trick)
  return jax.jit(functools.partial(initial_params, spec=shape), out_shardings=sharding)


@dataclasses.dataclass(frozen=True)
class _ParamShape:
  """The fields of a spec that `initial_params` reads."""
  num_features: int
  num_classes: int
  bias_trick: bool


def initial_params_program(spec, sharding) -> Callable:
  """`initial_params` jitted for `spec`'s shapes, one program per process for every run of
  those shapes (it depends on nothing else): the random draws compile slowly on the CPU."""
  return _params_program(spec.num_features, spec.num_classes, spec.bias_trick, sharding)


def shard_rows(rows: int, *, spec) -> Array:
  """Inside `jax.shard_map` over `spec.data_axis`: the valid (unpadded) rows this shard holds
  of its `rows`; shard s holds the training rows [s·rows, (s+1)·rows)."""
  start = jax.lax.axis_index(spec.data_axis) * rows
  return jnp.clip(spec.num_train - start, 0, rows)


def batch_indices(seed: Array, step: Array, *, spec, rows: int = 0) -> Array:
  """The minibatch at `step` for `seed`: `(B,)` training indices.

  With replacement (the assignment's way), or as shuffled epochs: one permutation per epoch
  (the remainder of an epoch that does not fill a batch is skipped). Inside `jax.shard_map`
  over `spec.data_axis` (rows split over S shards, `rows` each): shard s draws B/S of its own
  valid rows uniformly with replacement from `fold_in(fold_in(data, step), s)`, local indices
  (`step.shard_objective` weighs its mean by its share of the rows: unbiased).
  """
  data_key = stream_key(seed, 'data')
  if spec.data_axis:
    key = jax.random.fold_in(jax.random.fold_in(data_key, step),
                             jax.lax.axis_index(spec.data_axis))
    return jax.random.randint(key, (spec.batch_size // spec.data_shards,), 0,
                              jnp.maximum(shard_rows(rows, spec=spec), 1))
  if spec.sampling == 'with_replacement':
    return jax.random.randint(jax.random.fold_in(data_key, step), (spec.batch_size,), 0,
                              spec.num_train)
  per_epoch = spec.num_train // spec.batch_size
  epoch, within = step // per_epoch, step % per_epoch
  order = jax.random.permutation(jax.random.fold_in(data_key, epoch), spec.num_train)
  return jax.lax.dynamic_slice(order, (within * spec.batch_size,), (spec.batch_size,))


def _resize_features(state: TrainState, spec, pad: int, *, widen: bool) -> TrainState:
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


def pad_features(state: TrainState, spec, pad: int) -> TrainState:
  """W (and its optimizer slots) with `pad` zero columns after the pixels' (before the bias
  trick's last one): the layout of `preprocess(..., pad=pad)`'s features."""
  return _resize_features(state, spec, pad, widen=True)


def unpad_features(state: TrainState, spec, pad: int) -> TrainState:
  """`pad_features` undone: the padded columns (zero in W) dropped."""
  return _resize_features(state, spec, pad, widen=False)
