"""User arrays are validated before anything is compiled: each bad npz is one `DataError` line.

Every case writes a small .npz to tmp_path and loads it through `datasets.load`, as
`dataset.name=npz` does; one case runs `main.train` to show the error comes before the
trainer is built (nothing compiled, nothing written).
"""

import tracemalloc

import numpy as np
import pytest

from helpers import default_config
from hinge_jax import datasets, experiment, main
from hinge_jax.datasets import protocol, validate
from hinge_jax.errors import ConfigError, DataError, UserError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4)).astype(np.float32)
Y = np.arange(60) % 3


def _load(tmp_path, fields=None, **arrays):
  path = tmp_path / 'd.npz'
  np.savez(path, **arrays)
  cfg = default_config(**{'dataset.name': 'npz', 'dataset.path': str(path), **(fields or {})})
  return datasets.load(cfg.dataset)


def _with(y, index, value):
  y = np.array(y, np.int64)
  y[index] = value
  return y


BAD = {  # case: (arrays, the message's telling part)
    'string labels': (dict(x_train=X, y_train=Y.astype(str)),
                      'train labels have dtype <U21; they must be integer class ids'),
    'float labels': (dict(x_train=X, y_train=Y + 0.5), 'train labels have dtype float64'),
    'whole-number float labels': (dict(x_train=X, y_train=Y.astype(np.float32)),
                                  'y.astype(np.int64)'),
    'x longer than y': (dict(x_train=np.r_[X, X[:5]], y_train=Y),
                        'train has 65 feature rows but 60 labels'),
    'y longer than x': (dict(x_train=X, y_train=np.r_[Y, Y[:5]]),
                        'train has 60 feature rows but 65 labels'),
    '1-D x': (dict(x_train=X[:, 0], y_train=Y), 'train features have shape (60,)'),
    'x flattened': (dict(x_train=X.ravel(), y_train=Y), 'train features have shape (240,)'),
    'x reshaped wrongly': (dict(x_train=X.reshape(30, 8), y_train=Y),
                           'train has 30 feature rows but 60 labels'),
    'single class': (dict(x_train=X, y_train=np.zeros(60, int)),
                     'every training label is 0; a classifier needs at least 2 classes'),
    'negative label': (dict(x_train=X, y_train=_with(Y, 7, -1)), 'none negative'),
    'absurd label': (dict(x_train=X, y_train=_with(Y, 7, 10**12)),
                     'the largest label is 1000000000000; labels must be class ids 0..C-1 with '
                     'C at most 100,000'),
    'stray label': (dict(x_train=X, y_train=_with(Y, 7, 5000)),
                    'the labels go up to 5000 but 4997 of the class ids 0..5000 never occur '
                    '(first 3)'),
    'NaN feature': (dict(x_train=np.where(np.arange(60)[:, None] == 3, np.nan, X), y_train=Y),
                    'the features hold 4 NaN or infinite values'),
    'float32 overflow': (dict(x_train=np.where(np.arange(60)[:, None] == 3, 1e300,
                                               X.astype(np.float64)), y_train=Y),
                         'the features hold 4 NaN or infinite values'),
    'empty arrays': (dict(x_train=np.zeros((0, 4)), y_train=np.zeros(0, int)),
                     'the train split holds no examples'),
    'zero features': (dict(x_train=np.zeros((60, 0)), y_train=Y),
                      'train features have shape (60, 0): no values per example'),
    'one-hot labels': (dict(x_train=X, y_train=np.eye(3)[Y].astype(int)),
                       'not one-hot rows: use y.argmax(axis=1)'),
    'column labels': (dict(x_train=X, y_train=Y[:, None]), 'use y.ravel()'),
    'scalar labels': (dict(x_train=X, y_train=np.array(3)), 'train labels have shape ()'),
    'string features': (dict(x_train=X.astype(str), y_train=Y), 'train features have dtype <U'),
    'complex features': (dict(x_train=X.astype(np.complex64), y_train=Y),
                         'train features have dtype complex64'),
    'missing y_train': (dict(x_train=X), "has no array 'y_train' (found: x_train)"),
    'y_val without x_val': (dict(x_train=X, y_train=Y, y_val=Y[:9], x_test=X[:9], y_test=Y[:9]),
                            "has y_val but no x_val; give x_val and y_val together"),
    'val without test': (dict(x_train=X, y_train=Y, x_val=X[:9], y_val=Y[:9]),
                         'has x_val, y_val but no x_test, y_test'),
    'val width differs': (dict(x_train=X, y_train=Y, x_val=X[:9, :3], y_val=Y[:9],
                               x_test=X[:9], y_test=Y[:9]),
                          'val has 3 features per example but train has 4'),
    'test longer than its labels': (dict(x_train=X, y_train=Y, x_val=X[:9], y_val=Y[:9],
                                         x_test=X[:9], y_test=Y[:8]),
                                    'test has 9 feature rows but 8 labels'),
    'test label beyond train classes': (dict(x_train=X, y_train=Y % 2, x_val=X[:9], y_val=Y[:9],
                                             x_test=X[:9], y_test=_with(Y[:9], 0, 70)),
                                        'or set dataset.num_classes=71 if those classes have '
                                        'no examples'),
}


@pytest.mark.parametrize('case', list(BAD))
def test_bad_npz_is_one_line(tmp_path, case):
  arrays, needle = BAD[case]
  with pytest.raises(DataError) as err:
    _load(tmp_path, **arrays)
  message = str(err.value)
  assert needle in message and '\n' not in message, message


