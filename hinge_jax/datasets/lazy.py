"""Arrays read by rows on demand, so that a process touching only its block reads only that.

A `Rows` has an array's `shape`, `dtype`, `nbytes` and `len`; indexing it with a slice or an
index array reads just those rows (an ndarray, as NumPy's fancy indexing returns one), and
`np.asarray` reads them all. Cutting a split out of it (`rows`, `take`), flattening it
(`reshape`) and converting it (`astype`) make views that read nothing. The readers behind it:
a memory map, CIFAR's batch files (`cifar_rows`), TFDS records (`tfds_data`). The functions
`rows`, `take`, `astype` and `wrap` below cut and convert arrays of either kind, an ndarray
exactly as before.
"""

from typing import Callable, Optional

import numpy as np

Reader = Callable[[np.ndarray], np.ndarray]  # sorted unique int64 source rows → those rows


class Rows:
  """An `(N, ...)` array whose rows come from `read(indices)` when they are indexed."""

  def __init__(self, read: Reader, shape: tuple, dtype, index: Optional[np.ndarray] = None,
               what: str = ''):
    self._read, self._index, self.what = read, index, what
    self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)

  ndim = property(lambda self: len(self.shape))
  size = property(lambda self: int(np.prod(self.shape)))
  nbytes = property(lambda self: self.size * self.dtype.itemsize)

  def __len__(self) -> int:
    return self.shape[0]

  def __repr__(self) -> str:
    return f'Rows({self.what or "lazy"}, shape={self.shape}, dtype={self.dtype})'

  def _view(self, index=None, shape=None, dtype=None) -> 'Rows':
    return Rows(self._read, self.shape if shape is None else shape,
                self.dtype if dtype is None else dtype,
                self._index if index is None else index, self.what)

  def _source(self, idx: np.ndarray) -> np.ndarray:
    return idx if self._index is None else self._index[idx]

  def take(self, idx) -> 'Rows':
    """The rows `idx` (an index array) as a view: nothing is read."""
    idx = np.arange(len(self))[np.asarray(idx)]  # bounds-checked, negatives resolved
    return self._view(index=self._source(idx), shape=(len(idx),) + self.shape[1:])

  def rows(self, start: int, stop: int) -> 'Rows':
    """Rows `[start, stop)` as a view: nothing is read."""
    return self.take(np.arange(len(self))[start:stop])

  def reshape(self, *shape) -> 'Rows':
    """The same rows with another row shape (the first dimension stays)."""
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else shape
    row = int(np.prod(self.shape[1:]))
    rest = tuple(int(s) for s in shape[1:])
    if -1 in rest:
      rest = tuple(row // max(-int(np.prod(rest)), 1) if s == -1 else s for s in rest)
    if shape[0] not in (-1, len(self)) or int(np.prod(rest)) != row:
      raise ValueError(f'cannot reshape {self.shape} rows into {shape}')
    return self._view(shape=(len(self),) + rest)

  def astype(self, dtype) -> 'Rows':
    """The same rows converted to `dtype` as they are read."""
    return self._view(dtype=dtype)

  def read(self, idx) -> np.ndarray:
    """Rows `idx` of this view, read from the source (each source row once, in `idx`'s order)."""
    idx = np.asarray(idx, np.int64).reshape(-1)
    source = self._source(idx)
    wanted, where = np.unique(source, return_inverse=True)
    out = np.asarray(self._read(wanted))[where.reshape(-1)]
    with np.errstate(over='ignore'):  # beyond float32's range: inf, as NumPy's astype gives
      return out.reshape((len(idx),) + self.shape[1:]).astype(self.dtype, copy=False)

  def __getitem__(self, key):
    rest = ()
    if isinstance(key, tuple):
      key, rest = key[0], key[1:]
    if isinstance(key, (int, np.integer)):
      out = self.read(np.arange(len(self))[[key]])[0]
    else:
      out = self.read(np.arange(len(self))[key])
      rest = (slice(None),) + rest if rest else ()
    return out[rest] if rest else out

  def __array__(self, dtype=None, copy=None):
    out = self.read(np.arange(len(self)))
    return out if dtype is None else out.astype(dtype)


def of_array(a: np.ndarray, what: str = '') -> Rows:
  """A `Rows` over an ndarray or memory map: contiguous runs are read as slices."""

  def read(idx):
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
      return a[int(idx[0]):int(idx[-1]) + 1]
    return a[idx]
  return Rows(read, a.shape, a.dtype, what=what)


def rows(a, start: int, stop: int):
  """`a[start:stop]` that reads nothing: a view of an ndarray, a lazy view of a `Rows`."""
  return a.rows(start, stop) if isinstance(a, Rows) else a[start:stop]


def take(a, idx):
  """`a[idx]` for an index array; a `Rows` gives a view that reads nothing."""
  return a.take(idx) if isinstance(a, Rows) else a[idx]


def astype(a, dtype):
  """`np.asarray(a, dtype)`; a `Rows` gives a view that converts as it reads."""
  return a.astype(dtype) if isinstance(a, Rows) else np.asarray(a, dtype)


def wrap(a, what: str = ''):
  """`a` as a `Rows` (an ndarray or memory map wrapped; a `Rows` as it is)."""
  return a if isinstance(a, Rows) else of_array(a, what)


def concat(a, b):
  """`np.concatenate([a, b])` as a `Rows` that reads nothing until indexed: a row of `a`, or
  of `b` after `a`'s, comes from its own source."""
  a, b = wrap(a), wrap(b)
  n = len(a)

  def read(idx):
    return np.concatenate([a.read(idx[idx < n]), b.read(idx[idx >= n] - n)])
  return Rows(read, (n + len(b),) + a.shape[1:], np.result_type(a.dtype, b.dtype),
              what=f'{a.what or "rows"} + {b.what or "rows"}')


def mapped(a, fn: Callable[[np.ndarray], np.ndarray], row_shape: tuple, dtype,
           what: str = '') -> Rows:
  """A `Rows` whose rows are `fn(a[idx])` for the rows asked: `fn` maps `(n, ...)` rows of
  `a` to `(n, *row_shape)`, each row from its own (image features, standardization)."""
  a = wrap(a)
  return Rows(lambda idx: fn(a.read(idx)), (len(a),) + tuple(row_shape), dtype,
              what=what or a.what)


def kept(a: Rows, start: int, stop: int) -> Rows:
  """`a` with its rows `[start, stop)` read once, when first asked for, and held: a process's
  block that several passes read (statistics, checks, devices). Other rows are read each
  time."""
  held = []

  def read(idx):
    if not (len(idx) and start <= idx[0] and idx[-1] < stop):
      return a.read(idx)
    if not held:
      held.append(a.read(np.arange(start, stop)))
    return held[0][idx - start]
  return Rows(read, a.shape, a.dtype, what=a.what)
