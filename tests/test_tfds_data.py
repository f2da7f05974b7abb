"""TFDS image sets through `tfds.data_source` (no TensorFlow), and `hinge_jax.prepare`.

The data are genuine prepared TFDS directories (ArrayRecord files and dataset_info.json),
written by `hinge_jax.prepare` with TFDS's own builders fed small arrays (helpers.prepare_tfds).
"""

import glob
import json
import os

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from hinge_jax import datasets, prepare  # noqa: E402
from hinge_jax.datasets import cache, tfds_data  # noqa: E402
from hinge_jax.errors import ConfigError, DataError, UserError  # noqa: E402
from helpers import (default_config, image_splits, prepare_tfds, run_main,  # noqa: E402
                     write_cifar_folder)


def config(name, data_dir, **overrides):
  """A config reading `name` from `data_dir` with small protocol splits."""
  values = {'dataset.name': name, 'dataset.data_dir': str(data_dir), 'dataset.num_train': 40,
            'dataset.num_val': 10, 'dataset.num_test': 0, 'dataset.num_dev': 5,
            'dataset.scale': 1 / 255, 'dataset.bias_trick': True}
  values.update(overrides)
  return default_config(**values)


@pytest.fixture(scope='module')
def cifar10_both(tmp_path_factory):
  """The same images as a `cifar-10-batches-py` folder and as TFDS's prepared cifar10."""
  root = tmp_path_factory.mktemp('cifar_both')
  _, written = write_cifar_folder(root / 'python', per_batch=12, num_test=15)
  splits = {'train': (written['train_images'], written['train_labels']),
            'test': (written['test_images'], written['test_labels'])}
  prepare_tfds('cifar10', root / 'tfds', splits, cache=False)
  return root, written


# ----------------------------------------------------------------------- reading prepared data


def _rows(images, labels) -> set:
  return {(image.tobytes(), int(label)) for image, label in zip(images, labels)}


def test_prepare_leaves_array_record_dataset_info_and_the_cache(tfds_dir):
  data_dir, written = tfds_dir
  version_dir = os.path.join(data_dir, 'mnist', '3.0.1')
  assert glob.glob(os.path.join(version_dir, 'mnist-train.array_record-*'))
  with open(os.path.join(version_dir, 'dataset_info.json')) as f:
    info = json.load(f)
  assert info['fileFormat'] == 'array_record' and info['name'] == 'mnist'
  arrays, meta = cache.read(tfds_data.cache_dir('mnist', data_dir))
  for split in ('train', 'test'):  # in TFDS's stored (shuffled) order: compare as sets
    images, labels = written['mnist'][split]
    assert _rows(arrays[f'{split}_images'], arrays[f'{split}_labels']) == _rows(images, labels)
  assert meta['image_shape'] == [28, 28, 1] and len(meta['class_names']) == 10


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist'])
def test_protocol_on_tfds_records(tfds_dir, name):
  """Decoded from the ArrayRecord files (no cache): the protocol's splits of what was written."""
  data_dir, written = tfds_dir
  train_x, train_y = written[name]['train']
  ds = datasets.load(config(name, data_dir, **{'dataset.cache': False}).dataset)
  assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10 and len(ds.class_names) == 10
  assert ds.x['train'].dtype == np.uint8 and ds.x['train'].shape == (40, 784)
  assert ds.size('val') == 10 and ds.size('test') == 20 and ds.x['dev'].shape == (5, 784)
  # mnist has no id feature: TFDS's stored order is kept, so compare as sets of rows
  stored = {r.tobytes(): int(label) for r, label in zip(train_x.reshape(60, -1), train_y)}
  assert all(stored[r.tobytes()] == label for r, label in zip(ds.x['train'], ds.y['train']))
  assert len({r.tobytes() for r in np.concatenate([ds.x['train'], ds.x['val']])}) == 50
  np.testing.assert_allclose(ds.mean, ds.x['train'].mean(0), rtol=1e-5)


