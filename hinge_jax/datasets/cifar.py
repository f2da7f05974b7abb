"""CIFAR-10 from the original "python version" folder `cifar-10-batches-py`, no TFDS involved.

The folder holds pickles: `data_batch_1` … `data_batch_5` and `test_batch`, each a dict with
`data` — a `(10000, 3072)` uint8 array, one image per row, channel-major (1,024 red, then
1,024 green, then 1,024 blue values, each plane row-major) — and `labels` — a list of ints;
`batches.meta` holds `label_names`. A pickle can run code when it is loaded, so these are
read with `RestrictedUnpickler`, which admits only the few callables such files contain
(NumPy's array reconstructor, `ndarray`, `dtype`, and `_codecs.encode` limited to latin-1)
and refuses anything else before it runs.

The arrays match the TFDS path's conventions: images `(N, 32, 32, 3)` uint8 (HWC), labels
int32, the training images in file order (`data_batch_1` first), which is also the order of
TFDS's `id` feature (see `protocol`).
"""

import codecs
import io
import os
import pickle

import numpy as np

from hinge_jax.datasets import cache
from hinge_jax.errors import DataError

FOLDER = 'cifar-10-batches-py'
TRAIN_FILES = tuple(f'data_batch_{i}' for i in range(1, 6))
TEST_FILE = 'test_batch'
META_FILE = 'batches.meta'
CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
               'truck')
IMAGE_SHAPE = (32, 32, 3)


class Refused(pickle.UnpicklingError):
  """The pickle asked for something CIFAR's files never contain."""


def _latin1_encode(obj, encoding='utf-8', errors='strict'):
  """`_codecs.encode` as Python 3 pickles bytes at protocol ≤ 2: only str → latin-1 bytes."""
  if not isinstance(obj, str) or encoding not in ('latin1', 'latin-1') or errors != 'strict':
    raise Refused(f'refused _codecs.encode: it is admitted only for str → latin-1, '
                                 f'not {type(obj).__name__} → {encoding!r}')
  return codecs.encode(obj, 'latin1')


def _numpy_globals() -> dict:
  try:
    from numpy._core import multiarray  # NumPy 2
  except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray
  allowed = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
             ('_codecs', 'encode'): _latin1_encode}
  for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    allowed[(module, '_reconstruct')] = multiarray._reconstruct
  return allowed


class RestrictedUnpickler(pickle.Unpickler):
  """An unpickler for CIFAR's files: dicts, lists, str, bytes, ints and NumPy arrays only.

  Every global a pickle names goes through `find_class`; anything outside `ALLOWED` is
  refused before it can be called.
  """
  ALLOWED = _numpy_globals()

  def find_class(self, module: str, name: str):
    try:
      return self.ALLOWED[(module, name)]
    except KeyError:
      raise Refused(f'refused global {module}.{name}: CIFAR files hold only '
                                   f'dicts, lists, str, bytes, ints and NumPy arrays') from None


def restricted_load(path: str) -> object:
  """Unpickles a file with `RestrictedUnpickler` (bytes keys, as Python 2 wrote them)."""
  with open(path, 'rb') as f:
    data = f.read()
  return RestrictedUnpickler(io.BytesIO(data), encoding='bytes').load()


def _key(d: dict, name: str):
  for k in (name.encode(), name):
    if k in d:
      return d[k]
  raise KeyError(name)


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
  """One batch file → images `(n, 32, 32, 3)` uint8 (HWC) and labels `(n,)` int32.

  Raises:
    DataError: the file is missing, truncated, not a CIFAR batch, or names a refused global.
  """
  where = f'{path}'
  try:
    batch = restricted_load(path)
  except OSError as e:
    raise DataError(f'{where} cannot be read ({e.strerror}); restore the file from the '
                    f'CIFAR-10 python archive')
  except Refused as e:
    raise DataError(f'{where}: {e}; replace it with the original CIFAR-10 file')
  except Exception as e:  # noqa: BLE001 - truncated or garbled pickles fail in many ways
    raise DataError(f'{where} is corrupt or truncated ({type(e).__name__}: {e}); replace it '
                    f'with the original CIFAR-10 file')
  try:
    data, labels = _key(batch, 'data'), _key(batch, 'labels')
  except (KeyError, TypeError):
    raise DataError(f'{where} is not a CIFAR-10 batch (no data/labels entries); point '
                    f'dataset.data_dir at the folder that holds {FOLDER}')
  data = np.asarray(data)
  labels = np.asarray(labels)
  if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072
      or labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer)):
    raise DataError(f'{where} holds data {data.dtype}{list(data.shape)} and labels '
                    f'{labels.dtype}{list(labels.shape)}; a CIFAR-10 batch has uint8 (n, 3072) '
                    f'and n integer labels')
  if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
    raise DataError(f'{where} has labels outside 0..9 (min {labels.min()}, max {labels.max()})')
  images = data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1)  # CHW → HWC
  return np.ascontiguousarray(images), labels.astype(np.int32)


def find_folder(data_dir: str):
  """`data_dir/cifar-10-batches-py`, or `data_dir` itself if it holds the batches; else None."""
  for folder in (os.path.join(data_dir, FOLDER), data_dir):
    if os.path.isfile(os.path.join(folder, TRAIN_FILES[0])):
      return folder
  return None


def source_signature(folder: str) -> dict:
  """Sizes and modification times of the batch files: a change makes the cache stale."""
  out = {}
  for name in TRAIN_FILES + (TEST_FILE,):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      raise DataError(f'{folder} has no {name}; a complete {FOLDER} folder has '
                      f'{", ".join(TRAIN_FILES)} and {TEST_FILE}')
    st = os.stat(path)
    out[name] = [st.st_size, st.st_mtime_ns]
  return out


def class_names(folder: str) -> list:
  """The names in `batches.meta`, or `CLASS_NAMES` when it is missing or unusable."""
  meta_path = os.path.join(folder, META_FILE)
  if os.path.isfile(meta_path):
    try:
      names = [n.decode() if isinstance(n, bytes) else str(n)
               for n in _key(restricted_load(meta_path), 'label_names')]
      if len(names) == len(CLASS_NAMES):
        return names
    except Exception:  # noqa: BLE001 - the names are cosmetic; keep the known ones
      pass
  return list(CLASS_NAMES)


def read_folder(folder: str) -> tuple[dict, dict]:
  """Decodes the whole folder: `(arrays, info)` in the cache's layout."""
  train = [read_batch(os.path.join(folder, name)) for name in TRAIN_FILES]
  test_images, test_labels = read_batch(os.path.join(folder, TEST_FILE))
  arrays = {'train_images': np.concatenate([b[0] for b in train]),
            'train_labels': np.concatenate([b[1] for b in train]),
            'test_images': test_images, 'test_labels': test_labels}
  return arrays, {'class_names': class_names(folder), 'image_shape': list(IMAGE_SHAPE),
                  'source': folder}


def load_arrays(folder: str, *, use_cache: bool = True, open_rows=None) -> tuple[dict, dict]:
  """The folder's arrays, from the cache in `folder/hinge_jax_cache` when it is valid;
  several processes: `open_rows()` (`cifar_rows.open_folder`) without a valid cache."""
  return cache.load_or_build(os.path.join(folder, 'hinge_jax_cache'),
                             lambda: read_folder(folder), what=f'cifar10 ({folder})',
                             source=source_signature(folder), use_cache=use_cache,
                             open_rows=open_rows)
