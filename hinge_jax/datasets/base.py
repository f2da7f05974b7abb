"""The dataset record every loader returns, and the preprocessing shared by all of them.

A loader returns raw splits: features as stored (uint8 pixels stay uint8, a quarter of the
bytes of float32; float16 embeddings stay float16), integer labels, and what is known of the
images' shape. `finalize` then checks the arrays (`validate`: every loader's output, before
anything is compiled), computes the training mean, and records the preprocessing that the
jitted step applies on the device: x ↦ (x − mean)·scale, then the constant-1 bias feature.
"""

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hinge_jax import distributed
from hinge_jax.datasets import lazy, rows, validate
from hinge_jax.errors import DataError

SPLITS = ('train', 'val', 'test')
# Feature dtypes kept as stored (on the host, and on the device until a batch is converted)
KEPT_DTYPES = (np.dtype(np.uint8), np.dtype(np.float16), np.dtype(np.float32))


@dataclasses.dataclass
class Dataset:
  """Raw splits plus the preprocessing constants computed on the training split.

  Attributes:
    name: the dataset's name.
    x: split name → `(N, D)` raw features (uint8, float16 or float32), flattened.
    y: split name → `(N,)` int32 labels in [0, num_classes).
    num_classes: C.
    image_shape: `(H, W, channels)` (or `(H, W)`) of one example before flattening, if images.
    class_names: one name per class.
    mean: `(D,)` float32 training mean (zeros when centering is off).
    scale: multiplier applied after centering.
    bias_trick: whether a constant-1 feature is appended (then the model has no `b`).
  """
  name: str
  x: dict
  y: dict
  num_classes: int
  image_shape: Optional[tuple] = None
  class_names: Sequence[str] = ()
  mean: Optional[np.ndarray] = None
  scale: float = 1.0
  bias_trick: bool = False

  @property
  def raw_dim(self) -> int:
    return int(self.x['train'].shape[1])

  @property
  def num_features(self) -> int:
    """D as the model sees it (the bias feature included)."""
    return self.raw_dim + int(self.bias_trick)

  def size(self, split: str) -> int:
    return int(self.x[split].shape[0])


def preprocess(x: jax.Array, mean: jax.Array, scale, *, bias_trick: bool,
               dtype=jnp.float32, pad: int = 0) -> jax.Array:
  """Raw `(..., D)` features → model features, on the device: (x − mean)·scale [, 0…0] [, 1].

  Runs inside the jitted step, so uint8 data is converted only a batch at a time. `pad`
  zero features go after the pixels (before the bias trick's 1, which stays last): the
  training step's aligned width (`train.Tuning.feature_multiple`).
  """
  mean = jnp.asarray(mean, dtype).reshape((1,) * (x.ndim - 1) + (-1,))
  x = (x.astype(dtype) - mean) * jnp.asarray(scale, dtype)
  parts = [x]
  if pad:
    parts.append(jnp.zeros(x.shape[:-1] + (pad,), dtype))
  if bias_trick:
    parts.append(jnp.ones(x.shape[:-1] + (1,), dtype))
  return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else x


def split_by_fractions(x: np.ndarray, y: np.ndarray, *, val_fraction: float,
                       test_fraction: float, seed: int,
                       dataset_name: str = 'data') -> tuple[dict, dict]:
  """A seeded permutation of (x, y) cut into train/val/test; (x, y) checked first (`validate`)."""
  for name, f in (('dataset.val_fraction', val_fraction), ('dataset.test_fraction', test_fraction)):
    if not 0 <= f < 1:
      raise DataError(f'{name}={f} must be in [0, 1)')
  validate.pair(dataset_name, 'train', x, y)
  n = len(y)
  order = np.random.default_rng(seed).permutation(n)
  n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
  n_train = n - n_val - n_test
  if n_train <= 0:
    raise DataError(f'dataset.val_fraction + dataset.test_fraction leave no training examples '
                    f'out of {n}; lower them')
  cuts = {'train': order[:n_train], 'val': order[n_train:n_train + n_val],
          'test': order[n_train + n_val:]}
  if rows.several():  # permuted views: each process reads only its block's rows later
    x, y = lazy.wrap(x), lazy.wrap(y)
  return ({k: lazy.take(x, v) for k, v in cuts.items()},
          {k: lazy.take(y, v) for k, v in cuts.items()})


def finalize(name: str, x: dict, y: dict, *, num_classes: Optional[int], center: bool,
             scale: float, bias_trick: bool, image_shape=None, class_names=()) -> Dataset:
  """Checks raw splits (`validate`: before anything is compiled) and computes the training-set
  preprocessing constants. `num_classes=None` infers C from the labels by `validate`'s rule.
  Several processes: conversions stay lazy (`lazy.Rows`) and every check reads only this
  process's block of rows."""
  for split in SPLITS:
    x.setdefault(split, lazy.rows(x['train'], 0, 0))
    y.setdefault(split, lazy.rows(y['train'], 0, 0))
  validate.arrays(name, x, y)
  num_classes = validate.num_classes(name, y, num_classes)
  dim = int(np.prod(x['train'].shape[1:]))
  for split in SPLITS:
    x[split] = x[split].reshape(len(x[split]), dim)
    if x[split].dtype not in KEPT_DTYPES:  # uint8, float16, float32 stay; the rest → float32
      if rows.several():  # converted as each process reads its rows
        x[split] = lazy.wrap(x[split])
      with np.errstate(over='ignore'):  # beyond float32's range: inf, reported by `finite`
        x[split] = lazy.astype(x[split], np.float32)
  validate.finite(name, x)
  y = {k: lazy.astype(lazy.wrap(v) if rows.several() and v.dtype != np.int32 else v, np.int32)
       for k, v in y.items()}
  if not np.isfinite(scale):
    raise DataError(f'dataset.scale={scale} must be a finite number')
  mean = train_mean(x['train']) if center else np.zeros(x['train'].shape[1], np.float32)
  names = tuple(class_names) or tuple(str(c) for c in range(num_classes))
  return Dataset(name=name, x=x, y=y, num_classes=num_classes, image_shape=image_shape,
                 class_names=names, mean=mean, scale=float(scale), bias_trick=bias_trick)


def train_mean(x: np.ndarray) -> np.ndarray:
  """The `(D,)` float32 mean of the rows `x`, summed in float64. Several processes: each sums
  only its block (`rows.process_block`) and the sums are added (`distributed.summed`), so a
  memory map is read 1/P per process (the summation order differs from one process's)."""
  if not rows.several():
    return x.mean(axis=0, dtype=np.float64).astype(np.float32)
  start, stop = rows.process_block(len(x))
  total = distributed.summed(np.asarray(x[start:stop]).sum(axis=0, dtype=np.float64))
  return (total / max(len(x), 1)).astype(np.float32)
