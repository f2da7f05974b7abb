"""Decoded arrays cached as `.npy` next to the data, checked before they are used.

A cache is a folder with one `.npy` per array and `cache.json`, written last, that records
each array's file, shape, dtype, byte size and CRC-32, the dataset's metadata and a
signature of the source it was decoded from. `read` loads every array with
`allow_pickle=False` and checks it against `cache.json`: a truncated, corrupted or stale
cache is reported in one line and never used. CRC-32 (zlib) finds accidental damage cheaply;
it is not a defence against someone who can write to the data folder.
"""

import json
import os
import zlib
from typing import Callable, Optional

import numpy as np
from absl import logging

from hinge_jax import io_utils
from hinge_jax.datasets import rows

FORMAT = 1
META = 'cache.json'


def checksum(array: np.ndarray) -> int:
  """CRC-32 of an array's bytes in C order."""
  return zlib.crc32(memoryview(np.ascontiguousarray(array)).cast('B'))


def write(cache_dir: str, arrays: dict, info: dict, source: dict) -> None:
  """Writes `arrays` (name → ndarray) and `cache.json` into `cache_dir`, the metadata last.

  The old `cache.json` is removed first, so a crash mid-write leaves no cache that claims
  to be complete.
  """
  os.makedirs(cache_dir, exist_ok=True)
  meta_path = os.path.join(cache_dir, META)
  if os.path.exists(meta_path):
    os.remove(meta_path)
  entries = {}
  for name, array in arrays.items():
    path = os.path.join(cache_dir, f'{name}.npy')
    tmp = f'{path}.{os.getpid()}.tmp.npy'  # concurrent writers never share a temp file
    np.save(tmp, array, allow_pickle=False)
    os.replace(tmp, path)
    entries[name] = {'file': f'{name}.npy', 'shape': list(array.shape), 'dtype': array.dtype.str,
                     'bytes': int(array.nbytes), 'crc32': checksum(array)}
  io_utils.write_json(meta_path, {'format': FORMAT, 'arrays': entries, 'info': info,
                                  'source': source})


class CacheError(Exception):
  """The cache exists but cannot be used (the message says why, in a few words)."""


def read(cache_dir: str, source: Optional[dict] = None,
         mapped: bool = False) -> Optional[tuple[dict, dict]]:
  """The cached `(arrays, info)`, or None when there is no cache.

  Args:
    cache_dir: the cache folder.
    source: the current source signature; a different recorded one makes the cache stale.
    mapped: memory-map the arrays and check their shapes, dtypes and file sizes but not their
      CRC-32, which would read every byte (a process of a multi-process run reads its rows).

  Raises:
    CacheError: the cache is incomplete, truncated, corrupted or stale.
  """
  meta_path = os.path.join(cache_dir, META)
  if not os.path.exists(meta_path):
    return None
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    entries, info = meta['arrays'], meta['info']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CacheError(f'{META} is unreadable ({type(e).__name__})')
  if meta.get('format') != FORMAT:
    raise CacheError(f'format {meta.get("format")!r} is not {FORMAT}')
  if source is not None and meta.get('source') != source:
    raise CacheError('it was decoded from different source files')
  arrays = {}
  for name, entry in entries.items():
    path = os.path.join(cache_dir, entry['file'])
    try:
      array = np.load(path, allow_pickle=False, mmap_mode='r' if mapped and entry.get('bytes') else None)
    except (OSError, ValueError, EOFError) as e:
      raise CacheError(f'{entry["file"]} cannot be read ({type(e).__name__}: {e})')
    if list(array.shape) != entry['shape'] or array.dtype.str != entry['dtype']:
      raise CacheError(f'{entry["file"]} holds {array.dtype.str}{list(array.shape)}, '
                       f'expected {entry["dtype"]}{entry["shape"]}')
    if not mapped and checksum(array) != entry['crc32']:
      raise CacheError(f'{entry["file"]} fails its checksum')
    arrays[name] = array
  return arrays, info


def load_or_build(cache_dir: str, build: Callable[[], tuple[dict, dict]], *, what: str,
                  source: Optional[dict] = None, use_cache: bool = True,
                  open_rows: Optional[Callable[[], tuple[dict, dict]]] = None
                  ) -> tuple[dict, dict]:
  """Serves `(arrays, info)` from the cache, or builds them and writes the cache.

  A damaged or stale cache is reported in one warning line and rebuilt. A cache that cannot
  be written (read-only data folder) is reported and skipped: the run goes on. A process of
  a multi-process run (`rows.several`, with `open_rows` given) memory-maps the cache
  (`read(mapped=True)`), or else opens the source by rows, and writes nothing: it reads only
  the rows it uses.

  Args:
    cache_dir: where the cache lives.
    build: decodes the source; returns `(arrays, info)`.
    what: the data's name, for messages.
    source: a JSON-able signature of the source (sizes, times); None: not checked.
    use_cache: False decodes every time and writes nothing.
    open_rows: opens the source as `lazy.Rows` (several processes).
  """
  by_rows = open_rows is not None and rows.several()
  if use_cache:
    try:
      hit = read(cache_dir, source, mapped=by_rows)
    except CacheError as e:
      logging.warning('%s: the cache in %s is not usable (%s); %s', what, cache_dir, e,
                      'reading the source' if by_rows else 'rebuilding it from the source')
      hit = None
    if hit is not None:
      logging.info('%s: loaded from the cache in %s', what, cache_dir)
      return hit
  if by_rows:
    logging.info('%s: no usable cache in %s; each process reads its rows from the source '
                 '(a one-process run writes the cache)', what, cache_dir)
    return open_rows()
  arrays, info = build()
  if use_cache:
    try:
      write(cache_dir, arrays, info, source if source is not None else {})
      logging.info('%s: decoded and cached in %s', what, cache_dir)
    except OSError as e:
      logging.warning('%s: could not write the cache in %s (%s); the next run decodes again',
                      what, cache_dir, e.strerror or e)
  return arrays, info
