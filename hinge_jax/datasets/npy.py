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
from hinge_jax.errors import DataError

KEYS = tuple(f'{xy}_{s}' for s in SPLITS for xy in 'xy')
_SAVE_HINT = ('save them with np.save(DIR/x_train.npy, x), np.save(DIR/y_train.npy, y), or '
              'np.savez(FILE.npz, x_train=x, y_train=y)')


def _object_refused(path: str, key: str) -> DataError:
  return DataError(f'dataset.path={path!r}: {key!r} is an object array (pickled Python objects, '
                   f'never loaded); save numbers, e.g. np.asarray({key}, np.float32) or labels '
                   f'as np.int64')


def open_npy(path: str, key: str) -> np.ndarray:
  """One .npy file, memory-mapped read-only (never unpickled)."""
  try:
    return np.load(path, mmap_mode='r', allow_pickle=False)
  except ValueError as e:
    if 'object' in str(e).lower() or 'pickle' in str(e).lower():
      raise _object_refused(path, key)
    raise DataError(f'dataset.path: {path} could not be read as .npy ({e})')
  except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
    raise DataError(f'dataset.path: {path} could not be read as .npy ({type(e).__name__}: {e})')


def _member_in_place(path: str, f, info: zipfile.ZipInfo):
  """A stored (uncompressed) .npy member memory-mapped where it lies in the archive, or None
  when it cannot be (compressed, or an object dtype, which the caller refuses by name)."""
  if info.compress_type != zipfile.ZIP_STORED:
    return None
  f.seek(info.header_offset)
  local = f.read(30)
  if local[:4] != b'PK\x03\x04':
    return None
  start = info.header_offset + 30 + int.from_bytes(local[26:28], 'little') + int.from_bytes(
      local[28:30], 'little')
  f.seek(start)
  version = np.lib.format.read_magic(f)
  if version not in ((1, 0), (2, 0)):  # 3.0 (utf-8 field names): read the usual way
    return None
  read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)
  shape, fortran, dtype = read_header(f)
  if dtype.hasobject:
    return None
  offset = f.tell()
  if offset - start + int(np.prod(shape)) * dtype.itemsize != info.file_size:
    return None
  if int(np.prod(shape)) == 0:
    return np.zeros(shape, dtype)
  return np.memmap(path, dtype=dtype, mode='r', offset=offset, shape=shape,
                   order='F' if fortran else 'C')


def open_npz(path: str) -> dict:
  """The arrays of a .npz: stored members memory-mapped in place, compressed ones read once;
  object arrays refused by name (nothing is unpickled)."""
  arrays = {}
  try:
    with zipfile.ZipFile(path) as archive, open(path, 'rb') as f:
      for info in archive.infolist():
        if not info.filename.endswith('.npy'):
          continue
        key = info.filename[:-4]
        array = _member_in_place(path, f, info)
        if array is None:
          with archive.open(info) as member:
            try:
              array = np.lib.format.read_array(member, allow_pickle=False)
            except ValueError as e:
              if 'pickle' in str(e):
                raise _object_refused(path, key)
              raise
        arrays[key] = array
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 - a damaged archive or member: one line
    raise DataError(f'dataset.path={path!r} could not be read as .npz ({type(e).__name__}: {e})')
  return arrays


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
