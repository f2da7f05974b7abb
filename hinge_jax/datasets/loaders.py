"""The loader registry and the built-in in-memory loaders: digits, synthetic, npz.

A loader is a function `(dataset_config) -> Dataset`, registered by name in `LOADERS`;
`common` and `split` are the helpers every such loader shares. The image loaders (cifar10,
TFDS, synthetic_images) live in their own modules and register here too.
"""

import os
import zipfile
from typing import Callable, Optional

import ml_collections
import numpy as np

from hinge_jax.datasets import npz, rows
from hinge_jax.datasets.base import SPLITS, Dataset, finalize, split_by_fractions
from hinge_jax.errors import ConfigError, DataError
from hinge_jax.registry import Registry

LOADERS: Registry[Callable[[ml_collections.ConfigDict], Dataset]] = Registry('dataset.name')


def common(cfg) -> dict:
  """The preprocessing fields every loader passes to `finalize`: center, scale, bias_trick."""
  return dict(center=bool(cfg.get('center', True)), scale=float(cfg.get('scale', 1.0)),
              bias_trick=bool(cfg.get('bias_trick', False)))


def split(cfg, x, y) -> tuple[dict, dict]:
  """Train/val/test cut by `dataset.val_fraction`/`test_fraction`, seeded by `split_seed`."""
  return split_by_fractions(x, y, val_fraction=float(cfg.get('val_fraction', 0.15)),
                            test_fraction=float(cfg.get('test_fraction', 0.15)),
                            seed=int(cfg.get('split_seed', 0)), dataset_name=str(cfg.name))


@LOADERS.register('digits')
def load_digits(cfg) -> Dataset:
  """scikit-learn's digits: 1,797 real 8×8 grayscale images (pixels 0..16), 10 classes.

  Stored as uint8; split train/val/test by a permutation seeded with `dataset.split_seed`.
  """
  from sklearn.datasets import load_digits as sk_digits  # lazy: only this loader needs it
  bunch = sk_digits()
  x, y = split(cfg, bunch.images.astype(np.uint8).reshape(len(bunch.images), -1),
                bunch.target.astype(np.int32))
  return finalize('digits', x, y, num_classes=10, image_shape=(8, 8),
                  class_names=[str(c) for c in bunch.target_names], **common(cfg))


@LOADERS.register('synthetic')
def load_synthetic(cfg) -> Dataset:
  """Seeded Gaussian class clusters, for tests and benchmarks.

  `dataset.num_examples` points in `dataset.num_features` dimensions, `dataset.num_classes`
  clusters whose centres are `dataset.separation`·N(0, I) apart, unit noise. With
  `dataset.dtype='uint8'` the values are mapped to pixels 128 + 32·x, clipped to 0..255
  (CIFAR-shaped benchmarks).
  """
  n, d, c = int(cfg.num_examples), int(cfg.num_features), int(cfg.num_classes)
  for field, value, low in (('num_examples', n, 3), ('num_features', d, 1), ('num_classes', c, 2)):
    if value < low:
      raise DataError(f'dataset.{field}={value} must be at least {low}')
  rng = np.random.default_rng(int(cfg.get('split_seed', 0)))
  centres = float(cfg.get('separation', 1.0)) * rng.standard_normal((c, d), dtype=np.float32)
  y = rng.integers(0, c, n).astype(np.int32)
  x = centres[y] + rng.standard_normal((n, d), dtype=np.float32)
  dtype = cfg.get('dtype', 'float32')
  if dtype == 'uint8':
    x = np.clip(np.rint(128 + 32 * x), 0, 255).astype(np.uint8)
  elif dtype != 'float32':
    raise DataError(f"dataset.dtype={dtype!r} is not known; choose one of: float32, uint8")
  x, y = split(cfg, x, y)
  return finalize('synthetic', x, y, num_classes=c, **common(cfg))


