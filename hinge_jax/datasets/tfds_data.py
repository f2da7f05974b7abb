"""TFDS image-classification sets, read without TensorFlow through `tfds.data_source`.

Any TFDS dataset with an `image` feature of fixed shape (uint8) and a `label` ClassLabel
works: cifar10, cifar100, mnist, fashion_mnist, svhn_cropped, …. The data must already be
prepared in ArrayRecord format under `dataset.data_dir` (default: TFDS's own directory,
`$TFDS_DATA_DIR` or `~/tensorflow_datasets`); `python -m hinge_jax.prepare` does that (it
needs TensorFlow and a network, see requirements-prepare.txt). Training never downloads.

The first load decodes every example once and caches the arrays as uint8 `.npy` in
`DATA_DIR/<name>/hinge_jax_cache` (see `cache`); later loads read only that cache, without
importing TFDS.
"""

import contextlib
import logging
import os
import re
from typing import Optional

import numpy as np

from hinge_jax.datasets import cache, lazy
from hinge_jax.datasets.cifar import FOLDER as cifar_folder
from hinge_jax.errors import ConfigError, DataError

BUILT_IN_HINT = 'cifar10, digits, npz, synthetic'
EXAMPLES = 'cifar10, cifar100, mnist, fashion_mnist, svhn_cropped'
_CHUNK = 1024


def default_data_dir() -> str:
  """TFDS's default directory (as `tfds.core.constants.get_default_data_dir` computes it)."""
  return os.environ.get('TFDS_DATA_DIR', os.path.join(os.path.expanduser('~'),
                                                      'tensorflow_datasets'))


def resolve_data_dir(cfg) -> str:
  """`dataset.data_dir`, or TFDS's default; an explicit directory must exist."""
  data_dir = cfg.get('data_dir', '') or ''
  if not data_dir:
    return default_data_dir()
  data_dir = os.path.expanduser(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(f'dataset.data_dir={data_dir!r} does not exist or is not a directory; give '
                    f'the folder that holds the prepared data (or cifar-10-batches-py)')
  return data_dir


def cache_dir(name: str, data_dir: str) -> str:
  """Where the decoded arrays of a TFDS dataset live: next to its prepared versions."""
  base = name.split(':')[0]  # 'cifar10:3.0.2' → 'cifar10'; configs ('a/b') become folders
  return os.path.join(data_dir, *base.split('/'), 'hinge_jax_cache')


def prepare_command(name: str, data_dir: str) -> str:
  return (f'pip install -r requirements-prepare.txt && python -m hinge_jax.prepare '
          f'--dataset={name} --data_dir={data_dir}')


def _import_tfds(name: str):
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise ConfigError(f'dataset.name={name!r} is not built in ({BUILT_IN_HINT}) and '
                      f'tensorflow-datasets is not installed; pip install -r requirements.txt')
  return tfds


def _builder(tfds, name: str, data_dir: str):
  try:
    return tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # noqa: BLE001 - DatasetNotFoundError and friends: one line
    if type(e).__name__ == 'DatasetNotFoundError':
      raise ConfigError(f'dataset.name={name!r} is neither built in ({BUILT_IN_HINT}) nor a '
                        f'TFDS dataset; TFDS image sets work, e.g. {EXAMPLES}')
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise DataError(f'dataset.name={name!r}: TFDS cannot open it ({type(e).__name__}: {first})')


def _check_features(name: str, features) -> tuple[tuple, list]:
  """`(image_shape, class_names)` of a dataset with `image` and `label` features."""
  keys = list(features.keys()) if hasattr(features, 'keys') else []
  if 'image' not in keys or 'label' not in keys:
    raise DataError(f'{name} has features {", ".join(keys) or "none"}; an image-classification '
                    f'set needs an `image` and a `label` feature')
  shape = tuple(features['image'].shape)
  if len(shape) != 3 or any(d is None for d in shape):
    raise DataError(f'{name}: images have no fixed shape ({shape}); only fixed-size image sets '
                    f'can be stacked into arrays')
  label = features['label']
  names = list(getattr(label, 'names', None) or [])
  if not names:
    raise DataError(f'{name}: the label feature is not a ClassLabel with known classes')
  return shape, names


def _data_source(tfds, builder, name: str, split: str, data_dir: str, decoders=None):
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                            **({'decoders': decoders} if decoders else {}))
  except Exception as e:  # noqa: BLE001 - classified below into one line
    if not builder.is_prepared():
      alt = (f' (or put the original {cifar_folder} folder in {data_dir})'
             if name == 'cifar10' else '')
      raise DataError(f'dataset {name!r} is not prepared in {data_dir} (no '
                      f'{builder.data_dir}); prepare it with: {prepare_command(name, data_dir)}'
                      + alt)
    file_format = getattr(builder.info, 'file_format', None)
    fmt = getattr(file_format, 'value', file_format)
    if fmt != 'array_record':
      raise DataError(f'dataset {name!r} in {builder.data_dir} is stored as {fmt}, and reading '
                      f'without TensorFlow needs array_record; re-prepare it with: '
                      f'{prepare_command(name, data_dir)}')
    first = str(e).strip().splitlines()[0] if str(e).strip() else ''
    raise DataError(f'dataset {name!r} split {split!r} cannot be read from {builder.data_dir} '
                    f'({type(e).__name__}: {first})')


