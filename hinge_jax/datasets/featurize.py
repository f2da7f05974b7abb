"""The feature pipeline: raw images → standardized image features (`dataset.features`).

`load` applies it after the loader returns raw images: the extractors named in
`dataset.features` (see `hinge_jax.features`) run on the device over every split, each
feature is standardized with the training split's mean and standard deviation (the
assignment's protocol: (f − μ_train)/σ_train, a constant feature becomes 0), and the
resulting float32 dataset goes through `finalize` with centering off and scale 1, so the
core's `preprocess` leaves it as it is and only adds the bias feature (`dataset.bias_trick`).

Cache: the raw (unstandardized) features are saved as `.npy` files (allow_pickle=False) in
`dataset.feature_cache_dir`, or `<dataset.data_dir>/features` when that is empty and a
`data_dir` is set; with neither (digits, synthetic: small data) nothing is cached. The file name carries a hash of the dataset name, the split sizes, a fingerprint of
the raw data (labels, and a strided sample of the images), the image shape and the extractors'
settings, so any change to those computes the features afresh.

Several processes (`rows.several`): each split's features are `lazy.Rows`, extracted from just
the images read; a process extracts its block (`rows.process_block`) once and holds it. μ and σ
come from every process's block moments (count, mean, squared deviations, gathered by
`distributed.gathered`), equal to one process's to float rounding. The cache is not used: its key reads every split.
"""

import hashlib
import json
import logging
import os
import tempfile

import jax
import ml_collections
import numpy as np

from hinge_jax import distributed, features
from hinge_jax.datasets import lazy, rows
from hinge_jax.datasets.base import SPLITS, Dataset, finalize
from hinge_jax.errors import DataError

CACHE_VERSION = 1  # bump when an extractor's output changes for the same settings
_SAMPLED_ROWS = 512  # rows of each split that enter the data fingerprint
_LOG = logging.getLogger(__name__)


