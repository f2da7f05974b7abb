"""The arrays of a .npz archive, each stored (uncompressed) member memory-mapped in place.

`np.savez` stores each array as an uncompressed .npy member of a zip file: its bytes lie
contiguously in the archive after the member's local header and the .npy header, so it can
be memory-mapped there and a process reads only the rows it touches. A compressed member
(`np.savez_compressed`) cannot be: it is read whole, once. Object arrays are refused by name
(nothing is unpickled).
"""

import zipfile

import numpy as np

from hinge_jax.errors import DataError


def object_refused(path: str, key: str) -> DataError:
  return DataError(f'dataset.path={path!r}: {key!r} is an object array (pickled Python objects, '
                   f'never loaded); save numbers, e.g. np.asarray({key}, np.float32) or labels '
                   f'as np.int64')


def _member_in_place(path: str, f, info: zipfile.ZipInfo):
  """A stored (uncompressed) .npy member memory-mapped where it lies in the archive, or None
  when it cannot be (compressed, or an object dtype, which the caller refuses by name)."""
  if info.compress_type != zipfile.ZIP_STORED:
    return None
  f.seek(info.header_offset)
  local = f.read(30)
  if local[:4] != b'PK\x03\x04':
    return None
  start = info.header_offset + 30 + int.from_bytes(local[26:28], 'little') + int.from_bytes(
      local[28:30], 'little')
  f.seek(start)
  version = np.lib.format.read_magic(f)
  if version not in ((1, 0), (2, 0)):  # 3.0 (utf-8 field names): read the usual way
    return None
  read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)
  shape, fortran, dtype = read_header(f)
  if dtype.hasobject:
    return None
  offset = f.tell()
  if offset - start + int(np.prod(shape)) * dtype.itemsize != info.file_size:
    return None
  if int(np.prod(shape)) == 0:
    return np.zeros(shape, dtype)
  return np.memmap(path, dtype=dtype, mode='r', offset=offset, shape=shape,
                   order='F' if fortran else 'C')


def open_npz(path: str) -> dict:
  """The arrays of a .npz: stored members memory-mapped in place, compressed ones read once;
  object arrays refused by name (nothing is unpickled)."""
  arrays = {}
  try:
    with zipfile.ZipFile(path) as archive, open(path, 'rb') as f:
      for info in archive.infolist():
        if not info.filename.endswith('.npy'):
          continue
        key = info.filename[:-4]
        array = _member_in_place(path, f, info)
        if array is None:
          with archive.open(info) as member:
            try:
              array = np.lib.format.read_array(member, allow_pickle=False)
            except ValueError as e:
              if 'pickle' in str(e):
                raise object_refused(path, key)
              raise
        arrays[key] = array
  except DataError:
    raise
  except Exception as e:  # noqa: BLE001 - a damaged archive or member: one line
    raise DataError(f'dataset.path={path!r} could not be read as .npz ({type(e).__name__}: {e})')
  return arrays