def _records(source, keys: list):
  """Records for `keys`: one batched read, or one at a time where batches are not supported."""
  getitems = getattr(source, '__getitems__', None)
  if getitems is not None:
    try:
      return getitems(keys)
    except Exception:  # noqa: BLE001 - e.g. tfds's mock data source; fall back below
      pass
  return [source[k] for k in keys]


def original_order(ids: list) -> Optional[np.ndarray]:
  """The permutation that sorts records into the original files' order, if ids give it.

  TFDS's CIFAR numbers each example `train_00000`, `train_00001`, … in the order of the
  original batch files; when every id ends in such a number and together they are 0..N−1,
  returns `argsort` of those numbers; else None (the stored order is kept).
  """
  numbers = []
  for i in ids:
    if isinstance(i, bytes):
      i = i.decode('utf-8', 'replace')
    m = re.fullmatch(r'(?:[A-Za-z]+_)?(\d+)', str(i)) if i is not None else None
    if m is None:
      return None
    numbers.append(int(m.group(1)))
  numbers = np.asarray(numbers, np.int64)
  if not np.array_equal(np.sort(numbers), np.arange(len(numbers))):
    return None
  return np.argsort(numbers, kind='stable')


def _decode(records, keys: list, images: np.ndarray, labels: np.ndarray, at: int, *,
            name: str, split: str, image_shape: tuple) -> list:
  """Fills rows `at`, … of `images`, `labels` from `records` (for record `keys`); their ids."""
  ids = []
  for i, (k, record) in enumerate(zip(keys, records), at):
    image = np.asarray(record['image'])
    if image.shape != image_shape or image.dtype != np.uint8:
      raise DataError(f'{name} {split} example {k}: image {image.dtype}{list(image.shape)}, '
                      f'expected uint8{list(image_shape)}')
    images[i] = image
    labels[i] = int(record['label'])
    ids.append(record.get('id') if hasattr(record, 'get') else None)
  return ids


def _check_labels(labels: np.ndarray, name: str, split: str, num_classes: int) -> None:
  if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
    raise DataError(f'{name} {split}: labels outside 0..{num_classes - 1}')