def feature_names(cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`dataset.features` checked against the registry (empty: raw pixels)."""
  return features.check_names(cfg.get('features', ()))


def _fingerprint(dataset: Dataset) -> dict:
  digest = hashlib.sha256()
  for split in SPLITS:
    x, y = dataset.x[split], dataset.y[split]
    rows = np.unique(np.linspace(0, max(len(x) - 1, 0), min(len(x), _SAMPLED_ROWS)).astype(int))
    digest.update(f'{split}:{x.shape}:{x.dtype}'.encode())
    digest.update(np.ascontiguousarray(x[rows]).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
  return {'name': dataset.name, 'sizes': [dataset.size(s) for s in SPLITS],
          'data': digest.hexdigest()}


def cache_key(dataset: Dataset, image_shape: tuple, extractor: features.Extractor) -> str:
  """A short hash of what determines the features: data, image shape, extractor settings."""
  text = json.dumps({'version': CACHE_VERSION, 'dataset': _fingerprint(dataset),
                     'image_shape': list(image_shape), 'settings': extractor.settings},
                    sort_keys=True, default=list)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(cfg: ml_collections.ConfigDict) -> str:
  """Where features are cached: `feature_cache_dir`, else `<data_dir>/features`, else '' (none)."""
  explicit = cfg.get('feature_cache_dir', '')
  if explicit:
    return explicit
  data_dir = cfg.get('data_dir', '')
  return os.path.join(data_dir, 'features') if data_dir else ''


def _cache_paths(directory: str, name: str, key: str) -> dict:
  return {s: os.path.join(directory, f'{name}-features-{key}-{s}.npy') for s in SPLITS}


def _load_cached(paths: dict, dim: int):
  if not all(os.path.isfile(p) for p in paths.values()):
    return None
  try:
    arrays = {s: np.load(p, allow_pickle=False) for s, p in paths.items()}
  except (OSError, ValueError):  # a damaged file: compute afresh and overwrite it
    return None
  if any(a.ndim != 2 or a.shape[1] != dim or a.dtype != np.float32 for a in arrays.values()):
    return None
  return arrays


def _save_atomic(path: str, array: np.ndarray) -> None:
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.npy',
                             dir=os.path.dirname(path))
  try:
    with os.fdopen(fd, 'wb') as f:
      np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _extractor(dataset: Dataset, names: tuple, cfg) -> tuple[tuple, features.Extractor]:
  """The image shape and the combined extractor; images of the wrong kind are refused."""
  if dataset.image_shape is None:
    raise DataError(f'dataset.features={names!r} needs images, but {dataset.name} holds flat '
                    f'feature vectors (no image shape); set dataset.features=()')
  image_shape = tuple(int(s) for s in dataset.image_shape)
  if int(np.prod(image_shape)) != dataset.raw_dim:
    raise DataError(f'{dataset.name}: image shape {image_shape} does not match the '
                    f'{dataset.raw_dim} values per example')
  return image_shape, features.combine(names, image_shape, cfg)


def _batch_size(dataset: Dataset) -> int:
  """One batch size for every split, so the extractor compiles once."""
  return min(features.default_batch_size(), max(dataset.size(s) for s in SPLITS))


def raw_features(dataset: Dataset, names: tuple, cfg: ml_collections.ConfigDict) -> dict:
  """Split → `(N, F)` float32 unstandardized features, from the cache or computed."""
  image_shape, extractor = _extractor(dataset, names, cfg)
  directory = cache_dir(cfg)
  paths = None
  if directory:
    paths = _cache_paths(directory, dataset.name, cache_key(dataset, image_shape, extractor))
    cached = _load_cached(paths, extractor.dim)
    if cached is not None:
      _LOG.info('features %s (%d) read from %s', '+'.join(names), extractor.dim, directory)
      return cached
  batch_size = _batch_size(dataset)
  out = {s: features.extract(dataset.x[s], extractor, batch_size=batch_size) for s in SPLITS}
  if paths is not None:
    try:
      os.makedirs(directory, exist_ok=True)
      for split in SPLITS:
        _save_atomic(paths[split], out[split])
    except OSError as e:  # a read-only data_dir must not stop the run: the cache is optional
      _LOG.warning('features not cached (%s: %s); set dataset.feature_cache_dir', e.strerror,
                   directory)
  return out


def standardize(feats: dict) -> dict:
  """(f − μ)/σ per feature with the training split's μ and σ (σ = 0 → 1), float32."""
  train = feats['train'].astype(np.float64)
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  return {s: ((f - mean) / std).astype(np.float32) for s, f in feats.items()}


def rows_of_features(dataset: Dataset, names: tuple, cfg: ml_collections.ConfigDict) -> dict:
  """Split → `(N, F)` float32 unstandardized features as `lazy.Rows` (several processes): the
  features of the rows asked for are extracted from just those images, this process's block
  once (`lazy.kept`). The cache is neither read nor written (its key reads every split)."""
  _, extractor = _extractor(dataset, names, cfg)
  batch_size = _batch_size(dataset)
  directory = cache_dir(cfg)
  if directory:
    _LOG.info('features %s: each process extracts its rows; a multi-process load does not use '
              'the cache in %s', '+'.join(names), directory)

  def extract(images):
    with jax.enable_x64(False):  # as one process extracts, whoever reads (float64 passes too)
      return features.extract(images, extractor, batch_size=batch_size)
  out = {}
  for split in SPLITS:
    feats = lazy.mapped(dataset.x[split], extract, (extractor.dim,), np.float32,
                        what=f'{"+".join(names)} features of {split}')
    out[split] = lazy.kept(feats, *rows.process_block(len(feats)))
  return out


def block_moments(x) -> np.ndarray:
  """`(3, F)` float64: the count, mean and sum of squared deviations of this process's block
  (`rows.process_block`) of the rows `x`; `combine_moments` joins every process's."""
  start, stop = rows.process_block(len(x))
  block = np.asarray(x[start:stop], np.float64)
  mean = block.sum(axis=0) / max(len(block), 1)
  return np.stack([np.full(block.shape[1], len(block), np.float64), mean,
                   ((block - mean) ** 2).sum(axis=0)])


def combine_moments(parts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The mean and std (σ = 0 → 1) of every block's rows, from the `(P, 3, F)` stacked
  `block_moments` (Chan et al.'s parallel update: no sum of squares that cancels)."""
  count, means, squares = parts[:, 0], parts[:, 1], parts[:, 2]
  n = np.maximum(count.sum(axis=0), 1)
  mean = (count * means).sum(axis=0) / n
  std = np.sqrt((squares.sum(axis=0) + (count * (means - mean) ** 2).sum(axis=0)) / n)
  return mean, np.where(std > 0, std, 1.0)


def standardize_rows(feats: dict) -> dict:
  """`standardize` for `lazy.Rows` (several processes): μ and σ from every process's block
  moments (`distributed.gathered`), the features standardized as they are read."""
  moments = block_moments(feats['train'])
  mean, std = combine_moments(distributed.gathered(moments))  # float64 kept
  return {s: lazy.mapped(f, lambda v: ((v - mean) / std).astype(np.float32), f.shape[1:],
                         np.float32) for s, f in feats.items()}


def apply(dataset: Dataset, cfg: ml_collections.ConfigDict) -> Dataset:
  """The dataset with its images replaced by standardized features (unchanged without any).
  Several processes (`rows.several`): lazy features, each process extracting its rows."""
  names = feature_names(cfg)
  if not names:
    return dataset
  if rows.several():
    feats = standardize_rows(rows_of_features(dataset, names, cfg))
  else:
    feats = standardize(raw_features(dataset, names, cfg))
  return finalize(dataset.name, feats, dict(dataset.y), num_classes=dataset.num_classes,
                  center=False, scale=1.0, bias_trick=dataset.bias_trick, image_shape=None,
                  class_names=dataset.class_names)
