"""Each process reads only its block of rows (hinge_jax/datasets/rows.py): the blocks, the
partial float64 objective and gradient, and two real processes (gloo) against one.

The reference is the single-process pass over every row (`objective_and_grad_norm_f64`, which
tests/test_sklearn_optimum.py checks against NumPy) and NumPy's float64 mean.
"""

import io
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from helpers import (REPO, array_dataset, default_config, image_splits, prepare_tfds,
                     write_cifar_folder, xla_flags)
from hinge_jax import config_lib, datasets, distributed, features
from hinge_jax.convergence import objective_and_grad_norm_f64, partial_value_and_grad
from hinge_jax.datasets import cache, cifar, cifar_rows, featurize, lazy, rows
from hinge_jax.datasets.rows import process_block
from hinge_jax.errors import DataError
from hinge_jax.mesh import make_layout
from hinge_jax.state import DeviceData
from hinge_jax.spec import Spec


@pytest.mark.parametrize('n, count', [(0, 2), (1, 2), (7, 3), (1300, 2), (1300, 8), (5, 8)])
def test_blocks_cover_the_rows_once_in_order(n, count):
  blocks = [process_block(n, i, count) for i in range(count)]
  covered = np.concatenate([np.arange(*b) for b in blocks])
  np.testing.assert_array_equal(covered, np.arange(n))  # disjoint, contiguous, in order
  sizes = [b[1] - b[0] for b in blocks]
  assert max(sizes) == -(-n // count)  # no process reads more than its share


def _problem(loss='multiclass_svm', k=2, n=1300, d=7, c=3):
  rng = np.random.default_rng(1)
  ds = array_dataset(rng.standard_normal((n, d)).astype(np.float32) + 3,
                     rng.integers(0, c, n), c, x_val=np.zeros((0, d), np.float32),
                     y_val=np.zeros(0, np.int64), x_test=np.zeros((0, d), np.float32),
                     y_test=np.zeros(0, np.int64))
  configs = [default_config(**{'loss.name': loss, 'reg.strength': lam})
             for lam in (1e-3, 0.5)[:k]]
  spec = Spec.create(configs[0], ds, config_lib.hyper_arrays(configs))
  params = {'W': rng.standard_normal((k, c, d)), 'b': rng.standard_normal((k, c))}
  return ds, spec, params, config_lib.hyper_arrays(configs, np.float64)


def test_partial_sums_over_blocks_give_the_objective_and_gradient():
  """Three processes' blocks (one of them ending in a part block of < 512 rows), the penalty
  counted once: their float64 sums equal the one-pass objective to 1e-12 (summation order)."""
  ds, spec, params, hp = _problem()  # the loss does not matter: every loss sums the same way
  want_value, want_norm = objective_and_grad_norm_f64(params, hp, ds, spec=spec)
  value, grad = 0.0, None
  with jax.enable_x64(True):
    for i in range(3):
      v, g = partial_value_and_grad(params, hp, ds, spec=spec, block=process_block(1300, i, 3),
                                    with_penalty=i == 0)
      value = value + v
      grad = g if grad is None else jax.tree.map(np.add, grad, g)
  norm = np.sqrt(sum(np.sum(g * g, axis=(1, 2) if g.ndim == 3 else 1)
                     for g in jax.tree.leaves(grad)))
  np.testing.assert_allclose(value, want_value, rtol=1e-12)
  np.testing.assert_allclose(norm, want_norm, rtol=1e-12)
  assert not np.allclose(value[0], value[1])  # the two members' λ differ: each counted


WORKER = r'''
import dataclasses, json, sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
port, pid, path, cifar_dir = sys.argv[1:]
jax.distributed.initialize(f'localhost:{port}', 2, int(pid), initialization_timeout=60)
sys.path.insert(0, 'tests')
import numpy as np
from helpers import default_config
CIFAR = {'dataset.name': 'cifar10', 'dataset.data_dir': cifar_dir, 'dataset.num_train': 150,
         'dataset.num_val': 50, 'dataset.num_test': 0, 'dataset.num_dev': 10,
         'dataset.scale': 1.0}
from hinge_jax import config_lib, datasets
from hinge_jax.convergence import objective_and_grad_norm_f64
from hinge_jax.errors import DataError
from hinge_jax.mesh import make_layout
from hinge_jax.state import DeviceData
from hinge_jax.spec import Spec
cfg = default_config(**{'dataset.name': 'npy', 'dataset.path': path, 'dataset.scale': 1.0})
ds = datasets.load(cfg.dataset)
configs = [cfg, default_config(**{'reg.strength': 0.5})]
spec = Spec.create(cfg, ds, config_lib.hyper_arrays(configs))
spec = dataclasses.replace(spec, data_shards=2)  # the data axis over both processes' devices
rng = np.random.default_rng(2)
params = {'W': rng.standard_normal((2, ds.num_classes, ds.raw_dim)),
          'b': rng.standard_normal((2, ds.num_classes))}
value, norm = objective_and_grad_norm_f64(params, config_lib.hyper_arrays(configs, np.float64),
                                          ds, spec=spec)
import os
from hinge_jax.datasets import cifar
decoded, read_batch = [], cifar.read_batch
cifar.read_batch = lambda p: (decoded.append(os.path.basename(p)), read_batch(p))[1]
cifar_ds = datasets.load(default_config(**CIFAR).dataset)
decoded_raw = sorted(decoded)
feats = datasets.load(default_config(**CIFAR, **{'dataset.features': ('hog',)}).dataset).x
from hinge_jax.datasets.rows import process_block
block = process_block(150)  # to a file: the stdout pipe (64 KiB) is full
with open(os.path.join(path, 'features.json'), 'w') as f:
  json.dump({'block': block, 'features': feats['train'][slice(*block)].tolist()}, f)
print('RESULT ' + json.dumps({'mean': ds.mean.tolist(), 'value': value.tolist(),
                              'norm': norm.tolist(), 'cifar_mean': cifar_ds.mean.tolist(),
                              'decoded': decoded_raw}))
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_read_halves_and_agree_with_one(tmp_path):
  """Two processes (gloo), each reading half the rows of a memory-mapped .npy for the mean,
  the NaN check and the float64 objective, report what one process reading all rows does;
  each is given a file whose other half is NaN, so a read of another's rows would fail. The
  same two load CIFAR-10's python files (5×40 + 40 images; train 150, val 50): each decodes
  only the files under its halves, and their mean is one process's; with `dataset.features`
  each extracts its half, standardized by both halves' moments: one process's features."""
  rng = np.random.default_rng(3)
  n, d, c = 1100, 5, 3
  for i in range(2):
    (tmp_path / f'p{i}').mkdir()
  for split, rows in (('train', n), ('val', 40), ('test', 30)):
    x = (rng.standard_normal((rows, d)) + 2).astype(np.float16)
    y = rng.integers(0, c, rows)
    np.save(tmp_path / f'x_{split}.npy', x)
    np.save(tmp_path / f'y_{split}.npy', y)
    for i in range(2):  # process i's copy: NaN outside its block, so reading them would show
      start, stop = process_block(rows, i, 2)
      mine = np.full_like(x, np.nan)
      mine[start:stop] = x[start:stop]
      np.save(tmp_path / f'p{i}' / f'x_{split}.npy', mine)
      np.save(tmp_path / f'p{i}' / f'y_{split}.npy', y)
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
  write_cifar_folder(tmp_path / 'cifar', per_batch=40, num_test=40)
  procs = [subprocess.Popen([sys.executable, '-c', WORKER, str(port), str(i),
                             str(tmp_path / f'p{i}'), str(tmp_path / 'cifar')],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  cfg = default_config(**{'dataset.name': 'npy', 'dataset.path': str(tmp_path),
                          'dataset.scale': 1.0})
  ds = datasets.load(cfg.dataset)
  configs = [cfg, default_config(**{'reg.strength': 0.5})]
  spec = Spec.create(cfg, ds, config_lib.hyper_arrays(configs))
  prng = np.random.default_rng(2)
  params = {'W': prng.standard_normal((2, c, d)), 'b': prng.standard_normal((2, c))}
  value, norm = objective_and_grad_norm_f64(params, config_lib.hyper_arrays(configs, np.float64),
                                            ds, spec=spec)
  x = np.load(tmp_path / 'x_train.npy').astype(np.float64)
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    outs.append(json.loads([l for l in out.splitlines() if l.startswith('RESULT ')][0][7:]))
  for got in outs:
    np.testing.assert_allclose(got['mean'], x.mean(axis=0), rtol=1e-6)  # float32 rounding
    np.testing.assert_allclose(got['mean'], ds.mean, rtol=1e-6)
    np.testing.assert_allclose(got['value'], value, rtol=1e-12)
    np.testing.assert_allclose(got['norm'], norm, rtol=1e-12)
  assert not (tmp_path / 'cifar' / 'cifar-10-batches-py' / 'hinge_jax_cache').exists()
  cifar_mean = datasets.load(default_config(**{'dataset.name': 'cifar10', 'dataset.data_dir': str(
      tmp_path / 'cifar'), 'dataset.num_train': 150, 'dataset.num_val': 50, 'dataset.num_test': 0,
      'dataset.num_dev': 10, 'dataset.scale': 1.0, 'dataset.cache': False}).dataset).mean
  for got in outs:
    np.testing.assert_allclose(got['cifar_mean'], cifar_mean, rtol=1e-6)
  feats = datasets.load(default_config(**{'dataset.name': 'cifar10', 'dataset.data_dir': str(
      tmp_path / 'cifar'), 'dataset.num_train': 150, 'dataset.num_val': 50, 'dataset.num_test': 0,
      'dataset.num_dev': 10, 'dataset.scale': 1.0, 'dataset.cache': False,
      'dataset.features': ('hog',)}).dataset).x['train']
  for i in range(2):  # each extracted its block, standardized by the moments of both
    got = json.loads((tmp_path / f'p{i}' / 'features.json').read_text())
    assert got['block'] == list(process_block(150, i, 2))
    np.testing.assert_allclose(got['features'], feats[slice(*got['block'])], rtol=1e-6,
                               atol=1e-6)
  # train rows [0, 75) | [75, 150), val rows 150 + [0, 25) | [25, 50); 40 rows a file
  assert outs[0]['decoded'] == ['data_batch_1', 'data_batch_2', 'data_batch_4', 'data_batch_5',
                                'test_batch']
  assert outs[1]['decoded'] == ['data_batch_2', 'data_batch_3', 'data_batch_4', 'data_batch_5',
                                'test_batch']


# ------------------------------------------------- loaders: each process reads only its rows
# "Process p of P" in one process: `rows.several` is True and `rows.process_block` answers for
# p (the sums over processes are then this block's own). A spy on each format's reader shows
# what was read; the reference is the whole array as written, or the one-process load.


def _as_process(monkeypatch, p, count):
  real = rows.process_block
  monkeypatch.setattr(rows, 'several', lambda: True)
  monkeypatch.setattr(rows, 'process_block', lambda n, index=None, count_=None: real(
      n, p if index is None else index, count if count_ is None else count_))


def test_rows_views_read_nothing_and_reads_match_numpy():
  a = np.arange(7 * 6, dtype=np.float64).reshape(7, 2, 3)
  asked = []
  r = lazy.Rows(lambda idx: (asked.append(idx.tolist()), a[idx])[1], a.shape, a.dtype)
  view = r.take([6, 0, 2, 4, 5]).rows(1, 4).reshape(3, 6).astype(np.float32)
  assert not asked and view.shape == (3, 6) and view.nbytes == 3 * 6 * 4
  want = a[[0, 2, 4]].reshape(3, 6).astype(np.float32)
  for key in (slice(None), slice(1, None), [2, 0, 2], 1, -1, (slice(0, 2), 3), (2, slice(1, 4)),
              np.array([True, False, True])):
    np.testing.assert_array_equal(view[key], want[key])
  assert asked[-1] == [0, 4]  # view[[True, False, True]]: source rows 0 and 4 only, sorted
  assert view[[2, 0, 2]].dtype == np.float32 and np.asarray(view).dtype == np.float32
  assert asked[2] == [0, 4]  # view[[2, 0, 2]] (source 4, 0, 4): each source row read once
  np.testing.assert_array_equal(np.asarray(view), want)
  with pytest.raises(IndexError):
    r.take([7])


def test_concat_reads_each_row_from_its_own_source():
  a, b = np.arange(10.0).reshape(5, 2), np.arange(100.0, 106.0).reshape(3, 2).astype(np.float32)
  asked = {'a': [], 'b': []}
  ra = lazy.Rows(lambda idx: (asked['a'].append(idx.tolist()), a[idx])[1], a.shape, a.dtype)
  rb = lazy.Rows(lambda idx: (asked['b'].append(idx.tolist()), b[idx])[1], b.shape, b.dtype)
  joined = lazy.concat(ra, rb)
  want = np.concatenate([a, b])
  assert joined.shape == want.shape and joined.dtype == want.dtype and not any(asked.values())
  np.testing.assert_array_equal(joined[3:7], want[3:7])
  assert asked == {'a': [[3, 4]], 'b': [[0, 1]]}
  np.testing.assert_array_equal(joined[[7, 0, 6]], want[[7, 0, 6]])
  np.testing.assert_array_equal(np.asarray(joined), want)
  np.testing.assert_array_equal(lazy.concat(a, b[:0])[1:3], a[1:3])  # plain arrays, empty part


@pytest.fixture(scope='module')
def cifar_files(tmp_path_factory):
  root = tmp_path_factory.mktemp('cifar_rows')
  folder, written = write_cifar_folder(root, per_batch=40, num_test=40)
  return str(root), folder, written


def _cifar_config(data_dir, **fields):
  return default_config(**{'dataset.name': 'cifar10', 'dataset.data_dir': data_dir,
                           'dataset.num_train': 150, 'dataset.num_val': 50,
                           'dataset.num_test': 0, 'dataset.num_dev': 10, 'dataset.scale': 1.0,
                           'dataset.cache': False, **fields}).dataset


@pytest.mark.parametrize('p', [0, 1, 2])
def test_cifar_process_decodes_only_the_batch_files_under_its_blocks(cifar_files, monkeypatch,
                                                                     p):
  """Process p of 3 loads CIFAR-10 (train 150, val 50, test 40 rows of 5×40 + 40): only the
  files under its blocks of each split are decoded, and its rows are the written ones."""
  data_dir, folder, written = cifar_files
  decoded = []
  real = cifar.read_batch
  monkeypatch.setattr(cifar, 'read_batch',
                      lambda path: (decoded.append(os.path.basename(path)), real(path))[1])
  _as_process(monkeypatch, p, 3)
  ds = datasets.load(_cifar_config(data_dir))
  blocks = {s: process_block(n, p, 3) for s, n in (('train', 150), ('val', 50), ('test', 40))}
  first = {'train': 0, 'val': 150, 'test': 0}  # the split's first row in its files
  want = set()
  for s, (start, stop) in blocks.items():
    if s == 'test':
      want.add('test_batch')
    else:
      want |= {f'data_batch_{(first[s] + r) // 40 + 1}' for r in range(start, stop)}
  assert set(decoded) == want and len(want) < 6
  assert len(decoded) == len(set(decoded))  # each file decoded once, however often it is read
  start, stop = blocks['train']
  rows_written = written['train_images'].reshape(200, -1)
  np.testing.assert_array_equal(ds.x['train'][start:stop], rows_written[start:stop])
  np.testing.assert_array_equal(ds.y['train'][start:stop], written['train_labels'][start:stop])
  np.testing.assert_array_equal(  # the mean: this block's float64 sum over all 150 rows
      ds.mean, (rows_written[start:stop].sum(0, dtype=np.float64) / 150).astype(np.float32))
  assert not os.path.exists(os.path.join(folder, 'hinge_jax_cache'))


def test_cifar_batch_lengths_are_read_without_the_image_bytes(cifar_files, monkeypatch):
  _, folder, _ = cifar_files
  read = []

  class Counting(io.FileIO):
    def readinto(self, b):
      n = super().readinto(b)
      read.append(n or 0)
      return n

  monkeypatch.setattr(cifar_rows, '_open', lambda path, mode: io.BufferedReader(
      Counting(path, mode), 4096))
  monkeypatch.setattr(cifar, 'read_batch', lambda path: pytest.fail(f'decoded {path}'))
  for name in cifar.TRAIN_FILES + (cifar.TEST_FILE,):
    read.clear()
    assert cifar_rows.batch_length(os.path.join(folder, name)) == 40
    assert sum(read) < os.path.getsize(os.path.join(folder, name)) / 4  # 40·3,072 image bytes


@pytest.mark.parametrize('p', [0, 1])
def test_tfds_process_requests_only_its_records(tmp_path_factory, monkeypatch, p):
  """Process p of 2 loads TFDS's cifar10 (60 + 20 records, stored shuffled): the records it
  decodes are exactly those of its blocks' rows; every record's id is read undecoded."""
  pytest.importorskip('tensorflow_datasets')
  from hinge_jax.datasets import tfds_data
  root = tmp_path_factory.mktemp('tfds_rows')
  written = image_splits((32, 32, 3), num_train=60, num_test=20, seed=4)
  prepare_tfds('cifar10', root, written, cache=False)
  requested, record_of = {}, {}
  real = tfds_data._records

  def spy(source, keys):
    records = real(source, keys)
    decoded = not isinstance(records[0]['image'], bytes)
    requested.setdefault((str(source.split), decoded), set()).update(keys)
    record_of.update({r['id'].decode(): k for k, r in zip(keys, records)})
    return records

  monkeypatch.setattr(tfds_data, '_records', spy)
  _as_process(monkeypatch, p, 2)
  ds = datasets.load(_cifar_config(str(root), **{'dataset.num_train': 40,
                                                 'dataset.num_val': 20}))
  want = {'train': set(), 'test': set()}
  for split, source, first, n in (('train', 'train', 0, 40), ('val', 'train', 40, 20),
                                  ('test', 'test', 0, 20)):
    start, stop = process_block(n, p, 2)
    want[source] |= {record_of[f'{source}_{first + r:05d}'] for r in range(start, stop)}
  assert requested == {('train', False): set(range(60)), ('test', False): set(range(20)),
                       ('train', True): want['train'], ('test', True): want['test']}
  start, stop = process_block(40, p, 2)
  np.testing.assert_array_equal(ds.x['train'][start:stop],
                                written['train'][0][start:stop].reshape(stop - start, -1))
  np.testing.assert_array_equal(ds.y['train'][start:stop], written['train'][1][start:stop])


def _mapped(a) -> bool:
  """Whether `a` is a view of a memory-mapped file."""
  while a is not None:
    if isinstance(a, np.memmap):
      return True
    a = getattr(a, 'base', None)
  return False


@pytest.mark.parametrize('p', [0, 1])
def test_npz_process_maps_the_archive_and_reads_only_its_rows(tmp_path, monkeypatch, p):
  """Process p of 2 loads an uncompressed .npz whose rows outside p's blocks are NaN: the
  members are memory-mapped, the NaN check passes and the mean is p's block's."""
  rng = np.random.default_rng(5)
  arrays, whole = {}, {}
  for split, n in (('train', 41), ('val', 9), ('test', 6)):
    x = rng.standard_normal((n, 3)).astype(np.float32)
    start, stop = process_block(n, p, 2)
    whole[split] = x
    arrays[f'x_{split}'] = np.full_like(x, np.nan)
    arrays[f'x_{split}'][start:stop] = x[start:stop]
    arrays[f'y_{split}'] = np.arange(n) % 3
  np.savez(tmp_path / 'a.npz', **arrays)
  np.savez_compressed(tmp_path / 'c.npz', **arrays)
  cfg = default_config(**{'dataset.name': 'npz', 'dataset.path': str(tmp_path / 'a.npz'),
                          'dataset.scale': 1.0}).dataset
  with pytest.raises(DataError, match='NaN'):  # one process reads every row
    datasets.load(cfg)
  _as_process(monkeypatch, p, 2)
  ds = datasets.load(cfg)
  start, stop = process_block(41, p, 2)
  assert all(_mapped(ds.x[s]) for s in datasets.SPLITS)
  np.testing.assert_array_equal(ds.x['train'][start:stop], whole['train'][start:stop])
  np.testing.assert_array_equal(ds.y['val'][:], np.arange(9) % 3)
  np.testing.assert_array_equal(
      ds.mean, (whole['train'][start:stop].sum(0, dtype=np.float64) / 41).astype(np.float32))
  cfg.path = str(tmp_path / 'c.npz')  # compressed: read whole (then the NaN check reads a block)
  assert not _mapped(datasets.load(cfg).x['train'])


def _same(a, b):
  """Two Datasets equal bit for bit (values, dtypes, shapes, constants)."""
  assert (a.num_classes, a.class_names, a.image_shape, a.scale, a.bias_trick) == (
      b.num_classes, b.class_names, b.image_shape, b.scale, b.bias_trick)
  np.testing.assert_array_equal(a.mean, b.mean)
  assert a.mean.dtype == b.mean.dtype and set(a.x) == set(b.x)
  for s in a.x:
    for u, v in ((a.x[s], b.x[s]), (a.y[s], b.y[s])):
      u, v = np.asarray(u), np.asarray(v)
      assert u.dtype == v.dtype and u.shape == v.shape, s
      np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize('source, order', [
    (s, o) for s in ('cifar files', 'cifar cache', 'tfds') for o in ('canonical', 'shuffled')
] + [('npz', None), ('npz cut', None)])
def test_one_block_of_every_row_loads_what_one_process_does(cifar_files, tmp_path_factory,
                                                            monkeypatch, source, order):
  """The by-rows path (`rows.several`, one process: its block is every row) gives the
  one-process load bit for bit: cut, order, dev rows, conversions, mean."""
  if source.startswith('npz'):
    rng = np.random.default_rng(6)
    path = tmp_path_factory.mktemp('npz') / 'a.npz'
    keys = ('train',) if source == 'npz cut' else ('train', 'val', 'test')
    np.savez(path, **{f'{xy}_{s}': (rng.standard_normal((30, 2, 2)) if xy == 'x'  # float64
                                    else rng.integers(0, 3, 30)) for s in keys for xy in 'xy'})
    cfg = default_config(**{'dataset.name': 'npz', 'dataset.path': str(path)}).dataset
  elif source == 'tfds':
    pytest.importorskip('tensorflow_datasets')
    root = tmp_path_factory.mktemp('tfds_same')
    prepare_tfds('cifar10', root, image_splits((32, 32, 3), num_train=60, num_test=20, seed=7),
                 cache=False)
    cfg = _cifar_config(str(root), **{'dataset.num_train': 40, 'dataset.num_val': 20,
                                      'dataset.order': order})
  else:
    data_dir = cifar_files[0] if source == 'cifar files' else str(tmp_path_factory.mktemp('c'))
    if source == 'cifar cache':
      write_cifar_folder(data_dir, per_batch=40, num_test=40, seed=8)
    cfg = _cifar_config(data_dir, **{'dataset.order': order,
                                     'dataset.cache': source == 'cifar cache'})
  one = datasets.load(cfg)
  if source == 'cifar cache':  # the cache is written; mapped, its checksum is not read
    monkeypatch.setattr(cache, 'checksum', lambda a: pytest.fail('read every byte'))
    monkeypatch.setattr(cifar, 'read_batch', lambda path: pytest.fail('decoded the source'))
  _as_process(monkeypatch, 0, 1)
  several = datasets.load(cfg)
  if source != 'npz':
    assert isinstance(several.x['train'], lazy.Rows) and isinstance(several.y['dev'] if
                                                                    'dev' in several.y else
                                                                    several.y['train'],
                                                                    lazy.Rows)
  _same(one, several)


@pytest.mark.parametrize('shards', [1, 4])
def test_device_data_from_rows_equals_the_arrays(cifar_files, monkeypatch, shards):
  """`DeviceData.create` takes `lazy.Rows` splits as it takes arrays: replicated (read
  whole) or laid over 4 data shards (each device's rows read alone)."""
  cfg = _cifar_config(cifar_files[0])
  one = datasets.load(cfg)
  layout = make_layout(jax.devices(), 2, shards)
  want = DeviceData.create(one, 128, layout.replicated, rows=layout.rows, shards=shards)
  monkeypatch.setattr(rows, 'several', lambda: True)
  got = DeviceData.create(datasets.load(cfg), 128, layout.replicated, rows=layout.rows,
                          shards=shards)
  assert isinstance(datasets.load(cfg).x['train'], lazy.Rows)
  for split in datasets.SPLITS:
    for a, b in ((want.x[split], got.x[split]), (want.y[split], got.y[split])):
      assert a.dtype == b.dtype and a.sharding == b.sharding
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('p, count', [(0, 1), (0, 3), (2, 3)])
def test_cifar_features_process_decodes_and_extracts_only_its_rows(cifar_files, monkeypatch, p,
                                                                   count):
  """CIFAR-10's files with `dataset.features` as process p of P: only the batch files under
  p's blocks are decoded, the extractor sees only p's images, and with every process's moments
  (`distributed.gathered`) its blocks' features are the one-process ones to 1e-6."""
  data_dir, _, _ = cifar_files
  cfg = _cifar_config(data_dir, **{'dataset.features': ('hog', 'hue_hist')})
  one = datasets.load(cfg)
  raw = featurize.raw_features(datasets.load(_cifar_config(data_dir)), ('hog', 'hue_hist'), cfg)
  parts = []
  for q in range(count):
    _as_process(monkeypatch, q, count)
    parts.append(featurize.block_moments(raw['train']))
  monkeypatch.undo()
  decoded, extracted = [], []
  real_read, real_extract, real_gathered = cifar.read_batch, features.extract, distributed.gathered
  monkeypatch.setattr(cifar, 'read_batch',
                      lambda path: (decoded.append(os.path.basename(path)), real_read(path))[1])
  monkeypatch.setattr(features, 'extract', lambda images, *a, **kw: (
      extracted.append(len(images)), real_extract(images, *a, **kw))[1])
  monkeypatch.setattr(distributed, 'gathered', lambda a: np.stack(parts) if np.shape(a) == parts[
      p].shape else real_gathered(a))
  _as_process(monkeypatch, p, count)
  ds = datasets.load(cfg)
  blocks = {s: process_block(n, p, count) for s, n in (('train', 150), ('val', 50),
                                                      ('test', 40))}
  for s, (start, stop) in blocks.items():
    assert isinstance(ds.x[s], lazy.Rows) and ds.x[s].shape == one.x[s].shape
    np.testing.assert_allclose(ds.x[s][start:stop], one.x[s][start:stop], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ds.y[s][start:stop], one.y[s][start:stop])
  assert sorted(extracted) == sorted(stop - start for start, stop in blocks.values())
  first = {'train': 0, 'val': 150}  # the split's first row in the training files
  want = {'test_batch'} | {f'data_batch_{(first[s] + r) // 40 + 1}' for s in first
                           for r in range(*blocks[s])}
  assert set(decoded) == want and len(decoded) == len(want)


def test_kept_rows_read_the_block_once_and_mapped_rows_apply_fn_to_the_rows_asked():
  a = np.arange(20.0).reshape(10, 2)
  asked = []
  source = lazy.Rows(lambda idx: (asked.append(idx.tolist()), a[idx])[1], a.shape, a.dtype)
  doubled = lazy.mapped(source, lambda v: np.stack([v.sum(1), 2 * v[:, 0]], 1), (2,), np.float32)
  held = lazy.kept(doubled, 3, 7)
  want = np.stack([a.sum(1), 2 * a[:, 0]], 1).astype(np.float32)
  np.testing.assert_array_equal(held[4:6], want[4:6])
  np.testing.assert_array_equal(held[[6, 3]], want[[6, 3]])
  assert asked == [[3, 4, 5, 6]] and held.dtype == np.float32  # the block, once
  np.testing.assert_array_equal(held[6:9], want[6:9])  # beyond the block: read as asked
  np.testing.assert_array_equal(np.asarray(held), want)
  assert asked[1:] == [[6, 7, 8], list(range(10))]


def test_device_data_from_feature_rows_equals_the_one_process_features(cifar_files, monkeypatch):
  """`DeviceData.create` over 4 data shards takes the lazy features as it takes arrays."""
  cfg = _cifar_config(cifar_files[0], **{'dataset.features': ('hog',)})
  layout = make_layout(jax.devices(), 2, 4)
  want = DeviceData.create(datasets.load(cfg), 128, layout.replicated, rows=layout.rows, shards=4)
  monkeypatch.setattr(rows, 'several', lambda: True)
  ds = datasets.load(cfg)
  assert isinstance(ds.x['train'], lazy.Rows)
  got = DeviceData.create(ds, 128, layout.replicated, rows=layout.rows, shards=4)
  for split in datasets.SPLITS:
    assert want.x[split].sharding == got.x[split].sharding
    np.testing.assert_allclose(np.asarray(got.x[split]), np.asarray(want.x[split]), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got.y[split]), np.asarray(want.y[split]))