def decode_split(source, name: str, split: str, image_shape: tuple,
                 num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """All records of one split → images `(N, H, W, C)` uint8 and labels `(N,)` int32."""
  n = len(source)
  images = np.empty((n,) + image_shape, np.uint8)
  labels = np.empty((n,), np.int32)
  ids = []
  for start in range(0, n, _CHUNK):
    keys = list(range(start, min(n, start + _CHUNK)))
    ids += _decode(_records(source, keys), keys, images, labels, start, name=name, split=split,
                   image_shape=image_shape)
  _check_labels(labels, name, split, num_classes)
  order = original_order(ids)
  if order is not None:
    images, labels = images[order], labels[order]
  return images, labels


class RecordRows:
  """A split's records as rows (record order): reading rows requests only those records,
  the last request's images and labels kept for the labels that follow the images."""

  def __init__(self, source, name: str, split: str, image_shape: tuple, num_classes: int):
    self.source, self.name, self.split = source, name, split
    self.image_shape, self.num_classes = image_shape, num_classes
    self._last = (None, None)

  def read(self, field: int, idx: np.ndarray) -> np.ndarray:
    """Images (`field` 0) or labels (1) of the sorted records `idx`."""
    if self._last[0] != idx.tobytes():
      images = np.empty((len(idx),) + self.image_shape, np.uint8)
      labels = np.empty((len(idx),), np.int32)
      for start in range(0, len(idx), _CHUNK):
        keys = [int(k) for k in idx[start:start + _CHUNK]]
        _decode(_records(self.source, keys), keys, images, labels, start, name=self.name,
                split=self.split, image_shape=self.image_shape)
      _check_labels(labels, self.name, self.split, self.num_classes)
      self._last = (idx.tobytes(), (images, labels))
    return self._last[1][field]

  def arrays(self, order: Optional[np.ndarray]) -> tuple:
    """`(images, labels)` as `lazy.Rows`, row r being record `order[r]` (None: record r)."""
    n = len(self.source)
    return (lazy.Rows(lambda idx: self.read(0, idx), (n,) + self.image_shape, np.uint8, order,
                      what=f'{self.name} {self.split}'),
            lazy.Rows(lambda idx: self.read(1, idx), (n,), np.int32, order,
                      what=f'{self.name} {self.split}'))


def read_ids(source) -> list:
  """Every record's `id` (the source opened with the images left undecoded)."""
  ids = []
  for start in range(0, len(source), _CHUNK):
    keys = list(range(start, min(len(source), start + _CHUNK)))
    ids += [r.get('id') if hasattr(r, 'get') else None for r in _records(source, keys)]
  return ids


@contextlib.contextmanager
def _quiet_tfds():
  """Hides TFDS's own warnings (missing dataset_info.json, …): our errors say it in one line."""
  logger = logging.getLogger('absl')
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def read_tfds(name: str, data_dir: str) -> tuple[dict, dict]:
  """Decodes a prepared TFDS dataset: `(arrays, info)` in the cache's layout."""
  with _quiet_tfds():
    return _read_tfds(name, data_dir)


def open_tfds(name: str, data_dir: str) -> tuple[dict, dict]:
  """`read_tfds`'s `(arrays, info)` with `lazy.Rows` for arrays: reading rows decodes only
  their records. The original files' order (`original_order`) needs every record's id: those
  are read with the images left undecoded."""
  with _quiet_tfds():
    return _read_tfds(name, data_dir, by_rows=True)


def _read_tfds(name: str, data_dir: str, by_rows: bool = False) -> tuple[dict, dict]:
  tfds = _import_tfds(name)
  builder = _builder(tfds, name, data_dir)
  image_shape, class_names = _check_features(name, builder.info.features)
  splits = set(builder.info.splits.keys()) if builder.info.splits else {'train', 'test'}
  if 'train' not in splits:
    raise DataError(f'{name} has no train split (splits: {", ".join(sorted(splits))})')
  arrays = {}
  for split in ('train', 'test'):
    if split in splits:
      source = _data_source(tfds, builder, name, split, data_dir)
      if by_rows:
        order = None
        if 'id' in builder.info.features.keys():
          order = original_order(read_ids(_data_source(
              tfds, builder, name, split, data_dir,
              decoders={'image': tfds.decode.SkipDecoding()})))
        reader = RecordRows(source, name, split, image_shape, len(class_names))
        arrays[f'{split}_images'], arrays[f'{split}_labels'] = reader.arrays(order)
        continue
      arrays[f'{split}_images'], arrays[f'{split}_labels'] = decode_split(
          source, name, split, image_shape, len(class_names))
  return arrays, {'class_names': class_names, 'image_shape': list(image_shape),
                  'source': f'tfds:{name}:{builder.info.version}'}


def load_arrays(name: str, data_dir: str, *, use_cache: bool = True) -> tuple[dict, dict]:
  """A TFDS dataset's arrays, from the cache when it is valid (no TFDS import then); several
  processes: each reads only its rows of the cache or, without one, of the records."""
  return cache.load_or_build(cache_dir(name, data_dir), lambda: read_tfds(name, data_dir),
                             what=f'{name} ({data_dir})', use_cache=use_cache,
                             open_rows=lambda: open_tfds(name, data_dir))
