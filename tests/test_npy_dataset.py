"""`dataset.name=npy`: .npy folders and .npz archives, memory-mapped, dtypes kept, bad input.

The reference for the values and the cut of missing splits is the `npz` loader (it reads the
arrays into memory with `np.load`); memory is measured with tracemalloc, which sees NumPy's
allocations but not a memory-mapped file's pages.
"""

import mmap
import tracemalloc

import numpy as np
import pytest

from helpers import default_config
from hinge_jax import datasets
from hinge_jax.datasets import npy, validate
from hinge_jax.errors import DataError
from hinge_jax.state import DeviceData

RNG = np.random.default_rng(0)
N, D, C = 300, 16, 4
X = RNG.standard_normal((N, D)).astype(np.float32)
Y = (np.arange(N) % C).astype(np.int64)
CUT = {'train': slice(0, 200), 'val': slice(200, 250), 'test': slice(250, N)}


def _cfg(path, **fields):
  return default_config(**{'dataset.name': 'npy', 'dataset.path': str(path),
                           'dataset.scale': 1.0, **fields}).dataset


def _write_folder(folder, x, y, splits=('train', 'val', 'test')):
  folder.mkdir(exist_ok=True)
  for s in splits:
    np.save(folder / f'x_{s}.npy', x[CUT[s]] if len(splits) > 1 else x)
    np.save(folder / f'y_{s}.npy', y[CUT[s]] if len(splits) > 1 else y)
  return folder


def _arrays(x, y):
  return {f'{xy}_{s}': (x if xy == 'x' else y)[CUT[s]] for s in CUT for xy in 'xy'}


def _mapped(a) -> bool:
  """Whether `a` is a view of a memory-mapped file (no copy in the process's heap)."""
  while a is not None:
    if isinstance(a, (np.memmap, mmap.mmap)):
      return True
    a = getattr(a, 'base', None)
  return False


@pytest.mark.parametrize('dtype', [np.float16, np.float32, np.uint8])
@pytest.mark.parametrize('form', ['folder', 'npz'])
def test_files_are_mapped_and_keep_their_dtype(tmp_path, dtype, form):
  x = (X * 40 + 128).astype(dtype) if dtype == np.uint8 else X.astype(dtype)
  if form == 'folder':
    path = _write_folder(tmp_path / 'f', x, Y)
  else:
    path = tmp_path / 'a.npz'
    np.savez(path, **_arrays(x, Y))
  ds = datasets.load(_cfg(path))
  assert ds.num_classes == C and ds.name == 'npy'
  for s, cut in CUT.items():
    assert ds.x[s].dtype == dtype and _mapped(ds.x[s]), s
    np.testing.assert_array_equal(ds.x[s], x[cut])
    np.testing.assert_array_equal(ds.y[s], Y[cut])
  np.testing.assert_allclose(ds.mean, x[CUT['train']].astype(np.float64).mean(0), rtol=1e-6,
                             atol=1e-6)


def test_fortran_and_compressed_npz_members_read_the_same_values(tmp_path):
  arrays = _arrays(X.astype(np.float16), Y)
  fortran = {k: np.asfortranarray(v) for k, v in arrays.items()}
  np.savez(tmp_path / 'f.npz', **fortran)
  np.savez_compressed(tmp_path / 'c.npz', **arrays)
  for name in ('f.npz', 'c.npz'):
    opened = npy.open_npz(str(tmp_path / name))
    assert set(opened) == set(arrays)
    for key, value in arrays.items():
      np.testing.assert_array_equal(opened[key], value)
      assert opened[key].dtype == value.dtype
  assert _mapped(npy.open_npz(str(tmp_path / 'f.npz'))['x_train'])
  assert not _mapped(npy.open_npz(str(tmp_path / 'c.npz'))['x_train'])


def test_missing_splits_are_cut_like_the_npz_loader(tmp_path):
  _write_folder(tmp_path / 'f', X, Y, splits=('train',))
  np.savez(tmp_path / 'ref.npz', x_train=X, y_train=Y)
  fields = {'dataset.val_fraction': 0.2, 'dataset.test_fraction': 0.1, 'dataset.split_seed': 3}
  got = datasets.load(_cfg(tmp_path / 'f', **fields))
  ref = datasets.load(default_config(**{'dataset.name': 'npz', 'dataset.scale': 1.0,
                                        'dataset.path': str(tmp_path / 'ref.npz'),
                                        **fields}).dataset)
  for s in datasets.SPLITS:
    np.testing.assert_array_equal(got.x[s], ref.x[s])
    np.testing.assert_array_equal(got.y[s], ref.y[s])


