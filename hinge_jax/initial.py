"""Initial weights from a file, a config's optional `init_params_path`, instead of
init_scale·randn: a run then starts from given weights (the interactive demo's export does
this, so that `hinge_jax.main` takes the page's steps from the page's W).

The file is a .npz holding the model's arrays: `W` `(C, D)`, and `b` `(C,)` unless the data
use the bias trick. Every member of a run starts from them.
"""

import os

import jax
import numpy as np

from hinge_jax.errors import ConfigError

FIELD = 'init_params_path'


def path_of(config) -> str:
  """The config's `init_params_path` ('' when absent or empty: init_scale·randn)."""
  value = config.get(FIELD, '')
  if not isinstance(value, str):
    raise ConfigError(f'{FIELD}={value!r} must be a path (a string) or empty')
  return value


def _read(path: str) -> dict:
  if not os.path.isfile(path):
    raise ConfigError(f'{FIELD}={path!r} is not a file; point it at a .npz with the initial W '
                      f'(and b)')
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {k: archive[k] for k in archive.files}
  except Exception as e:  # noqa: BLE001 - any unreadable file is one line
    raise ConfigError(f'{FIELD}={path!r} could not be read as .npz ({type(e).__name__}: '
                      f'{e}); save one with np.savez(path, W=..., b=...)') from None


def load(path: str, params: dict) -> dict:
  """`params` (leaves with a leading members axis) with every member's values the file's."""
  arrays = _read(path)
  out = {}
  for name, leaf in params.items():
    want = tuple(leaf.shape[1:])
    if name not in arrays:
      raise ConfigError(f'{FIELD}={path!r} has no array {name!r} (found: '
                        f'{", ".join(sorted(arrays)) or "none"}); the model needs {name} of '
                        f'shape {want}')
    value = arrays[name]
    if value.shape != want or value.dtype.kind not in 'biuf':
      raise ConfigError(f'{FIELD}={path!r}: {name} is {value.dtype} of shape {value.shape}; '
                        f'the model needs real numbers of shape {want}')
    value = value.astype(leaf.dtype)
    if not np.all(np.isfinite(value)):
      raise ConfigError(f'{FIELD}={path!r}: {name} holds NaN or infinite values; give finite '
                        f'initial weights')
    out[name] = jax.device_put(np.broadcast_to(value, leaf.shape), leaf.sharding)
  return out
