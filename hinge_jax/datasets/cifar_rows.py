"""CIFAR-10's python files read by rows: a block of rows decodes only the batch files under it.

A process of a multi-process run (`rows.several`) gets `lazy.Rows` over the folder: rows
0..N−1 are the training batch files end to end (`data_batch_1` first), and reading rows
decodes just the files that hold them, each whole (a pickle cannot be read in part) and
once. The files' lengths come from
`batch_length`, which walks a file's pickle without reading its image bytes.
"""

import os
import pickle
import struct

import numpy as np

from hinge_jax.datasets import cifar, lazy

_SKIP = 1 << 12  # byte strings at least this long are skipped, not read, by `batch_length`
_open = open  # tests count what is read through it


class _Skipped:
  """A byte string of the pickle that was passed over."""


class _Stub:
  """Stands in for NumPy's array and dtype while a pickle is walked: records its state."""

  def __init__(self, *args):
    self.args, self.state = args, None

  def __setstate__(self, state):
    self.state = state


def _stub(*args):
  return _Stub(*args)


def _encode(obj, *args):
  """`_codecs.encode` as Python 3 writes bytes (the keys); a skipped string stays skipped."""
  return obj if isinstance(obj, _Skipped) else cifar._latin1_encode(obj, *args)  # noqa: SLF001


class _LengthUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python one can skip bytes
  """Unpickles a batch with its long byte strings skipped and NumPy replaced by `_Stub`s."""

  def __init__(self, f):
    super().__init__(f, encoding='bytes')
    self._f = f

  def find_class(self, module, name):
    if (module, name) not in cifar.RestrictedUnpickler.ALLOWED:
      raise cifar.Refused(f'{module}.{name}')
    return _encode if (module, name) == ('_codecs', 'encode') else _stub

  def _bytes(self, size_format: str):
    size, = struct.unpack(size_format, self.read(struct.calcsize(size_format)))
    if size >= _SKIP and not self._unframer.current_frame:
      self._f.seek(size, os.SEEK_CUR)
      return _Skipped()
    return self.read(size)

  dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001
  dispatch[pickle.BINSTRING[0]] = lambda self: self.append(self._bytes('<i'))
  dispatch[pickle.BINBYTES[0]] = lambda self: self.append(self._bytes('<I'))
  dispatch[pickle.BINBYTES8[0]] = lambda self: self.append(self._bytes('<Q'))
  dispatch[pickle.BINUNICODE[0]] = lambda self: self.append(self._unicode('<I'))
  dispatch[pickle.BINUNICODE8[0]] = lambda self: self.append(self._unicode('<Q'))

  def _unicode(self, size_format: str):
    data = self._bytes(size_format)
    return data if isinstance(data, _Skipped) else str(data, 'utf-8', 'surrogatepass')


def batch_length(path: str) -> int:
  """The number of images in a batch file, read without its image bytes; a file this walk
  does not understand is decoded whole (`cifar.read_batch`, which also names what is wrong)."""
  try:
    with _open(path, 'rb') as f:
      batch = _LengthUnpickler(f).load()
    data, labels = cifar._key(batch, 'data'), cifar._key(batch, 'labels')  # noqa: SLF001
    shape = tuple(data.state[1])
    if len(shape) == 2 and shape[1] == 3072 and shape[0] == len(labels):
      return int(shape[0])
  except Exception:  # noqa: BLE001 - anything unexpected: the full decode below decides
    pass
  return len(cifar.read_batch(path)[1])


class BatchFiles:
  """Batch files read end to end as one array of rows; a file is decoded once and kept (a
  process keeps only the files under its rows: at most the 150 MB of CIFAR's training set)."""

  def __init__(self, paths: list):
    self.paths = list(paths)
    self.starts = np.cumsum([0] + [batch_length(p) for p in self.paths])
    self._decoded = {}

  def __len__(self) -> int:
    return int(self.starts[-1])

  def _decode(self, i: int) -> tuple:
    if i not in self._decoded:
      self._decoded[i] = cifar.read_batch(self.paths[i])
    return self._decoded[i]

  def read(self, field: int, idx: np.ndarray) -> np.ndarray:
    """Images (`field` 0) or labels (1) of the sorted rows `idx`, file by file."""
    files = np.searchsorted(self.starts, idx, side='right') - 1
    parts = [self._decode(int(i))[field][idx[files == i] - self.starts[i]]
             for i in np.unique(files)]
    empty = (0,) + cifar.IMAGE_SHAPE if field == 0 else (0,)
    return np.concatenate(parts) if parts else np.zeros(empty, np.uint8 if field == 0 else np.int32)

  def arrays(self, prefix: str) -> dict:
    n = len(self)
    return {f'{prefix}_images': lazy.Rows(lambda idx: self.read(0, idx),
                                          (n,) + cifar.IMAGE_SHAPE, np.uint8, what=prefix),
            f'{prefix}_labels': lazy.Rows(lambda idx: self.read(1, idx), (n,), np.int32,
                                          what=prefix)}


def open_folder(folder: str) -> tuple[dict, dict]:
  """`cifar.read_folder`'s `(arrays, info)` with `lazy.Rows` for arrays: nothing is decoded
  until rows are read (the file lengths and class names are read now)."""
  cifar.source_signature(folder)  # every file there, or one line naming the missing one
  train = BatchFiles([os.path.join(folder, name) for name in cifar.TRAIN_FILES])
  test = BatchFiles([os.path.join(folder, cifar.TEST_FILE)])
  return ({**train.arrays('train'), **test.arrays('test')},
          {'class_names': cifar.class_names(folder), 'image_shape': list(cifar.IMAGE_SHAPE),
           'source': folder})
