"""`dataset.name='npy'`: features and labels from .npy files or a .npz, memory-mapped.

For the linear-probe protocol (`hinge_jax/probe.py`): embeddings computed elsewhere, `(N, D)`
float16, float32 or uint8 with integer labels. `dataset.path` is a folder holding
`x_train.npy`, `y_train.npy` and optionally `x_val.npy`/`y_val.npy`, `x_test.npy`/`y_test.npy`,
or a .npz archive with those keys. The files are memory-mapped (`np.save`'s .npy files, and
the members of an uncompressed `np.savez` archive, read in place), so the only host copy of the
features is the one the device upload makes; a compressed member (`np.savez_compressed`) is
read once. float16 and uint8 stay in their dtype on the device. Missing val/test splits are
cut from train by `dataset.val_fraction`/`test_fraction` (a permuted copy).
"""

import os
import zipfile

import numpy as np

from hinge_jax.datasets.base import SPLITS, Dataset, finalize
from hinge_jax.datasets.loaders import LOADERS, common, declared_classes, given_splits, split
from hinge_jax.datasets.npz import object_refused, open_npz
from hinge_jax.errors import DataError

KEYS = tuple(f'{xy}_{s}' for s in SPLITS for xy in 'xy')
_SAVE_HINT = ('save them with np.save(DIR/x_train.npy, x), np.save(DIR/y_train.npy, y), or '
              'np.savez(FILE.npz, x_train=x, y_train=y)')


def open_npy(path: str, key: str) -> np.ndarray:
  """One .npy file, memory-mapped read-only (never unpickled)."""
  try:
    return np.load(path, mmap_mode='r', allow_pickle=False)
  except ValueError as e:
    if 'object' in str(e).lower() or 'pickle' in str(e).lower():
      raise object_refused(path, key)
    raise DataError(f'dataset.path: {path} could not be read as .npy ({e})')
  except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
    raise DataError(f'dataset.path: {path} could not be read as .npy ({type(e).__name__}: {e})')


def open_arrays(path: str) -> dict:
  """`{key: array}` of the folder's `KEYS`.npy files or of the .npz archive at `path`."""
  if os.path.isdir(path):
    found = {k: os.path.join(path, f'{k}.npy') for k in KEYS}
    arrays = {k: open_npy(p, k) for k, p in found.items() if os.path.isfile(p)}
    if not arrays:
      raise DataError(f'dataset.path={path!r} holds none of {", ".join(f"{k}.npy" for k in KEYS)}'
                      f'; {_SAVE_HINT}')
    return arrays
  if os.path.isfile(path):
    if not zipfile.is_zipfile(path):
      raise DataError(f'dataset.path={path!r} is neither a folder of .npy files nor a .npz '
                      f'archive; {_SAVE_HINT}')
    return open_npz(path)
  raise DataError(f'dataset.path={path!r} does not exist; point it at a folder with '
                  f'x_train.npy and y_train.npy, or at a .npz; {_SAVE_HINT}')


def check_keys(path: str, arrays: dict) -> list:
  """The val/test splits given (both or neither), and x_train/y_train present."""
  for key in ('x_train', 'y_train'):
    if key not in arrays:
      raise DataError(f'dataset.path={path!r} has no {key!r} (found: '
                      f'{", ".join(sorted(arrays)) or "nothing"}); {_SAVE_HINT}')
  return given_splits(arrays, f'dataset.path={path!r}')


def check_rank(path: str, arrays: dict) -> None:
  """Probe features are `(N, D)` rows: another rank is a mistake worth naming."""
  for key in (k for k in arrays if k.startswith('x_')):
    shape = arrays[key].shape
    if len(shape) != 2:
      fix = ('x[:, None] for one feature per example' if len(shape) == 1 else
             'pool them to one vector per example, or flatten with x.reshape(len(x), -1)')
      raise DataError(f'dataset.path={path!r}: {key} has shape {shape} (rank {len(shape)}); '
                      f'features must be (N, D), one row per example: {fix}')


@LOADERS.register('npy')
def load_npy(cfg) -> Dataset:
  """Features and labels from `dataset.path` (a folder of .npy files or a .npz), memory-mapped;
  checked by `validate`'s rules (`finalize`), C from `dataset.num_classes` or the labels."""
  path = str(cfg.get('path', '') or '')
  if not path:
    raise DataError(f'dataset.path is empty; point it at a folder with x_train.npy and '
                    f'y_train.npy, or at a .npz ({_SAVE_HINT})')
  num_classes = declared_classes(cfg)
  arrays = open_arrays(path)
  given = check_keys(path, arrays)
  check_rank(path, arrays)
  if given:
    x = {s: arrays[f'x_{s}'] for s in SPLITS}
    y = {s: arrays[f'y_{s}'] for s in SPLITS}
  else:
    x, y = split(cfg, arrays['x_train'], arrays['y_train'])
  return finalize('npy', x, y, num_classes=num_classes, **common(cfg))
