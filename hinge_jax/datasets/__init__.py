"""Datasets by name: `load(config.dataset)` returns a checked, preprocessed `Dataset`.

Built in (`loaders`): `digits` (scikit-learn's 8×8 digits, shipped in the package: the
embedded default), `synthetic` (seeded Gaussian class clusters), `npz` (your own arrays),
`npy` (your own `(N, D)` features, memory-mapped; module `npy`);
`synthetic_images` (seeded oriented gratings) and `cifar10` (the original python files when
`dataset.data_dir` holds `cifar-10-batches-py`, else TFDS). Any other name is looked up in
TFDS (`tfds_data`): cifar100, mnist, fashion_mnist, svhn_cropped, any image set with `image`
and `label` features. A loader is a function `(dataset_config) -> Dataset`, registered by
name in `LOADERS`. With `dataset.features` set, `load` replaces the loader's images by
standardized image features (`featurize.py`, `hinge_jax/features.py`).
"""

import re

import ml_collections

from hinge_jax.datasets import cifar, cifar_rows, featurize, protocol, tfds_data
from hinge_jax.datasets import npy, synthetic_images  # noqa: F401 - register their loaders
from hinge_jax.datasets.base import SPLITS, Dataset, preprocess
from hinge_jax.datasets.loaders import LOADERS
from hinge_jax.errors import ConfigError


@LOADERS.register('cifar10')
def load_cifar10(cfg) -> Dataset:
  """CIFAR-10 by the assignment's protocol (`protocol`): 50,000 + 10,000 32×32×3 images.

  Read from `dataset.data_dir/cifar-10-batches-py` (the original python files) when that
  folder exists, else from TFDS's prepared `cifar10` in `dataset.data_dir`.
  """
  data_dir = tfds_data.resolve_data_dir(cfg)
  folder = cifar.find_folder(data_dir)
  if folder is None:
    return load_tfds(cfg)
  arrays, info = cifar.load_arrays(folder, use_cache=bool(cfg.get('cache', True)),
                                   open_rows=lambda: cifar_rows.open_folder(folder))
  return protocol.make_dataset(cfg, 'cifar10', arrays, info)


def load_tfds(cfg) -> Dataset:
  """Any TFDS image-classification set by the protocol; see `tfds_data` and `protocol`."""
  name = cfg.name
  if not isinstance(name, str) or not re.fullmatch(r'[A-Za-z0-9_]+(/[A-Za-z0-9_.]+)*(:[\w.*]+)?',
                                                   name):
    raise ConfigError(f'dataset.name={name!r} is not known; built in: '
                      f'{", ".join(LOADERS.names)}, or a TFDS image set such as '
                      f'{tfds_data.EXAMPLES}')
  data_dir = tfds_data.resolve_data_dir(cfg)
  arrays, info = tfds_data.load_arrays(name, data_dir, use_cache=bool(cfg.get('cache', True)))
  return protocol.make_dataset(cfg, name, arrays, info)


def load(cfg: ml_collections.ConfigDict) -> Dataset:
  """Loads the dataset named by `cfg.name`: a built-in loader, else TFDS.

  A name that is neither gets one line listing the built-in names. With `cfg.features` (e.g.
  `('hog', 'hue_hist')`), the images become standardized features; the extractor names are
  checked before any data are read.
  """
  featurize.feature_names(cfg)
  loader = LOADERS.get(cfg.name) if cfg.name in LOADERS else load_tfds
  return featurize.apply(loader(cfg), cfg)


__all__ = ['Dataset', 'LOADERS', 'load', 'preprocess', 'SPLITS']
