"""JAX's persistent compilation cache, on by default, so a rerun skips most compiling.

The cache lives under the user's cache directory (`$XDG_CACHE_HOME/hinge_jax/jax_cache`,
by default `~/.cache/hinge_jax/jax_cache`); `$HINGE_JAX_CACHE_DIR` or main's
`--jax_cache_dir` choose another one, and the value `off` turns it off. JAX caches only
programs that took at least a second to compile by default; ours are small, so both
thresholds are lowered to cache every program.
"""

import os
from typing import Callable, Optional

import jax

ENV_VAR = 'HINGE_JAX_CACHE_DIR'
OFF = ('off', 'none', '0', 'false')


def default_dir() -> str:
  """`$HINGE_JAX_CACHE_DIR`, else `$XDG_CACHE_HOME/hinge_jax/jax_cache` (`~/.cache` if unset)."""
  if os.environ.get(ENV_VAR):
    return os.environ[ENV_VAR]
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'hinge_jax', 'jax_cache')


def enable(path: Optional[str] = None, log: Callable[[str], None] = print) -> Optional[str]:
  """Points JAX's persistent compilation cache at `path` (default: `default_dir()`).

  Returns the directory in use, or None when the cache is off or the directory cannot be
  created (one warning line; the run goes on without a cache).
  """
  path = default_dir() if path is None or path == '' else path
  if path.strip().lower() in OFF:
    return None
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    log(f'warning: compilation cache {path} cannot be created ({e.strerror}); running without '
        f'it (set {ENV_VAR} or --jax_cache_dir to another directory, or to "off")')
    return None
  if not os.access(path, os.W_OK):
    log(f'warning: compilation cache {path} is not writable; running without it')
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path