def test_absurd_label_fails_at_once_without_allocating_its_classes(tmp_path):
  """10**12 as a label (and as a declared class count) stops before any array of size C."""
  path = tmp_path / 'd.npz'
  np.savez(path, x_train=X, y_train=_with(Y, 7, 10**12))
  cfg = default_config(**{'dataset.name': 'npz', 'dataset.path': str(path)}).dataset
  tracemalloc.start()
  try:
    with pytest.raises(DataError, match='C at most 100,000'):
      datasets.load(cfg)
    cfg.num_classes = 10**12
    np.savez(path, x_train=X, y_train=Y)
    with pytest.raises(DataError, match=r'C=1000000000000 classes; a classifier needs 2 to '
                                        r'100,000'):
      datasets.load(cfg)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 20 * 2**20, peak


def test_declared_class_count_is_checked(tmp_path):
  """dataset.num_classes: must cover the labels, be 2..100,000 and a non-negative integer."""
  with pytest.raises(DataError, match=r'20 train labels are outside \[0, 2\) \(min 0, max 2\)'):
    _load(tmp_path, {'dataset.num_classes': 2, 'dataset.val_fraction': 0.0,
                     'dataset.test_fraction': 0.0}, x_train=X, y_train=Y)
  with pytest.raises(ConfigError, match=r'dataset.num_classes=-3 must be an integer >= 0'):
    _load(tmp_path, {'dataset.num_classes': -3}, x_train=X, y_train=Y)
  # Declared: classes absent from the data are fine (a subset of a large label set).
  ds = _load(tmp_path, {'dataset.num_classes': 5000}, x_train=X, y_train=_with(Y, 7, 4999))
  assert ds.num_classes == 5000 and len(ds.class_names) == 5000


def test_good_npz_variants_load(tmp_path):
  """Bool labels are 0/1; C is inferred from every split (a class only in test counts)."""
  ds = _load(tmp_path, x_train=X, y_train=Y > 0)
  assert ds.num_classes == 2 and ds.y['train'].dtype == np.int32
  ds = _load(tmp_path, x_train=X, y_train=Y % 2, x_val=X[:9], y_val=Y[:9] % 2, x_test=X[:9],
             y_test=Y[:9])
  assert ds.num_classes == 3 and [ds.size(s) for s in datasets.SPLITS] == [60, 9, 9]
  ds = _load(tmp_path, x_train=X.reshape(60, 2, 2).astype(np.uint8), y_train=Y.astype(np.uint16))
  assert ds.raw_dim == 4 and ds.image_shape == (2, 2) and ds.x['train'].dtype == np.uint8


def test_real_class_counts_pass_the_rule():
  """CIFAR-100's 100, ImageNet's 1,000 and 21,841 classes (declared or inferred) are accepted."""
  for count in (100, 1000, 21841):
    y = {'train': np.arange(count), 'val': np.arange(10), 'test': np.arange(0)}
    assert validate.num_classes('d', y, count) == count
    assert validate.num_classes('d', y, None) == count


def test_unreadable_npz_files(tmp_path):
  """An object array is refused by name (never unpickled); a .npy, a non-archive or a damaged
  member is one line."""
  path = tmp_path / 'd.npz'
  np.savez(path, x_train=np.array([[1.0], [None]], object), y_train=np.array([0, 1]))
  cfg = default_config(**{'dataset.name': 'npz', 'dataset.path': str(path)}).dataset
  with pytest.raises(DataError, match="'x_train' is an object array"):
    datasets.load(cfg)
  with open(path, 'wb') as f:
    np.save(f, X)
  with pytest.raises(DataError, match='holds a single array, not a .npz archive'):
    datasets.load(cfg)
  path.write_bytes(b'PK\x03\x04 not really a zip')
  with pytest.raises(DataError, match='could not be read as .npz'):
    datasets.load(cfg)
  np.savez_compressed(path, x_train=np.zeros((600, 40)), y_train=np.arange(600) % 3)
  damaged = bytearray(path.read_bytes())
  damaged[200] ^= 0xff  # inside x_train's compressed bytes: its CRC fails when read
  path.write_bytes(bytes(damaged))
  with pytest.raises(DataError, match="array 'x_train' could not be read .*CRC"):
    datasets.load(cfg)


def test_image_loaders_check_their_source_arrays():
  """The protocol loaders (cifar10, TFDS) pass the same checks before cutting their splits."""
  cfg = default_config(**{'dataset.num_val': 2}).dataset
  images = np.zeros((10, 4, 4, 3), np.uint8)
  arrays = {'train_images': images, 'train_labels': np.arange(9) % 2}
  info = {'class_names': ['a', 'b'], 'image_shape': (4, 4, 3)}
  with pytest.raises(DataError, match='train has 10 feature rows but 9 labels'):
    protocol.make_dataset(cfg, 'src', arrays, info)
  arrays.update(train_labels=np.arange(10) % 2, test_images=images[:3],
                test_labels=np.array([0, 1, 2]))
  with pytest.raises(DataError, match=r'1 test labels are outside \[0, 2\)'):
    protocol.make_dataset(cfg, 'src', arrays, info)


def test_main_train_stops_on_bad_data_before_building_the_trainer(tmp_path, monkeypatch):
  """The error surfaces from `main.train` before the trainer (and any compilation) exists."""
  def no_trainer(*args, **kwargs):
    raise AssertionError('the trainer was built from bad data')

  monkeypatch.setattr(experiment.Trainer, 'create', no_trainer)
  path = tmp_path / 'd.npz'
  np.savez(path, x_train=X, y_train=Y.astype(str))
  config = default_config(**{'dataset.name': 'npz', 'dataset.path': str(path)})
  workdir = tmp_path / 'w'
  with pytest.raises(UserError, match='train labels have dtype <U21') as err:
    main.train(config, str(workdir))
  assert '\n' not in str(err.value)
  assert not (workdir / 'config.json').exists()
