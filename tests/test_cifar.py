"""CIFAR-10's python files: the restricted unpickler, the layout, the cache, the protocol."""

import json
import os
import pickle
import pickletools

import numpy as np
import pytest

from hinge_jax import datasets, experiment
from hinge_jax.datasets import cache, cifar, cifar_rows, protocol
from hinge_jax.errors import ConfigError, DataError
from helpers import channel_major_rows, default_config, write_cifar_folder

PER_BATCH = 30  # write_cifar_folder's default; conftest's shared `cifar_dir` has 40 a batch


def cifar_config(data_dir, **overrides):
  values = {'dataset.name': 'cifar10', 'dataset.data_dir': str(data_dir),
            'dataset.num_train': 100, 'dataset.num_val': 40, 'dataset.num_test': 0,
            'dataset.num_dev': 10, 'dataset.scale': 1.0, 'dataset.bias_trick': True}
  values.update(overrides)
  return default_config(**values)


class Payload:
  """Unpickling this runs `open(marker, 'w')`: a stand-in for arbitrary code."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


# ----------------------------------------------------------------------- the unpickler


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
  marker = str(tmp_path / 'ran')
  evil = pickle.dumps({b'data': np.zeros((1, 3072), np.uint8), b'labels': [Payload(marker)]},
                      protocol=2)
  pickle.loads(evil)  # the payload is real: the plain unpickler runs it
  assert os.path.exists(marker)
  os.remove(marker)
  path = tmp_path / 'data_batch_1'
  path.write_bytes(evil)
  with pytest.raises(DataError, match=r'refused global io\.open'):
    cifar.read_batch(str(path))
  assert not os.path.exists(marker)


@pytest.mark.parametrize('module, name', [('os', 'system'), ('builtins', 'eval'),
                                          ('numpy', 'load'), ('subprocess', 'Popen')])
def test_unpickler_admits_only_cifar_globals(module, name):
  with pytest.raises(cifar.Refused, match='refused'):
    cifar.RestrictedUnpickler(__import__('io').BytesIO(b'')).find_class(module, name)


def test_codecs_encode_is_limited_to_latin1(tmp_path):
  class Encode:
    def __reduce__(self):
      import codecs
      return (codecs.encode, (b'x', 'zlib_codec'))
  path = tmp_path / 'data_batch_1'
  path.write_bytes(pickle.dumps({b'data': Encode()}, protocol=2))
  with pytest.raises(DataError, match='refused'):
    cifar.read_batch(str(path))


# ----------------------------------------------------------------------- the files


@pytest.mark.parametrize('style', ['py2', 'py3'])
def test_folder_reads_back_exactly_with_hwc_layout(tmp_path, style):
  folder, written = write_cifar_folder(tmp_path, style=style)
  arrays, info = cifar.read_folder(folder)
  for key in written:
    np.testing.assert_array_equal(arrays[key], written[key])
  assert arrays['train_images'].shape == (5 * PER_BATCH, 32, 32, 3)
  assert arrays['train_images'].dtype == np.uint8 and arrays['train_labels'].dtype == np.int32
  # CHW → HWC by hand: byte 1024·c + 32·h + w of a row is pixel (h, w) of channel c.
  row = channel_major_rows(written['test_images'][:1])[0]
  assert arrays['test_images'][0, 5, 7, 2] == row[2 * 1024 + 5 * 32 + 7]
  assert info['class_names'][:2] == ['plane', 'car'] and info['image_shape'] == [32, 32, 3]
  with open(os.path.join(folder, 'test_batch'), 'rb') as f:
    ops = {(op.name, arg) for op, arg, _ in pickletools.genops(f.read())}
  assert (('BINSTRING' in {o for o, _ in ops}) == (style == 'py2'))  # as Python 2 wrote it


def test_truncated_batch_file_gives_one_line(tmp_path):
  folder, _ = write_cifar_folder(tmp_path)
  path = os.path.join(folder, 'data_batch_3')
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(DataError, match='data_batch_3 is corrupt or truncated') as e:
    datasets.load(cifar_config(tmp_path).dataset)
  assert '\n' not in str(e.value)


def test_pickle_that_is_not_a_batch(tmp_path):
  path = tmp_path / 'data_batch_1'
  path.write_bytes(pickle.dumps({b'data': np.zeros((2, 100), np.uint8), b'labels': [0, 1]}))
  with pytest.raises(DataError, match=r'a CIFAR-10 batch has uint8 \(n, 3072\)'):
    cifar.read_batch(str(path))
  path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
  with pytest.raises(DataError, match='not a CIFAR-10 batch'):
    cifar.read_batch(str(path))


def test_missing_test_batch(tmp_path):
  folder, _ = write_cifar_folder(tmp_path)
  os.remove(os.path.join(folder, 'test_batch'))
  with pytest.raises(DataError, match='has no test_batch'):
    datasets.load(cifar_config(tmp_path).dataset)


# ----------------------------------------------------------------------- the cache


def test_second_load_is_served_from_the_cache(tmp_path, monkeypatch):
  folder, written = write_cifar_folder(tmp_path)
  first, _ = cifar.load_arrays(folder)
  assert os.path.exists(os.path.join(folder, 'hinge_jax_cache', 'cache.json'))
  monkeypatch.setattr(cifar, 'read_folder', lambda f: pytest.fail('decoded again'))
  second, info = cifar.load_arrays(folder)
  for key in written:
    np.testing.assert_array_equal(second[key], first[key])
    np.testing.assert_array_equal(second[key], written[key])
  assert info['class_names'][0] == 'plane'


@pytest.mark.parametrize('damage', ['flip', 'truncate', 'meta'])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, damage, monkeypatch):
  folder, written = write_cifar_folder(tmp_path)
  cifar.load_arrays(folder)
  cache_dir = os.path.join(folder, 'hinge_jax_cache')
  path = os.path.join(cache_dir, 'train_images.npy')
  if damage == 'flip':
    with open(path, 'r+b') as f:
      f.seek(-100, os.SEEK_END)
      byte = f.read(1)
      f.seek(-100, os.SEEK_END)
      f.write(bytes([byte[0] ^ 0xFF]))
  elif damage == 'truncate':
    os.truncate(path, os.path.getsize(path) - 1000)
  else:
    with open(os.path.join(cache_dir, 'cache.json'), 'w') as f:
      f.write('{"format": 1, "arr')
  with pytest.raises(cache.CacheError):
    cache.read(cache_dir)
  warnings = []
  monkeypatch.setattr(cache.logging, 'warning', lambda msg, *a: warnings.append(msg % a))
  arrays, _ = cifar.load_arrays(folder)
  np.testing.assert_array_equal(arrays['train_images'], written['train_images'])
  assert len(warnings) == 1 and 'rebuilding' in warnings[0]
  assert cache.read(cache_dir) is not None  # rebuilt and valid again


def test_changed_source_makes_the_cache_stale(tmp_path):
  folder, _ = write_cifar_folder(tmp_path)
  cifar.load_arrays(folder)
  _, other = write_cifar_folder(tmp_path / 'other', seed=1)
  os.replace(tmp_path / 'other' / 'cifar-10-batches-py' / 'data_batch_2',
             os.path.join(folder, 'data_batch_2'))
  arrays, _ = cifar.load_arrays(folder)
  np.testing.assert_array_equal(arrays['train_images'][PER_BATCH:2 * PER_BATCH],
                                other['train_images'][PER_BATCH:2 * PER_BATCH])


def test_cache_files_hold_no_pickles(tmp_path):
  folder, _ = write_cifar_folder(tmp_path)
  cifar.load_arrays(folder)
  cache_dir = os.path.join(folder, 'hinge_jax_cache')
  with open(os.path.join(cache_dir, 'cache.json')) as f:
    meta = json.load(f)
  for entry in meta['arrays'].values():
    array = np.load(os.path.join(cache_dir, entry['file']), allow_pickle=False)
    assert array.dtype != object and list(array.shape) == entry['shape']
  assert meta['arrays']['train_images']['dtype'] == '|u1'


# ----------------------------------------------------------------------- the protocol


def test_protocol_sizes_mean_on_train_and_bias(cifar_dir):
  data_dir, written = cifar_dir
  ds = datasets.load(cifar_config(data_dir).dataset)
  assert {s: ds.size(s) for s in ('train', 'val', 'test')} == {'train': 100, 'val': 40,
                                                                 'test': 40}
  assert ds.x['dev'].shape == (10, 3072) and ds.image_shape == (32, 32, 3)
  assert ds.x['train'].dtype == np.uint8 and ds.num_features == 3073 and ds.bias_trick
  assert ds.class_names[:2] == ('plane', 'car')  # from batches.meta
  flat = written['train_images'].reshape(-1, 3072)
  np.testing.assert_array_equal(ds.x['train'], flat[:100])
  np.testing.assert_array_equal(ds.x['val'], flat[100:140])
  np.testing.assert_array_equal(ds.y['val'], written['train_labels'][100:140])
  np.testing.assert_allclose(ds.mean, flat[:100].astype(np.float64).mean(0), rtol=1e-6)
  assert not np.allclose(ds.mean, flat[:140].astype(np.float64).mean(0))
  # every dev image is one of the training images, with its label
  rows = {r.tobytes(): label for r, label in zip(ds.x['train'], ds.y['train'])}
  assert all(rows[r.tobytes()] == label for r, label in zip(ds.x['dev'], ds.y['dev']))
  features = np.asarray(datasets.preprocess(ds.x['val'][:3], ds.mean, ds.scale, bias_trick=True))
  np.testing.assert_allclose(features[:, :-1], flat[100:103] - ds.mean, rtol=1e-6)
  np.testing.assert_array_equal(features[:, -1], 1.0)


def test_no_dev_split_is_an_empty_one(cifar_dir):
  """num_dev=0 (the default, and most CIFAR configs): an empty dev split, not a crash."""
  ds = datasets.load(cifar_config(cifar_dir[0], **{'dataset.num_dev': 0}).dataset)
  assert ds.x['dev'].shape == (0, 3072) and ds.y['dev'].shape == (0,)
  assert ds.y['dev'].dtype == np.int32 and ds.size('train') == 100


def test_protocol_num_test_and_shuffled_order(cifar_dir):
  data_dir, written = cifar_dir
  ds = datasets.load(cifar_config(data_dir, **{'dataset.num_test': 5}).dataset)
  np.testing.assert_array_equal(ds.x['test'], written['test_images'][:5].reshape(5, -1))
  a = datasets.load(cifar_config(data_dir, **{'dataset.order': 'shuffled'}).dataset)
  b = datasets.load(cifar_config(data_dir, **{'dataset.order': 'shuffled'}).dataset)
  c = datasets.load(cifar_config(data_dir, **{'dataset.order': 'shuffled',
                                              'dataset.split_seed': 1}).dataset)
  np.testing.assert_array_equal(a.x['train'], b.x['train'])
  assert not np.array_equal(a.x['train'], c.x['train'])
  flat = written['train_images'].reshape(-1, 3072)
  perm = np.random.default_rng([0, 0]).permutation(len(flat))
  np.testing.assert_array_equal(a.x['train'], flat[perm[:100]])


def test_protocol_cut_with_no_test_split():
  x, y = np.arange(20).reshape(20, 1), np.arange(20)
  xs, ys = protocol.cut(x, y, None, None, name='t', num_train=0, num_val=5, num_test=3,
                        num_dev=2, order='canonical', seed=0)
  assert [len(ys[s]) for s in ('train', 'val', 'test', 'dev')] == [12, 5, 3, 2]
  np.testing.assert_array_equal(ys['test'], [17, 18, 19])
  with pytest.raises(DataError, match='has no test split'):
    protocol.cut(x, y, None, None, name='t', num_train=0, num_val=5, num_test=0, num_dev=0,
                 order='canonical', seed=0)


@pytest.mark.parametrize('field, value, message', [
    ('dataset.num_train', 250, 'ask for more than the 200 training images'),
    ('dataset.num_val', 201, 'ask for more than the 200 training images'),
    ('dataset.num_test', 41, 'num_test=41 is more than the 40 test images'),
    ('dataset.num_dev', 101, 'num_dev=101 is more than the 100 training'),
    ('dataset.order', 'random', "dataset.order='random' is not known"),
    ('dataset.num_val', -1, 'must be an integer >= 0'),
])
def test_split_larger_than_data(cifar_dir, field, value, message):
  with pytest.raises((DataError, ConfigError), match=message) as e:
    datasets.load(cifar_config(cifar_dir[0], **{field: value}).dataset)
  assert '\n' not in str(e.value)


def test_unknown_name_and_missing_data_dir(tmp_path):
  with pytest.raises(ConfigError, match=r"neither built in \(cifar10, digits, npz, synthetic\)"):
    datasets.load(default_config(**{'dataset.name': 'no_such_set_xyz'}).dataset)
  with pytest.raises(ConfigError, match='is not known; built in'):
    datasets.load(default_config(**{'dataset.name': '../etc'}).dataset)
  with pytest.raises(DataError, match='does not exist'):
    datasets.load(cifar_config(tmp_path / 'nope').dataset)


# Training on the python folder: every CIFAR-10 config does, in test_configs.py.


def test_neither_the_folder_nor_tfds_data_is_one_line_naming_both(tmp_path):
  """The message `main` prints after `error:` (exit 2, test_main.py): the command and the folder."""
  workdir = tmp_path / 'run'
  config = default_config(**{'dataset.name': 'cifar10', 'dataset.data_dir': str(tmp_path)})
  with pytest.raises(DataError) as e:
    experiment.train_and_evaluate(config, str(workdir), log=lambda *a: None)
  line = str(e.value)
  assert '\n' not in line and 'not prepared' in line and 'hinge_jax.prepare' in line
  assert str(tmp_path) in line and 'cifar-10-batches-py' in line
  assert not os.path.exists(workdir / 'results.json')


def test_batch_length_walk_runs_no_code_and_counts_like_the_decoder(tmp_path, monkeypatch):
  """`cifar_rows.batch_length` walks a pickle without its image bytes: a malicious file is
  refused as `read_batch` refuses it (no code runs), and a file whose labels are NumPy
  scalars (outside the walk's stand-ins) is counted by the full decode."""
  marker = tmp_path / 'ran'
  path = tmp_path / 'data_batch_1'
  path.write_bytes(pickle.dumps({b'data': Payload(str(marker)), b'labels': [0]}, protocol=2))
  with pytest.raises(DataError, match='refused'):
    cifar_rows.batch_length(str(path))
  assert not marker.exists()
  data = np.zeros((3, 3072), np.uint8)
  path.write_bytes(pickle.dumps({b'data': data, b'labels': list(np.arange(3))}, protocol=2))
  with pytest.raises(DataError, match='refused global'):  # np.int64 needs numpy's scalar
    cifar.read_batch(str(path))
  path.write_bytes(pickle.dumps({b'data': data, b'labels': [0, 1, 2]}, protocol=4))
  assert cifar_rows.batch_length(str(path)) == 3 == len(cifar.read_batch(str(path))[1])
  for protocol in (2, 4):  # long byte strings skipped, in frames (4) or not (2)
    big = {b'data': np.zeros((50, 3072), np.uint8), b'labels': [1] * 50}
    path.write_bytes(pickle.dumps(big, protocol=protocol))
    with monkeypatch.context() as m:
      m.setattr(cifar, 'read_batch', lambda p: pytest.fail('decoded whole'))
      assert cifar_rows.batch_length(str(path)) == 50
