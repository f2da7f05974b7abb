"""Writing results so that a crash never leaves a half-written file; the workdir's lock."""

import contextlib
import fcntl
import json
import math
import os
import socket
import tempfile
import time
from typing import Any

import numpy as np

from hinge_jax.errors import UserError


def to_jsonable(obj: Any) -> Any:
  """NumPy/JAX scalars and arrays → Python numbers and lists; NaN/inf → None (valid JSON)."""
  if isinstance(obj, dict):
    return {str(k): to_jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v) for v in obj]
  if hasattr(obj, '__array__') and not isinstance(obj, (str, bytes)):
    arr = np.asarray(obj)
    return to_jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (np.floating,)):
    return to_jsonable(float(obj))
  return obj


def _write_all(fd: int, data: bytes) -> None:
  """Writes every byte (os.write may write fewer), then fsyncs: nothing stays in a buffer
  that a later close would try, and fail, to write again."""
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view):]
  os.fsync(fd)


def _naming(error: OSError, path: str) -> OSError:
  """The error names the file the caller meant to write, not a temporary one."""
  error.filename = path
  return error


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to a temporary file in the same directory, fsyncs, then renames over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  try:
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=directory)
  except OSError as e:
    raise _naming(e, path)
  with _renamed_or_removed(tmp, path):
    try:
      _write_all(fd, text.encode())
    finally:
      os.close(fd)


def write_json(path: str, obj: Any) -> None:
  """Atomically writes `obj` as indented JSON."""
  write_atomic(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + '\n')


@contextlib.contextmanager
def replacing(path: str, suffix: str = ''):
  """Yields a temporary path next to `path` for a writer; renamed over `path` when the block
  ends, removed when it fails (a full disk leaves the old file or none, never half of one)."""
  tmp = f'{path}.tmp{suffix}'
  with _renamed_or_removed(tmp, path):
    yield tmp


@contextlib.contextmanager
def _renamed_or_removed(tmp: str, path: str):
  """Renames `tmp` over `path` when the block ends; removes it when the block fails (an OSError
  then names `path`)."""
  try:
    yield
    os.replace(tmp, path)
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    if isinstance(e, OSError):
      raise _naming(e, path)
    raise


def append_jsonl(path: str, row: dict) -> None:
  """Appends one JSON object as one line (unbuffered writes, fsynced). A failed append (a full
  disk) is cut back off, so the file never ends in half a line written by this call."""
  data = (json.dumps(to_jsonable(row), sort_keys=True) + '\n').encode()
  try:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  except OSError as e:
    raise _naming(e, path)
  try:
    start = os.fstat(fd).st_size
    try:
      _write_all(fd, data)
    except OSError as e:
      with contextlib.suppress(OSError):
        os.ftruncate(fd, start)
      raise _naming(e, path)
  finally:
    os.close(fd)


def read_jsonl(path: str) -> list[dict]:
  """Reads a JSON-lines file, dropping a torn (unparsable) last line left by a crash."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    lines = f.read().split('\n')
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i >= len(lines) - 2:  # only the final line may be torn
        break
      raise
  return rows


LOCK_NAME = '.lock'  # in the workdir; removed at a clean exit, never one of a run's outputs


class WorkdirLock:
  """An exclusive `flock` on `WORKDIR/.lock` holding the owner's pid, host and start time.

  The kernel drops a flock when its process dies, so a lock left by a killed run is simply
  taken over. The holder removes the file at exit while still holding it; a contender that
  locked a file removed meanwhile sees another inode at the path and tries again.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_NAME)
    self._fd = None

  def _holder(self, fd: int) -> str:
    try:
      info = json.loads(os.pread(fd, 4096, 0).decode() or '{}')
    except (OSError, ValueError, UnicodeDecodeError):
      info = {}
    if not info.get('pid'):
      return 'another process (it has not recorded its pid yet)'
    return f'pid {info["pid"]} on host {info.get("host", "?")} (started {info.get("started", "?")})'

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock, or raises `UserError` naming the process that holds it."""
    for _ in range(100):
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as e:
        raise UserError(f'--workdir={self.workdir}: cannot open its lock file {self.path} '
                        f'({e.strerror}); fix its permissions or choose another --workdir')
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = self._holder(fd)
        os.close(fd)
        raise UserError(f'--workdir={self.workdir} is in use by {holder}; wait for it or '
                        f'choose another --workdir')
      except OSError as e:  # e.g. a file system without locks
        os.close(fd)
        raise UserError(f'--workdir={self.workdir} cannot be locked ({e.strerror}); choose a '
                        f'--workdir on a file system that supports flock')
      mine = os.fstat(fd)
      try:
        there = os.stat(self.path)
      except FileNotFoundError:
        there = None
      if there is not None and (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev):
        break
      os.close(fd)  # the holder removed this file as we locked it: lock the new one
    else:
      raise UserError(f'--workdir={self.workdir}: {self.path} keeps changing; is another '
                      f'process using this workdir? choose another --workdir')
    started = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())
    record = json.dumps({'pid': os.getpid(), 'host': socket.gethostname(), 'started': started})
    self._fd = fd
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, (record + '\n').encode(), 0)
    except OSError as e:  # a full or failing disk: the run could not write its outputs either
      self.release()
      raise UserError(f'--workdir={self.workdir}: cannot write its lock file {self.path} '
                      f'({e.strerror}); free space on that disk or choose another --workdir')
    return self

  def release(self) -> None:
    """Removes the lock file (while still holding it), then unlocks."""
    if self._fd is None:
      return
    try:
      os.unlink(self.path)
    except OSError:
      pass  # a vanished workdir: the kernel drops the lock with the descriptor
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
