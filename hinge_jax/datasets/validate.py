"""The checks every loader's arrays pass before anything is compiled, each failing as one line.

Features: real numbers (bool, int, uint or float; not strings, complex or objects), shaped
`(N, D)` or `(N, H, W[, C])` with at least one value per example, N equal to the number of
labels, the same number of values per example in every split, no NaN or infinity; the
training split not empty.

Labels (the rule for class ids): a 1-D array of integers (bool counts as 0/1), none negative,
all below the class count C. C is the loader's (a dataset's class list, or `dataset.num_classes`
for npz), else inferred as the largest label + 1, and then every id 0..C-1 must occur in some
split: a gap means a stray label (set `dataset.num_classes` if classes are truly absent).
Always 2 ≤ C ≤ MAX_CLASSES (100,000: CIFAR-100's 100 and ImageNet-21k's 21,841 fit), and the
training split holds at least 2 distinct classes. The cap is checked on the largest label
first, so an absurd one (10**12) fails at once, before anything of size C is allocated.
"""

from typing import Optional

import numpy as np

from hinge_jax import distributed
from hinge_jax.datasets import rows
from hinge_jax.errors import DataError

MAX_CLASSES = 100_000
FINITE_BLOCK = 1 << 22  # values checked for NaN/inf at a time (`finite`)
_RELABEL = 'np.unique(y, return_inverse=True)[1] maps any labels to 0..C-1'


def labels_shape_and_dtype(name: str, split: str, y: np.ndarray) -> None:
  """`y` must be a 1-D array of integer (or bool) class ids."""
  if y.ndim == 2 and y.shape[1] == 1:
    raise DataError(f'{name}: {split} labels have shape {y.shape}; they must be 1-D (N,): '
                    f'use y.ravel()')
  if y.ndim == 2:
    raise DataError(f'{name}: {split} labels have shape {y.shape}; they must be class ids of '
                    f'shape (N,), not one-hot rows: use y.argmax(axis=1)')
  if y.ndim != 1:
    raise DataError(f'{name}: {split} labels have shape {y.shape}; they must be class ids of '
                    f'shape (N,)')
  if y.dtype.kind not in 'biu':
    raise DataError(f'{name}: {split} labels have dtype {y.dtype}; they must be integer class '
                    f'ids 0..C-1 (whole-number floats: y.astype(np.int64); names or other '
                    f'values: np.unique(y, return_inverse=True)[1])')


def pair(name: str, split: str, x: np.ndarray, y: np.ndarray, *,
         allow_empty: bool = False) -> None:
  """One split's features and labels before any cut or reshape: dtypes, ranks, lengths, sizes."""
  labels_shape_and_dtype(name, split, y)
  if x.dtype.kind not in 'biuf':
    raise DataError(f'{name}: {split} features have dtype {x.dtype}; they must be real numbers '
                    f'(int, uint, float or bool): convert them with x.astype(np.float32)')
  if x.ndim < 2:
    raise DataError(f'{name}: {split} features have shape {x.shape}; they must be (N, D) or '
                    f'(N, H, W[, C]) with one row per label ({len(y)} labels): for one feature '
                    f'per example use x[:, None]')
  if len(x) != len(y):
    raise DataError(f'{name}: {split} has {len(x)} feature rows but {len(y)} labels; x and y '
                    f'must have the same length N (one label per example)')
  if int(np.prod(x.shape[1:])) == 0:
    raise DataError(f'{name}: {split} features have shape {x.shape}: no values per example; '
                    f'give at least one feature')
  if not allow_empty and len(y) == 0:
    raise DataError(f'{name}: the {split} split holds no examples; give at least one example '
                    f'of 2 or more classes')


def arrays(name: str, x: dict, y: dict) -> None:
  """Every split as `pair` checks it, the same values per example throughout, train not empty."""
  for split in x:
    pair(name, split, x[split], y[split], allow_empty=split != 'train')
  dims = {split: int(np.prod(v.shape[1:])) for split, v in x.items()}
  for split, dim in dims.items():
    if dim != dims['train']:
      raise DataError(f'{name}: {split} has {dim} features per example but train has '
                      f'{dims["train"]}; every split must have the same number')


def _check_count(name: str, num_classes) -> int:
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
    raise DataError(f'{name}: the number of classes {num_classes!r} must be an integer')
  if not 2 <= num_classes <= MAX_CLASSES:
    raise DataError(f'{name}: C={num_classes} classes; a classifier needs 2 to '
                    f'{MAX_CLASSES:,} classes (dataset.num_classes)')
  return int(num_classes)


