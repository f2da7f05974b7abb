"""What a result needs beside its numbers to be re-created: versions, device, code commit."""

import os
import platform
import subprocess
import sys
from importlib import metadata as importlib_metadata

import jax


def _version(package: str) -> str | None:
  try:
    return importlib_metadata.version(package)
  except importlib_metadata.PackageNotFoundError:
    return None


def git_commit() -> str | None:
  """The commit of the code being run (with '+dirty' for local changes), if it is a git checkout."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True,
                            text=True, timeout=5, check=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=root,
                           capture_output=True, text=True, timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None
  return commit + ('+dirty' if dirty else '')


def run_metadata() -> dict:
  """Versions of Python and the libraries, the device kind and count, the host and commit."""
  devices = jax.devices()
  return {
      'python': sys.version.split()[0],
      'versions': {p: _version(p) for p in ('jax', 'jaxlib', 'optax', 'flax', 'numpy',
                                             'ml_collections', 'orbax-checkpoint')},
      'backend': jax.default_backend(),
      'device_kind': devices[0].device_kind,
      'device_count': len(devices),
      'platform': platform.platform(),
      'git_commit': git_commit(),
  }