def test_cifar10_from_tfds_equals_cifar10_from_the_python_files(cifar10_both):
  """TFDS stores CIFAR shuffled; its `id` feature restores the files' order, so both sources
  give the same splits."""
  root, written = cifar10_both
  sizes = {'dataset.num_train': 40, 'dataset.num_val': 12, 'dataset.num_dev': 6,
           'dataset.cache': False}
  from_tfds = datasets.load(config('cifar10', root / 'tfds', **sizes).dataset)
  from_files = datasets.load(config('cifar10', root / 'python', **sizes).dataset)
  for split in ('train', 'val', 'test', 'dev'):
    np.testing.assert_array_equal(from_tfds.x[split], from_files.x[split])
    np.testing.assert_array_equal(from_tfds.y[split], from_files.y[split])
  np.testing.assert_array_equal(from_tfds.x['train'],
                                written['train_images'][:40].reshape(40, -1))
  assert from_tfds.class_names[0] == 'airplane' and from_files.class_names[0] == 'plane'


def test_second_load_comes_from_the_cache_without_tfds(tfds_dir, monkeypatch):
  data_dir, _ = tfds_dir
  cfg = config('mnist', data_dir)
  decoded = datasets.load(config('mnist', data_dir, **{'dataset.cache': False}).dataset)
  monkeypatch.setattr(tfds_data, 'read_tfds', lambda *a: pytest.fail('decoded again'))
  cached = datasets.load(cfg.dataset)  # prepare wrote the cache: only it can serve this
  for split in ('train', 'val', 'test', 'dev'):
    np.testing.assert_array_equal(cached.x[split], decoded.x[split])
    np.testing.assert_array_equal(cached.y[split], decoded.y[split])
  assert cached.class_names == decoded.class_names and cached.image_shape == (28, 28, 1)


def test_corrupt_cache_without_the_source_is_refused(tfds_dir, tmp_path):
  arrays, info = cache.read(tfds_data.cache_dir('mnist', tfds_dir[0]))
  cache_dir = tfds_data.cache_dir('mnist', str(tmp_path))
  cache.write(cache_dir, arrays, info, {})
  path = os.path.join(cache_dir, 'test_labels.npy')
  os.truncate(path, os.path.getsize(path) - 8)
  with pytest.raises(DataError, match="dataset 'mnist' is not prepared in") as e:
    datasets.load(config('mnist', tmp_path).dataset)  # damaged, and no data to rebuild it
  assert '\n' not in str(e.value)


def test_not_prepared_names_dataset_dir_and_command(tmp_path):
  with pytest.raises(DataError) as e:
    datasets.load(config('mnist', tmp_path).dataset)
  message = str(e.value)
  assert "'mnist'" in message and str(tmp_path) in message
  assert f'python -m hinge_jax.prepare --dataset=mnist --data_dir={tmp_path}' in message
  assert '\n' not in message


def test_unknown_names_and_non_image_sets(tmp_path):
  with pytest.raises(ConfigError, match='neither built in .* nor a TFDS dataset'):
    datasets.load(config('mnistt', tmp_path).dataset)
  with pytest.raises(DataError, match='needs an `image` and a `label` feature'):
    datasets.load(config('imdb_reviews', tmp_path).dataset)  # known from its builder's info


class FakeSource:
  """A data source whose batched access fails, as tfds's mock's did in 4.9.10."""

  def __init__(self, records):
    self.records = records
    self.single = 0

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    self.single += 1
    return self.records[i]

  def __getitems__(self, keys):
    raise TypeError('batched access is not supported')


def test_decode_restores_the_original_files_order():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8)
  stored = rng.permutation(7)  # record r holds original example stored[r]
  records = [{'image': images[k], 'label': np.int64(k % 3), 'id': f'train_{k:05d}'.encode()}
             for k in stored]
  source = FakeSource(records)
  x, y = tfds_data.decode_split(source, 't', 'train', (4, 4, 3), 3)
  np.testing.assert_array_equal(x, images)
  np.testing.assert_array_equal(y, np.arange(7) % 3)
  assert source.single == 7 and y.dtype == np.int32
  records[0]['id'] = b'not a number'
  x, _ = tfds_data.decode_split(FakeSource(records), 't', 'train', (4, 4, 3), 3)
  np.testing.assert_array_equal(x, images[stored])  # ids unusable: stored order kept


