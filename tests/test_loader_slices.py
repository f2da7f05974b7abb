"""Each process reads only its block of rows (hinge_jax/datasets/rows.py): the blocks, the
partial float64 objective and gradient, and two real processes (gloo) against one.

The reference is the single-process pass over every row (`objective_and_grad_norm_f64`, which
tests/test_sklearn_optimum.py checks against NumPy) and NumPy's float64 mean.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from helpers import REPO, array_dataset, default_config
from hinge_jax import config_lib, datasets
from hinge_jax.convergence import objective_and_grad_norm_f64, partial_value_and_grad
from hinge_jax.datasets.rows import process_block
from hinge_jax.spec import Spec


@pytest.mark.parametrize('n, count', [(0, 2), (1, 2), (7, 3), (1300, 2), (1300, 8), (5, 8)])
def test_blocks_cover_the_rows_once_in_order(n, count):
  blocks = [process_block(n, i, count) for i in range(count)]
  covered = np.concatenate([np.arange(*b) for b in blocks])
  np.testing.assert_array_equal(covered, np.arange(n))  # disjoint, contiguous, in order
  sizes = [b[1] - b[0] for b in blocks]
  assert max(sizes) == -(-n // count)  # no process reads more than its share


def _problem(loss='multiclass_svm', k=2, n=1300, d=7, c=3):
  rng = np.random.default_rng(1)
  ds = array_dataset(rng.standard_normal((n, d)).astype(np.float32) + 3,
                     rng.integers(0, c, n), c, x_val=np.zeros((0, d), np.float32),
                     y_val=np.zeros(0, np.int64), x_test=np.zeros((0, d), np.float32),
                     y_test=np.zeros(0, np.int64))
  configs = [default_config(**{'loss.name': loss, 'reg.strength': lam})
             for lam in (1e-3, 0.5)[:k]]
  spec = Spec.create(configs[0], ds, config_lib.hyper_arrays(configs))
  params = {'W': rng.standard_normal((k, c, d)), 'b': rng.standard_normal((k, c))}
  return ds, spec, params, config_lib.hyper_arrays(configs, np.float64)


def test_partial_sums_over_blocks_give_the_objective_and_gradient():
  """Three processes' blocks (one of them ending in a part block of < 512 rows), the penalty
  counted once: their float64 sums equal the one-pass objective to 1e-12 (summation order)."""
  ds, spec, params, hp = _problem()  # the loss does not matter: every loss sums the same way
  want_value, want_norm = objective_and_grad_norm_f64(params, hp, ds, spec=spec)
  value, grad = 0.0, None
  with jax.enable_x64(True):
    for i in range(3):
      v, g = partial_value_and_grad(params, hp, ds, spec=spec, block=process_block(1300, i, 3),
                                    with_penalty=i == 0)
      value = value + v
      grad = g if grad is None else jax.tree.map(np.add, grad, g)
  norm = np.sqrt(sum(np.sum(g * g, axis=(1, 2) if g.ndim == 3 else 1)
                     for g in jax.tree.leaves(grad)))
  np.testing.assert_allclose(value, want_value, rtol=1e-12)
  np.testing.assert_allclose(norm, want_norm, rtol=1e-12)
  assert not np.allclose(value[0], value[1])  # the two members' λ differ: each counted


WORKER = r'''
import dataclasses, json, sys
import jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
port, pid, path = sys.argv[1:]
jax.distributed.initialize(f'localhost:{port}', 2, int(pid), initialization_timeout=60)
sys.path.insert(0, 'tests')
import numpy as np
from helpers import default_config
from hinge_jax import config_lib, datasets
from hinge_jax.convergence import objective_and_grad_norm_f64
from hinge_jax.spec import Spec
cfg = default_config(**{'dataset.name': 'npy', 'dataset.path': path, 'dataset.scale': 1.0})
ds = datasets.load(cfg.dataset)
configs = [cfg, default_config(**{'reg.strength': 0.5})]
spec = Spec.create(cfg, ds, config_lib.hyper_arrays(configs))
spec = dataclasses.replace(spec, data_shards=2)  # the data axis over both processes' devices
rng = np.random.default_rng(2)
params = {'W': rng.standard_normal((2, ds.num_classes, ds.raw_dim)),
          'b': rng.standard_normal((2, ds.num_classes))}
value, norm = objective_and_grad_norm_f64(params, config_lib.hyper_arrays(configs, np.float64),
                                          ds, spec=spec)
print('RESULT ' + json.dumps({'mean': ds.mean.tolist(), 'value': value.tolist(),
                              'norm': norm.tolist()}))
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_read_halves_and_agree_with_one(tmp_path):
  """Two processes (gloo), each reading half the rows of a memory-mapped .npy for the mean,
  the NaN check and the float64 objective, report what one process reading all rows does;
  each is given a file whose other half is NaN, so a read of another's rows would fail."""
  rng = np.random.default_rng(3)
  n, d, c = 1100, 5, 3
  for i in range(2):
    (tmp_path / f'p{i}').mkdir()
  for split, rows in (('train', n), ('val', 40), ('test', 30)):
    x = (rng.standard_normal((rows, d)) + 2).astype(np.float16)
    y = rng.integers(0, c, rows)
    np.save(tmp_path / f'x_{split}.npy', x)
    np.save(tmp_path / f'y_{split}.npy', y)
    for i in range(2):  # process i's copy: NaN outside its block, so reading them would show
      start, stop = process_block(rows, i, 2)
      mine = np.full_like(x, np.nan)
      mine[start:stop] = x[start:stop]
      np.save(tmp_path / f'p{i}' / f'x_{split}.npy', mine)
      np.save(tmp_path / f'p{i}' / f'y_{split}.npy', y)
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  procs = [subprocess.Popen([sys.executable, '-c', WORKER, str(port), str(i),
                             str(tmp_path / f'p{i}')],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  cfg = default_config(**{'dataset.name': 'npy', 'dataset.path': str(tmp_path),
                          'dataset.scale': 1.0})
  ds = datasets.load(cfg.dataset)
  configs = [cfg, default_config(**{'reg.strength': 0.5})]
  spec = Spec.create(cfg, ds, config_lib.hyper_arrays(configs))
  prng = np.random.default_rng(2)
  params = {'W': prng.standard_normal((2, c, d)), 'b': prng.standard_normal((2, c))}
  value, norm = objective_and_grad_norm_f64(params, config_lib.hyper_arrays(configs, np.float64),
                                            ds, spec=spec)
  x = np.load(tmp_path / 'x_train.npy').astype(np.float64)
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    outs.append(json.loads([l for l in out.splitlines() if l.startswith('RESULT ')][0][7:]))
  for got in outs:
    np.testing.assert_allclose(got['mean'], x.mean(axis=0), rtol=1e-6)  # float32 rounding
    np.testing.assert_allclose(got['mean'], ds.mean, rtol=1e-6)
    np.testing.assert_allclose(got['value'], value, rtol=1e-12)
    np.testing.assert_allclose(got['norm'], norm, rtol=1e-12)