def test_loading_makes_no_host_copy_of_the_features(tmp_path, monkeypatch):
  monkeypatch.setattr(validate, 'FINITE_BLOCK', 1 << 16)  # the NaN check's temporaries
  n = 20_000
  x = np.random.default_rng(1).standard_normal((n, 64)).astype(np.float16)
  y = np.arange(n) % C
  folder = tmp_path / 'big'
  folder.mkdir()
  np.save(folder / 'x_train.npy', x)
  np.save(folder / 'y_train.npy', y)
  for s in ('val', 'test'):
    np.save(folder / f'x_{s}.npy', x[:100])
    np.save(folder / f'y_{s}.npy', y[:100])
  cfg = _cfg(folder)
  tracemalloc.start()
  try:
    ds = datasets.load(cfg)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert ds.x['train'].shape == x.shape
  assert peak < 0.25 * x.nbytes, (peak, x.nbytes)  # labels and checks, not the features


def test_float16_stays_float16_on_the_device_and_is_converted_exactly(tmp_path):
  """float16 embeddings are stored float16 on the device; the step's conversion gives the
  features float32 data of the same values gives (test_probe trains on float16 end to end)."""
  x16 = X.astype(np.float16)
  features = {}
  for dtype in (np.float16, np.float32):
    ds = datasets.load(_cfg(_write_folder(tmp_path / np.dtype(dtype).name, x16.astype(dtype), Y)))
    data = DeviceData.create(ds, 128)
    assert data.x['train'].dtype == dtype and ds.x['train'].dtype == dtype
    features[dtype] = np.asarray(data.features(data.x['train']))
  assert features[np.float16].dtype == np.float32
  np.testing.assert_array_equal(features[np.float16], features[np.float32])


def _save_npy(folder, **arrays):
  folder.mkdir(exist_ok=True)
  for key, value in arrays.items():
    np.save(folder / f'{key}.npy', value, allow_pickle=True)
  return folder


BAD = {  # case: (arrays in a folder, the message's telling part)
    'NaN feature': (dict(x_train=np.where(np.arange(N)[:, None] == 5, np.nan, X).astype(
        np.float16), y_train=Y), 'the features hold 16 NaN or infinite values (train: '),
    'rank 3 features': (dict(x_train=X.reshape(N, 4, 4), y_train=Y),
                        'x_train has shape (300, 4, 4) (rank 3); features must be (N, D)'),
    'rank 1 features': (dict(x_train=X[:, 0], y_train=Y), 'x[:, None]'),
    'no labels': (dict(x_train=X), "has no 'y_train'"),
    'val without test': (dict(x_train=X, y_train=Y, x_val=X[:5], y_val=Y[:5]),
                         'has x_val, y_val but no x_test, y_test'),
    'x_test alone': (dict(x_train=X, y_train=Y, x_val=X, y_val=Y, x_test=X),
                     'has x_test but no y_test'),
    'object labels': (dict(x_train=X, y_train=Y.astype(object)), "'y_train' is an object array"),
    'float labels': (dict(x_train=X, y_train=Y + 0.5), 'train labels have dtype float64'),
    'test width': (dict(x_train=X, y_train=Y, x_val=X, y_val=Y, x_test=X[:, :3], y_test=Y),
                   'test has 3 features per example but train has 16'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_arrays_are_one_line(tmp_path, case):
  arrays, message = BAD[case]
  with pytest.raises(DataError) as e:
    datasets.load(_cfg(_save_npy(tmp_path / 'f', **arrays)))
  assert message in str(e.value) and '\n' not in str(e.value), str(e.value)


def test_bad_paths_are_one_line(tmp_path):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'text.npz').write_text('not a zip')
  np.save(tmp_path / 'x.npy', X)
  np.savez(tmp_path / 'obj.npz', x_train=X, y_train=Y.astype(object))
  cases = {'': 'dataset.path is empty', str(tmp_path / 'nope'): 'does not exist',
           str(tmp_path / 'empty'): 'holds none of x_train.npy',
           str(tmp_path / 'text.npz'): 'neither a folder of .npy files nor a .npz',
           str(tmp_path / 'x.npy'): 'neither a folder of .npy files nor a .npz',
           str(tmp_path / 'obj.npz'): "'y_train' is an object array"}
  for path, message in cases.items():
    with pytest.raises(DataError) as e:
      datasets.load(_cfg(path))
    assert message in str(e.value) and '\n' not in str(e.value), (path, str(e.value))
