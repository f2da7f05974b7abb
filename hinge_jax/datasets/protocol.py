"""The assignment's data protocol for image sets with an official train/test split.

From the source's training images (N of them, in the chosen order):
  train = the first `num_train` (0: all but val), val = the next `num_val`,
  test  = the first `num_test` of the source's test images (0: all of them),
  dev   = `num_dev` training images drawn without replacement (seeded by `split_seed`).
CIFAR-10 with 49,000 / 1,000 / 1,000 / 500 is assignment 1's protocol exactly. Then the
shared preprocessing: flatten, subtract the training mean image, optionally the bias trick.

Order (`dataset.order`):
  'canonical' — the original files' order: the python CIFAR files as stored; TFDS sets sorted
      by their `id` feature where it numbers the original files' examples (TFDS's CIFAR
      `train_00000`, …), else TFDS's stored order. The same images land in the same splits
      whether CIFAR-10 comes from the python files or from TFDS.
  'shuffled' — a permutation of the training images and one of the test images, both seeded
      by `dataset.split_seed`, applied before the cuts.

The dev split stays on the host (`Dataset.x['dev']`, `Dataset.y['dev']`, flattened raw
pixels): for quick gradient checks and loss sanity checks, as in the assignment; training
and evaluation use train/val/test only.
"""

from typing import Optional

import numpy as np

from hinge_jax.datasets import lazy, rows, validate
from hinge_jax.datasets.base import Dataset, finalize
from hinge_jax.errors import ConfigError, DataError

ORDERS = ('canonical', 'shuffled')


def _count(cfg, field: str, default: int) -> int:
  value = cfg.get(field, default)
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ConfigError(f'dataset.{field}={value!r} must be an integer >= 0')
  return value


def cut(train_x: np.ndarray, train_y: np.ndarray, test_x: Optional[np.ndarray],
        test_y: Optional[np.ndarray], *, name: str, num_train: int, num_val: int,
        num_test: int, num_dev: int, order: str, seed: int) -> tuple[dict, dict]:
  """Train/val/test/dev splits of raw images by the protocol (see the module docstring).

  Args:
    train_x, train_y: the source's training images `(N, ...)` and labels `(N,)`.
    test_x, test_y: its test images and labels, or None when it has no test split (then
      `num_test` images after val are cut from the training images).
    name: the dataset's name, for messages.
    num_train, num_val, num_test, num_dev: split sizes (0 for train/test: all the rest).
    order: 'canonical' or 'shuffled'.
    seed: `dataset.split_seed`: the shuffles and the dev draw.

  Returns:
    `(x, y)`: split name → arrays (views of the inputs where no shuffle copies them).
  """
  if order not in ORDERS:
    raise ConfigError(f'dataset.order={order!r} is not known; choose one of: {", ".join(ORDERS)}')
  n = len(train_y)
  if rows.several():  # every cut a view: each process reads only its block's rows later
    train_x, train_y = lazy.wrap(train_x), lazy.wrap(train_y)
    if test_x is not None:
      test_x, test_y = lazy.wrap(test_x), lazy.wrap(test_y)
  if order == 'shuffled':
    perm = np.random.default_rng([seed, 0]).permutation(n)
    train_x, train_y = lazy.take(train_x, perm), lazy.take(train_y, perm)
  if test_x is None:
    if num_test == 0:
      raise DataError(f'{name} has no test split; set dataset.num_test > 0 to hold out that '
                      f'many training images after val as the test set')
    reserve = num_test
  else:
    reserve = 0
    if order == 'shuffled':
      perm = np.random.default_rng([seed, 1]).permutation(len(test_y))
      test_x, test_y = lazy.take(test_x, perm), lazy.take(test_y, perm)
  n_train = num_train or n - num_val - reserve
  if n_train <= 0 or n_train + num_val + reserve > n:
    parts = [f'dataset.num_train={num_train or "0 (the rest)"}', f'dataset.num_val={num_val}']
    parts += [f'dataset.num_test={num_test}'] if reserve else []
    raise DataError(f'{name}: {" + ".join(parts)} ask for more than the {n} training images; '
                    f'lower them')
  x = {'train': lazy.rows(train_x, 0, n_train),
       'val': lazy.rows(train_x, n_train, n_train + num_val)}
  y = {'train': lazy.rows(train_y, 0, n_train),
       'val': lazy.rows(train_y, n_train, n_train + num_val)}
  if test_x is None:
    start = n_train + num_val
    x['test'] = lazy.rows(train_x, start, start + num_test)
    y['test'] = lazy.rows(train_y, start, start + num_test)
  else:
    if num_test > len(test_y):
      raise DataError(f'{name}: dataset.num_test={num_test} is more than the {len(test_y)} test '
                      f'images; use dataset.num_test <= {len(test_y)} (0: all)')
    x['test'] = lazy.rows(test_x, 0, num_test or len(test_y))
    y['test'] = lazy.rows(test_y, 0, num_test or len(test_y))
  if num_dev > n_train:
    raise DataError(f'{name}: dataset.num_dev={num_dev} is more than the {n_train} training '
                    f'images; lower it')
  dev = np.sort(np.random.default_rng([seed, 2]).choice(n_train, num_dev, replace=False))
  x['dev'], y['dev'] = lazy.take(x['train'], dev), lazy.take(y['train'], dev)
  return x, y


def make_dataset(cfg, name: str, arrays: dict, info: dict) -> Dataset:
  """The protocol's `Dataset` from decoded source arrays.

  Args:
    cfg: the `dataset` config section.
    name: the dataset's name.
    arrays: `train_images` `(N, H, W, C)` uint8, `train_labels` `(N,)`, and optionally
      `test_images`, `test_labels`.
    info: `class_names` and `image_shape` `(H, W, C)`.
  """
  validate.pair(name, 'train', arrays['train_images'], arrays['train_labels'])
  if arrays.get('test_images') is not None:
    validate.pair(name, 'test', arrays['test_images'], arrays['test_labels'], allow_empty=True)
  x, y = cut(arrays['train_images'], arrays['train_labels'], arrays.get('test_images'),
             arrays.get('test_labels'), name=name,
             num_train=_count(cfg, 'num_train', 0), num_val=_count(cfg, 'num_val', 1000),
             num_test=_count(cfg, 'num_test', 0), num_dev=_count(cfg, 'num_dev', 0),
             order=cfg.get('order', 'canonical'), seed=int(cfg.get('split_seed', 0)))
  dev_x, dev_y = x.pop('dev'), y.pop('dev')
  class_names = [str(c) for c in info['class_names']]
  dataset = finalize(name, x, y, num_classes=len(class_names),
                     image_shape=tuple(int(d) for d in info['image_shape']),
                     class_names=class_names, center=bool(cfg.get('center', True)),
                     scale=float(cfg.get('scale', 1.0)),
                     bias_trick=bool(cfg.get('bias_trick', False)))
  dataset.x['dev'] = dev_x.reshape(len(dev_x), int(np.prod(dev_x.shape[1:])))  # num_dev=0 too
  dataset.y['dev'] = lazy.astype(dev_y, np.int32)
  return dataset