def _block(v) -> np.ndarray:
  """This process's block of labels `v` as int64 (all of them in a one-process run)."""
  start, stop = rows.process_block(len(v)) if rows.several() else (0, len(v))
  return np.asarray(v[start:stop]).astype(np.int64)


def _extremes(present: dict) -> tuple[dict, dict]:
  """Each split's smallest and largest label; several processes: over every block."""
  if not rows.several():
    return ({s: int(v.min()) for s, v in present.items()},
            {s: int(v.max()) for s, v in present.items()})
  big = np.iinfo(np.int64).max
  parts = {s: _block(v) for s, v in present.items()}
  local = np.asarray([[p.min() if len(p) else big, -p.max() if len(p) else big]
                      for p in parts.values()], np.int64).reshape(-1, 2)
  low, high = distributed.gathered(local).min(axis=0).T
  return ({s: int(a) for s, a in zip(parts, low)}, {s: -int(b) for s, b in zip(parts, high)})


def _seen(present: dict, top: int) -> np.ndarray:
  """Which class ids 0..top occur in some split (every block's, summed over processes)."""
  seen = np.zeros(max(top + 1, 0), np.int64)
  for v in present.values():
    ids = _block(v)
    seen[ids[ids >= 0]] = 1
  return distributed.summed(seen) > 0


def num_classes(name: str, y: dict, declared: Optional[int]) -> int:
  """C by the module's rule (`declared` by the loader, or None: inferred); labels in range.
  Several processes: each reads only its block of each split's labels."""
  present = {split: v for split, v in y.items() if len(v)}
  lows, highs = _extremes(present)
  top = max(highs.values())
  if declared is None:
    if top >= MAX_CLASSES:
      raise DataError(f'{name}: the largest label is {top}; labels must be class ids 0..C-1 '
                      f'with C at most {MAX_CLASSES:,}: {_RELABEL}')
    missing = np.flatnonzero(~_seen(present, top))
    if len(missing):
      raise DataError(f'{name}: the labels go up to {top} but {len(missing)} of the class ids '
                      f'0..{top} never occur (first {missing[0]}); with dataset.num_classes=0 '
                      f'every id 0..C-1 must occur: relabel them ({_RELABEL}), or set '
                      f'dataset.num_classes={top + 1} if those classes have no examples')
    declared = max(top + 1, 1)
  for split, v in present.items():
    if lows[split] < 0 or highs[split] >= declared:
      ids = _block(v)
      bad = np.count_nonzero((ids < 0) | (ids >= declared))
      bad = int(distributed.summed(np.int64(bad)))
      raise DataError(f'{name}: {bad} {split} labels are outside [0, {declared}) (min '
                      f'{lows[split]}, max {highs[split]}); labels must be class ids '
                      f'0..{declared - 1}, none negative: {_RELABEL} (npz: or set '
                      f'dataset.num_classes)')
  if lows['train'] == highs['train']:
    raise DataError(f'{name}: every training label is {lows["train"]}; a classifier needs at '
                    f'least 2 classes in the training split: add examples of another class')
  return _check_count(name, declared)


def _non_finite(v: np.ndarray, step: int) -> int:
  """NaN/inf count of `v`, `step` rows at a time: a memory-mapped file is read once, with no
  full-size temporary."""
  return sum(int(v[i:i + step].size - np.count_nonzero(np.isfinite(v[i:i + step])))
             for i in range(0, len(v), step))


def finite(name: str, x: dict) -> None:
  """No NaN or infinite feature (float splits only: integer pixels are always finite); each
  process counts its block of rows (`rows.process_block`) and the counts are added."""
  floats = [split for split, v in x.items() if np.issubdtype(v.dtype, np.floating)]
  if not floats:
    return
  blocks = {split: rows.process_block(len(x[split])) for split in floats}  # this process's
  counts = np.asarray([_non_finite(x[s][slice(*blocks[s])], max(FINITE_BLOCK // max(
      int(np.prod(x[s].shape[1:])), 1), 1)) for s in floats], np.int64)
  bad = dict(zip(floats, (int(c) for c in distributed.summed(counts))))
  if sum(bad.values()):
    where = ', '.join(f'{split}: {n}' for split, n in bad.items() if n)
    raise DataError(f'{name}: the features hold {sum(bad.values())} NaN or infinite values '
                    f'({where}; float32 overflow counts); clean or impute them before training')