def test_decode_rejects_wrong_image_shapes_and_labels():
  good = {'image': np.zeros((4, 4, 3), np.uint8), 'label': 0}
  with pytest.raises(DataError, match='expected uint8\\[4, 4, 3\\]'):
    tfds_data.decode_split([good, {'image': np.zeros((5, 4, 3), np.uint8), 'label': 0}],
                           't', 'train', (4, 4, 3), 3)
  with pytest.raises(DataError, match='labels outside 0..2'):
    tfds_data.decode_split([good, dict(good, label=3)], 't', 'train', (4, 4, 3), 3)


def test_cache_write_then_read_round_trip(tmp_path):
  arrays = {'a': np.arange(12, dtype=np.uint8).reshape(3, 4), 'b': np.array([1, 2], np.int32)}
  cache.write(str(tmp_path), arrays, {'k': 1}, {'src': 2})
  got, info = cache.read(str(tmp_path), {'src': 2})
  assert info == {'k': 1}
  for k in arrays:
    np.testing.assert_array_equal(got[k], arrays[k])
    assert got[k].dtype == arrays[k].dtype
  with pytest.raises(cache.CacheError, match='different source'):
    cache.read(str(tmp_path), {'src': 3})
  np.save(tmp_path / 'b.npy', np.array([1, 3], np.int32))  # same shape, other bytes
  with pytest.raises(cache.CacheError, match='fails its checksum'):
    cache.read(str(tmp_path))


# ----------------------------------------------------------------------- hinge_jax.prepare


def _tensorflow_installed() -> bool:
  try:
    import tensorflow  # noqa: F401
  except ImportError:
    return False
  return True


def test_prepare_without_tensorflow_is_one_line_and_exit_2(tmp_path):
  if _tensorflow_installed():
    pytest.skip('TensorFlow is installed: prepare would download')
  with pytest.raises(UserError) as e:
    prepare.prepare('cifar10', str(tmp_path), log=lambda *a: None)
  line = ('preparing a TFDS dataset needs TensorFlow; install it with: '
          'pip install -r requirements-prepare.txt')
  assert str(e.value) == line
  proc = run_main('--dataset=cifar10', f'--data_dir={tmp_path}', module='hinge_jax.prepare',
                  timeout=120)  # the command: its exit code and its one line
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f'error: {line}']
  assert os.listdir(tmp_path) == []


def test_prepare_asks_tfds_for_array_record(tmp_path, monkeypatch):
  """What `prepare` hands TFDS: the builder and download_and_prepare both get array_record."""
  calls = []
  splits = image_splits((28, 28, 1), num_train=6, num_test=3)
  monkeypatch.setattr(prepare, 'require_tensorflow', lambda: None)

  def builder(tfds_module, name, data_dir):
    calls.append(('builder', name, data_dir))
    from helpers import tfds_builder
    b = tfds_builder(name, data_dir, splits)
    original = b.download_and_prepare
    b.download_and_prepare = lambda **kw: (calls.append(('prepare', kw.get('file_format'))),
                                           original(**kw))[1]
    return b
  monkeypatch.setattr(prepare, 'make_builder', builder)
  logged = []
  version_dir = prepare.prepare('mnist', str(tmp_path), log=logged.append)
  assert calls == [('builder', 'mnist', str(tmp_path)), ('prepare', 'array_record')]
  assert version_dir == os.path.join(str(tmp_path), 'mnist', '3.0.1')
  assert 'train_images uint8[6, 28, 28, 1]' in logged[-1]


def test_prepare_uses_tfds_array_record_builder(tmp_path):
  """The default builder: TFDS's own, set to write ArrayRecord."""
  builder = prepare.make_builder(tfds, 'mnist', str(tmp_path))
  assert builder.name == 'mnist' and builder.info.file_format.value == 'array_record'
  assert str(builder.data_dir).startswith(str(tmp_path))


def test_prepare_unknown_dataset(monkeypatch, tmp_path):
  monkeypatch.setattr(prepare, 'require_tensorflow', lambda: None)
  with pytest.raises(UserError, match="--dataset='nope_xyz' is not a TFDS dataset"):
    prepare.prepare('nope_xyz', str(tmp_path), log=lambda *a: None)