@LOADERS.register('npz')
def load_npz(cfg) -> Dataset:
  """Your own arrays from `dataset.path` (a .npz file).

  Keys `x_train`, `y_train` and optionally `x_val`, `y_val`, `x_test`, `y_test`; missing
  val/test splits are cut from train by `dataset.val_fraction`/`test_fraction`. The number
  of classes is `dataset.num_classes` if set (> 0), else the largest label + 1; the arrays
  are checked by `validate`'s rules (shapes, lengths, integer labels, class-id range).
  Several processes: the stored members are memory-mapped (`npz.open_npz`), so each process
  reads only its rows; a compressed member is read whole.
  """
  path = cfg.get('path', '')
  if not path or not os.path.isfile(path):
    raise DataError(f'dataset.path={path!r} is not a file; point it at a .npz with x_train, y_train')
  if rows.several() and zipfile.is_zipfile(path):  # each process reads only its rows
    arrays = npz.open_npz(path)
  else:
    arrays = read_npz(path)
  for key in ('x_train', 'y_train'):
    if key not in arrays:
      raise DataError(f'{path} has no array {key!r} (found: {", ".join(sorted(arrays))})')
  given = given_splits(arrays, path)
  if given:
    x = {s: arrays[f'x_{s}'] for s in SPLITS}
    y = {s: arrays[f'y_{s}'] for s in SPLITS}
  else:
    x, y = split(cfg, arrays['x_train'], arrays['y_train'])
  image_shape = tuple(arrays['x_train'].shape[1:]) if arrays['x_train'].ndim > 2 else None
  return finalize('npz', x, y, num_classes=declared_classes(cfg), image_shape=image_shape,
                  **common(cfg))


def declared_classes(cfg) -> Optional[int]:
  """npz's `dataset.num_classes`: an integer >= 0; 0 (None here) infers C from the labels."""
  value = cfg.get('num_classes', 0)
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ConfigError(f'dataset.num_classes={value!r} must be an integer >= 0 (0: inferred from '
                      f'the labels)')
  return value or None


def read_npz(path: str) -> dict:
  """The arrays of a .npz archive, read without pickle: an object array is refused by name."""
  try:
    archive = np.load(path, allow_pickle=False)
  except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
    raise DataError(f'dataset.path={path!r} could not be read as .npz ({type(e).__name__}: {e})')
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise DataError(f'dataset.path={path!r} holds a single array, not a .npz archive; save one '
                    f'with np.savez(path, x_train=..., y_train=...)')
  arrays = {}
  with archive:
    for key in archive.files:
      try:
        arrays[key] = archive[key]
      except ValueError as e:
        if 'allow_pickle' not in str(e):
          raise DataError(f'dataset.path={path!r}: array {key!r} could not be read ({e})')
        raise DataError(f'dataset.path={path!r}: {key!r} is an object array (pickled Python '
                        f'objects, never loaded); save numbers, e.g. np.asarray({key}, '
                        f'np.float32) or labels as np.int64')
      except Exception as e:  # noqa: BLE001 - a damaged member: one line, not a traceback
        raise DataError(f'dataset.path={path!r}: array {key!r} could not be read '
                        f'({type(e).__name__}: {e})')
  return arrays


def given_splits(arrays: dict, where: str) -> list:
  """The val/test splits `arrays` gives: both (each as x_ and y_) or neither, else one line."""
  given = [s for s in ('val', 'test') if f'x_{s}' in arrays or f'y_{s}' in arrays]
  for key in (f'{xy}_{s}' for s in given for xy in 'xy'):
    if key not in arrays:
      partner = ('y' if key[0] == 'x' else 'x') + key[1:]
      raise DataError(f'{where} has {partner} but no {key}; give x_{key[2:]} and y_{key[2:]} '
                      f'together')
  if len(given) == 1:
    other = 'test' if given[0] == 'val' else 'val'
    raise DataError(f'{where} has x_{given[0]}, y_{given[0]} but no x_{other}, y_{other}; give '
                    f'both splits, or neither (then both are cut from train by '
                    f'dataset.val_fraction/test_fraction)')
  return given
