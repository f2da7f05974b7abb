"""TFDS image sets through `tfds.data_source`, under `tfds.testing.mock_data` (no TensorFlow)."""

import json
import os
import sys

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from hinge_jax import datasets, experiment  # noqa: E402
from hinge_jax.datasets import cache, tfds_data  # noqa: E402
from hinge_jax.errors import ConfigError, DataError, UserError  # noqa: E402
from helpers import REPO  # noqa: E402

MOCK_EXAMPLES = 60


def config(name, data_dir, **overrides):
  """configs/NAME.py at a tiny size."""
  sys.path.insert(0, os.path.join(REPO, 'configs'))
  module = __import__(name)
  c = module.get_config()
  c.dataset.data_dir = str(data_dir)
  c.dataset.num_train, c.dataset.num_val, c.dataset.num_test = 40, 10, 0
  c.dataset.num_dev = 5
  c.batch_size, c.num_steps, c.eval_every_steps = 8, 6, 3
  for dotted, value in overrides.items():
    node = c
    *parents, leaf = dotted.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value
  return c


@pytest.mark.parametrize('config_name, tfds_name, shape', [
    ('cifar10_svm', 'cifar10', (32, 32, 3)),
    ('cifar10_softmax', 'cifar10', (32, 32, 3)),
    ('mnist_svm', 'mnist', (28, 28, 1)),
])
def test_config_end_to_end_on_mock_data(tmp_path, config_name, tfds_name, shape):
  cfg = config(config_name, tmp_path)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    source = tfds.data_source(tfds_name, split='train')
    mock_train = np.stack([np.asarray(source[i]['image']) for i in range(MOCK_EXAMPLES)])
    mock_labels = np.array([int(source[i]['label']) for i in range(MOCK_EXAMPLES)])
    ds = datasets.load(cfg.dataset)
    results = experiment.train_and_evaluate(cfg, str(tmp_path / 'run'), log=lambda *a: None)
  assert ds.image_shape == shape and ds.num_classes == 10 and len(ds.class_names) == 10
  assert ds.x['train'].dtype == np.uint8 and ds.x['train'].shape == (40, int(np.prod(shape)))
  assert ds.size('val') == 10 and ds.size('test') == MOCK_EXAMPLES
  assert ds.x['dev'].shape == (5, int(np.prod(shape)))
  # the mock's ids are random text, so the stored order is kept: train = its first 40
  np.testing.assert_array_equal(ds.x['train'], mock_train[:40].reshape(40, -1))
  np.testing.assert_array_equal(ds.y['train'], mock_labels[:40])
  np.testing.assert_allclose(ds.mean, mock_train[:40].reshape(40, -1).mean(0), rtol=1e-5)
  assert results['splits']['train']['size'] == 40
  assert os.path.exists(tmp_path / 'run' / 'results.json')
  assert np.isfinite(results['final_loss'])
  with open(tmp_path / 'run' / 'config.json') as f:
    assert json.load(f)['dataset']['name'] == tfds_name


def test_second_load_comes_from_the_cache_without_tfds(tmp_path, monkeypatch):
  cfg = config('mnist_svm', tmp_path)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    first = datasets.load(cfg.dataset)
  assert os.path.exists(os.path.join(tfds_data.cache_dir('mnist', str(tmp_path)), 'cache.json'))
  monkeypatch.setattr(tfds_data, 'read_tfds', lambda *a: pytest.fail('decoded again'))
  second = datasets.load(cfg.dataset)  # no mock now: only the cache can serve it
  for split in ('train', 'val', 'test', 'dev'):
    np.testing.assert_array_equal(second.x[split], first.x[split])
    np.testing.assert_array_equal(second.y[split], first.y[split])
  assert second.class_names == first.class_names and second.image_shape == (28, 28, 1)


def test_corrupt_cache_without_the_source_is_refused(tmp_path):
  cfg = config('mnist_svm', tmp_path)
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    datasets.load(cfg.dataset)
  path = os.path.join(tfds_data.cache_dir('mnist', str(tmp_path)), 'test_labels.npy')
  os.truncate(path, os.path.getsize(path) - 8)
  with pytest.raises(DataError, match="dataset 'mnist' is not prepared in") as e:
    datasets.load(cfg.dataset)  # the cache is damaged and there is no data to rebuild it
  assert '\n' not in str(e.value)


def test_not_prepared_names_dataset_dir_and_command(tmp_path):
  cfg = config('mnist_svm', tmp_path)
  with pytest.raises(DataError) as e:
    datasets.load(cfg.dataset)
  message = str(e.value)
  assert "'mnist'" in message and str(tmp_path) in message
  assert f'python -m hinge_jax.prepare --dataset=mnist --data_dir={tmp_path}' in message
  assert '\n' not in message


def test_unknown_names_and_non_image_sets(tmp_path):
  with pytest.raises(ConfigError, match='neither built in .* nor a TFDS dataset'):
    datasets.load(config('mnist_svm', tmp_path, **{'dataset.name': 'mnistt'}).dataset)
  with pytest.raises(DataError, match='needs an `image` and a `label` feature'):
    with tfds.testing.mock_data(num_examples=4):
      datasets.load(config('mnist_svm', tmp_path, **{'dataset.name': 'imdb_reviews'}).dataset)


class FakeSource:
  """A data source whose batched access fails, like tfds's mock in 4.9.10."""

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


def test_prepare_without_tensorflow_is_one_line(tmp_path):
  import subprocess
  proc = subprocess.run([sys.executable, '-m', 'hinge_jax.prepare', '--dataset=cifar10',
                         f'--data_dir={tmp_path}'], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  try:
    import tensorflow  # noqa: F401
    pytest.skip('TensorFlow is installed: prepare would download')
  except ImportError:
    pass
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: preparing a TFDS dataset needs TensorFlow; install it with: '
      'pip install -r requirements-prepare.txt']


def test_prepare_writes_array_record_and_the_cache(tmp_path, monkeypatch):
  """The prepare flow under the mock (download_and_prepare is a no-op there)."""
  from hinge_jax import prepare
  import types
  calls = []
  monkeypatch.setitem(sys.modules, 'tensorflow', types.ModuleType('tensorflow'))
  with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
    mocked = tfds.core.DatasetBuilder.download_and_prepare  # the mock's no-op

    def spy(self, *args, **kwargs):
      calls.append(kwargs.get('file_format'))
      return mocked(self, *args, **kwargs)
    monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', spy)
    prepare.prepare('mnist', str(tmp_path), log=lambda *a: None)
  assert calls == ['array_record']
  arrays, info = cache.read(tfds_data.cache_dir('mnist', str(tmp_path)))
  assert arrays['train_images'].shape == (MOCK_EXAMPLES, 28, 28, 1)
  assert info['image_shape'] == [28, 28, 1]


def test_prepare_unknown_dataset(monkeypatch, tmp_path):
  from hinge_jax import prepare
  import types
  monkeypatch.setitem(sys.modules, 'tensorflow', types.ModuleType('tensorflow'))
  with pytest.raises(UserError, match="--dataset='nope_xyz' is not a TFDS dataset"):
    prepare.prepare('nope_xyz', str(tmp_path), log=lambda *a: None)
