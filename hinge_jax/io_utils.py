"""Writing results so that a crash never leaves a half-written file."""

import json
import math
import os
import tempfile
from typing import Any

import numpy as np


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


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to a temporary file in the same directory, fsyncs, then renames over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=directory)
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_json(path: str, obj: Any) -> None:
  """Atomically writes `obj` as indented JSON."""
  write_atomic(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + '\n')


def append_jsonl(path: str, row: dict) -> None:
  """Appends one JSON object as one line (one write call, flushed and fsynced)."""
  line = json.dumps(to_jsonable(row), sort_keys=True) + '\n'
  with open(path, 'a') as f:
    f.write(line)
    f.flush()
    os.fsync(f.fileno())


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
