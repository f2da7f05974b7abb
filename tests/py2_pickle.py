"""Pickles as Python 2 wrote CIFAR-10's python files: bytes as `str`, so tests (and
benchmarks/fake_cifar.py) write files of the original's format and size."""

import pickle
import struct


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us replace one opcode
  """Protocol 2 with bytes written as Python 2 `str` (SHORT_BINSTRING / BINSTRING)."""
  dispatch = dict(pickle._Pickler.dispatch)

  def save_py2_str(self, obj: bytes) -> None:
    if len(obj) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(obj)) + obj)
    self.memoize(obj)

  dispatch[bytes] = save_py2_str
