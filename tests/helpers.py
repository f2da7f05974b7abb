"""Small builders shared by the tests."""

import os
import subprocess
import sys

import ml_collections
import numpy as np

from hinge_jax.datasets.base import finalize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_config(**overrides) -> ml_collections.ConfigDict:
  """configs/default.py with dotted-name overrides (`**{'reg.strength': 0.0}`)."""
  sys.path.insert(0, REPO)
  from configs import default
  from hinge_jax import config_lib
  return config_lib.with_fields(default.get_config(), overrides)


def array_dataset(x, y, num_classes, **kw):
  """A Dataset from in-memory arrays (everything in train unless val/test are given)."""
  xs = {'train': np.asarray(x)}
  ys = {'train': np.asarray(y)}
  for split in ('val', 'test'):
    if f'x_{split}' in kw:
      xs[split], ys[split] = kw.pop(f'x_{split}'), kw.pop(f'y_{split}')
  kw.setdefault('center', True)
  kw.setdefault('scale', 1.0)
  kw.setdefault('bias_trick', False)
  return finalize('arrays', xs, ys, num_classes=num_classes, **kw)


def run_main(*args, env=None, timeout=300, module='hinge_jax.main'):
  """Runs `python -m hinge_jax.main ARGS` (or another module) in the repo; returns the CompletedProcess."""
  full_env = dict(os.environ, **(env or {}))
  full_env.pop('XLA_FLAGS', None)
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=full_env)
