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
"""

import hashlib
import json
import logging
import os
import tempfile

import ml_collections
import numpy as np

from hinge_jax import features
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


def raw_features(dataset: Dataset, names: tuple, cfg: ml_collections.ConfigDict) -> dict:
  """Split → `(N, F)` float32 unstandardized features, from the cache or computed."""
  if dataset.image_shape is None:
    raise DataError(f'dataset.features={names!r} needs images, but {dataset.name} holds flat '
                    f'feature vectors (no image shape); set dataset.features=()')
  image_shape = tuple(int(s) for s in dataset.image_shape)
  if int(np.prod(image_shape)) != dataset.raw_dim:
    raise DataError(f'{dataset.name}: image shape {image_shape} does not match the '
                    f'{dataset.raw_dim} values per example')
  extractor = features.combine(names, image_shape, cfg)
  directory = cache_dir(cfg)
  paths = None
  if directory:
    paths = _cache_paths(directory, dataset.name, cache_key(dataset, image_shape, extractor))
    cached = _load_cached(paths, extractor.dim)
    if cached is not None:
      _LOG.info('features %s (%d) read from %s', '+'.join(names), extractor.dim, directory)
      return cached
  # One batch size for every split, so the extractor compiles once.
  batch_size = min(features.default_batch_size(), max(dataset.size(s) for s in SPLITS))
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


def apply(dataset: Dataset, cfg: ml_collections.ConfigDict) -> Dataset:
  """The dataset with its images replaced by standardized features (unchanged without any)."""
  names = feature_names(cfg)
  if not names:
    return dataset
  feats = standardize(raw_features(dataset, names, cfg))
  return finalize(dataset.name, feats, dict(dataset.y), num_classes=dataset.num_classes,
                  center=False, scale=1.0, bias_trick=dataset.bias_trick, image_shape=None,
                  class_names=dataset.class_names)
