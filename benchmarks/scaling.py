"""The data axis: bytes per device, peak RSS, bytes communicated, and the expected step time.

  python benchmarks/scaling.py [--n=1000000] [--quick] [--data=1,2,4,8] [--processes=1,2]

Synthetic embeddings (N × D = 256 float16, C = 100 classes, full-batch gradient descent, one
member): each `mesh.data` value runs in a fresh process with 8 simulated CPU devices, which
reports the bytes each device holds of the splits (its shards' `nbytes`), the process's peak
RSS, the all-reduce operands in the compiled step (XLA's HLO) against the formula of
docs/scaling.md, and the measured step. From the 1-device step and those bytes it prints the
expected step on an 8-GPU host and a TPU v5e-16 slice (the bandwidths assumed are below).
Then, for each `--processes` count P, P processes joined by jax.distributed (gloo, 8/P devices
each, `mesh.data=8`) train on a memory-mapped `dataset.name=npy` folder and report their RSS
after each phase and their peak (`--data=` prints this table alone).
"""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_N = flags.DEFINE_integer('n', 1_000_000, 'Training rows.')
_D = flags.DEFINE_integer('d', 256, 'Features (float16).')
_C = flags.DEFINE_integer('c', 100, 'Classes.')
_DATA = flags.DEFINE_list('data', ['1', '2', '4', '8'], 'mesh.data values.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per repeat.')
_QUICK = flags.DEFINE_bool('quick', False, 'N = 100,000 and one repeat.')
_CHILD = flags.DEFINE_integer('child', 0, 'Internal: run one mesh.data value and print JSON.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/scaling.json', 'JSON output.')
_PROCESSES = flags.DEFINE_list('processes', ['1', '2'], 'Process counts for the peak-RSS table '
                               '(8 simulated devices in all, mesh.data=8); empty: skip it.')
_RSS_CHILD = flags.DEFINE_string('rss_child', '', 'Internal: FOLDER,PROCESSES,ID,PORT.')

# Assumed per device: interconnect bandwidth (one direction), all-reduce latency of a small
# message, HBM bandwidth, and dense matmul peak for the step's float32 (TF32 / bf16-pass) GEMMs.
MACHINES = {
    '8× H200 (NVLink 4, NVSwitch)': {'bandwidth': 450e9, 'latency': 25e-6, 'devices': 8,
                                     'hbm': 4.8e12, 'flops': 494e12},
    'TPU v5e-16 (ICI, 4×4 torus)': {'bandwidth': 200e9, 'latency': 15e-6, 'devices': 16,
                                    'hbm': 819e9, 'flops': 197e12},
}
EFFICIENCY = 0.5  # the share of HBM bandwidth and matmul peak a step reaches
_BYTES = {'f32': 4, 's32': 4, 'f16': 2, 'bf16': 2}


def formula_bytes(c: int, d: int, members: int = 1) -> int:
  """Bytes one full-batch step all-reduces per device: the loss sum, dSᵀX (C×D) and the bias
  gradient (C), float32, for each member the device trains."""
  return members * 4 * (1 + c * d + c)


def all_reduce_bytes(hlo: str) -> int:
  """The bytes of every all-reduce's result in an optimized HLO module (once per op)."""
  total = 0
  for line in hlo.splitlines():
    if ' all-reduce(' not in line and ' all-reduce-start(' not in line:
      continue
    lhs = line.split('=', 1)[1].split('all-reduce', 1)[0]
    for dtype, dims in re.findall(r'(f32|s32|f16|bf16)\[([0-9,]*)\]', lhs):
      n = 1
      for v in filter(None, dims.split(',')):
        n *= int(v)
      total += n * _BYTES[dtype]
  return total


def child(data: int) -> dict:
  import dataclasses
  import resource
  import time

  import jax
  import numpy as np
  from configs import default
  from hinge_jax import config_lib
  from hinge_jax.datasets.base import finalize
  from hinge_jax.train import Trainer
  n, d, c = (100_000 if _QUICK.value else _N.value), _D.value, _C.value
  rng = np.random.default_rng(0)
  x = np.empty((n, d), np.float16)
  for start in range(0, n, 65536):  # in blocks: the RSS then shows the run, not the generator
    x[start:start + 65536] = rng.standard_normal((min(65536, n - start), d), dtype=np.float32)
  y = rng.integers(0, c, n).astype(np.int32)
  small = {'train': x[:256].astype(np.float32)}
  ds = finalize('embeddings', small, {'train': y[:256]}, num_classes=c, center=False,
                scale=1.0, bias_trick=False)
  # float16 kept as stored (finalize makes float32; the step converts a block at a time)
  ds = dataclasses.replace(ds, x={**ds.x, 'train': x}, y={**ds.y, 'train': y})
  del small
  config = config_lib.with_fields(default.get_config(), {
      'strategy': 'gradient_descent', 'batch_size': 0, 'num_steps': 10, 'eval_every_steps': 10,
      'eval_batch_size': 8192, 'mesh.data': data, 'optimizer.learning_rate': 0.1})
  trainer = Trainer.create(config, ds, [config], devices=jax.devices()[:data])
  per_device = {}
  for split in ('train',):  # (the empty val/test splits hold one padding chunk per shard)
    for arr in (trainer.data.x[split], trainer.data.y[split]):
      for shard in arr.addressable_shards:
        per_device[shard.device.id] = per_device.get(shard.device.id, 0) + shard.data.nbytes
  state = trainer.init()
  compiled = trainer.compiled_chunk(state, _STEPS.value)
  reduce_bytes = all_reduce_bytes(compiled.as_text())
  times = []
  for _ in range(1 if _QUICK.value else 3):
    t0 = time.perf_counter()
    state, losses = trainer.run_chunk(state, 0, _STEPS.value)
    jax.block_until_ready(losses)
    times.append((time.perf_counter() - t0) / _STEPS.value)
  return {'data': data, 'n': n, 'd': d, 'c': c, 'device_bytes': max(per_device.values()),
          'devices': len(per_device), 'peak_rss': resource.getrusage(
              resource.RUSAGE_SELF).ru_maxrss * 1024,
          # the chunk's scan body holds one step's all-reduces
          'all_reduce_bytes_per_step': reduce_bytes if data > 1 else 0,
          'formula_bytes': formula_bytes(c, d) if data > 1 else 0,
          'step_s': sorted(times)[len(times) // 2]}


def write_npy(folder: str, n: int, d: int, c: int) -> int:
  """`dataset.name=npy` files: x_train (n × d float16, written a block at a time), y_train and
  small val/test splits. Returns the bytes of x_train and y_train."""
  import numpy as np
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  x = np.lib.format.open_memmap(os.path.join(folder, 'x_train.npy'), 'w+', np.float16, (n, d))
  for start in range(0, n, 65536):
    x[start:start + 65536] = rng.standard_normal((min(65536, n - start), d), dtype=np.float32)
  x.flush()
  del x
  np.save(os.path.join(folder, 'y_train.npy'), rng.integers(0, c, n).astype(np.int32))
  for split in ('val', 'test'):
    np.save(os.path.join(folder, f'x_{split}.npy'),
            rng.standard_normal((1000, d), dtype=np.float32).astype(np.float16))
    np.save(os.path.join(folder, f'y_{split}.npy'), rng.integers(0, c, 1000).astype(np.int32))
  return n * d * 2 + n * 4


def _rss_mib(field: str = 'VmRSS') -> float:
  with open('/proc/self/status') as f:
    line = next(l for l in f if l.startswith(field + ':'))
  return int(line.split()[1]) / 1024


def rss_child(folder: str, processes: int, index: int, port: int) -> dict:
  """One process of `processes` (joined by jax.distributed over gloo): loads the memory-mapped
  split, puts its rows on the data axis (mesh.data=8 over every process's devices), takes
  full-batch steps and the float64 host pass; its RSS after each phase and its peak."""
  import jax
  from configs import default
  from hinge_jax import config_lib, datasets, distributed
  from hinge_jax.convergence import final_fields
  from hinge_jax.train import Trainer
  if processes > 1:
    distributed.initialize(distributed.settings(f'localhost:{port}', processes, index,
                                                environ={}))
  rss = {'start': _rss_mib()}
  config = config_lib.with_fields(default.get_config(), {
      'dataset.name': 'npy', 'dataset.path': folder, 'dataset.scale': 1.0,
      'strategy': 'gradient_descent', 'batch_size': 0, 'num_steps': 2, 'eval_every_steps': 2,
      'eval_batch_size': 8192, 'mesh.data': 8, 'optimizer.learning_rate': 0.1})
  ds = datasets.load(config.dataset)
  rss['load'] = _rss_mib()
  trainer = Trainer.create(config, ds, [config])
  rss['device'] = _rss_mib()
  state = trainer.init()
  state, losses = trainer.run_chunk(state, 0, 2)
  jax.block_until_ready(losses)
  rss['steps'] = _rss_mib()
  final_fields(None, distributed.to_host(state.params),
               config_lib.hyper_arrays([config], 'float64'), ds, spec=trainer.spec, last_step=2)
  rss['float64 pass'] = _rss_mib()
  return {'processes': processes, 'process': index, 'rss_mib': rss, 'peak_mib': _rss_mib('VmHWM')}


def rss_table(n: int, d: int, c: int, counts: list) -> list:
  """Peak RSS per process for each process count, the data in a fresh memory-mapped folder."""
  import socket
  import tempfile
  out = []
  with tempfile.TemporaryDirectory(prefix='hinge_jax_scaling_') as folder:
    data_bytes = write_npy(folder, n, d, c)
    for p in counts:
      with socket.socket() as sock:
        sock.bind(('localhost', 0))
        port = sock.getsockname()[1]
      env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={8 // p}')
      procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__),
                                 f'--rss_child={folder},{p},{i},{port}'], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i in range(p)]
      for i, proc in enumerate(procs):
        stdout, stderr = proc.communicate()
        line = [l for l in stdout.splitlines() if l.startswith('RESULT ')]
        if not line:
          sys.exit(f'error: process {i} of {p} failed: {stderr.strip().splitlines()[-1:]}')
        out.append({**json.loads(line[0][7:]), 'data_mib': data_bytes / 2**20})
  return out


def print_rss(n: int) -> list:
  """`rss_table` for `--processes`, printed."""
  from benchmarks import common
  processes = rss_table(n, _D.value, _C.value, [int(p) for p in _PROCESSES.value])
  if processes:
    phases = list(processes[0]['rss_mib'])
    common.print_table(
        f"RSS per process (MiB), N={n:,} × D={_D.value} float16 memory-mapped "
        f"({processes[0]['data_mib']:.0f} MiB with the labels), mesh.data=8 over 8 simulated "
        'devices in all', ['processes', 'process', *phases, 'peak', 'data/P'],
        [[r['processes'], r['process'], *(f"{r['rss_mib'][k]:.0f}" for k in phases),
          f"{r['peak_mib']:.0f}", f"{r['data_mib'] / r['processes']:.0f}"] for r in processes])
  return processes


def rss_only() -> None:
  """`--data=`: the peak-RSS table alone (N from --n, or 100,000 with --quick)."""
  from benchmarks import common
  n = 100_000 if _QUICK.value else _N.value
  common.write_json(_OUT.value, {'processes': print_rss(n), 'machine': common.machine()})


def single_step(n: int, d: int, c: int, machine: dict) -> float:
  """One device's full-batch step: the slower of reading the float16 rows and the two
  N×D×C matmuls (scores, dSᵀX), each at `EFFICIENCY` of the machine's peak."""
  return max(n * d * 2 / (EFFICIENCY * machine['hbm']),
             4 * n * d * c / (EFFICIENCY * machine['flops']))


def expected_step(t1: float, shards: int, message: int, machine: dict) -> float:
  """The step over `shards` devices: the rows' work split evenly, plus one all-reduce of
  `message` bytes (ring: each device sends and receives 2(S−1)/S of it) and its latency."""
  if shards == 1:
    return t1
  ring = 2 * (shards - 1) / shards * message / machine['bandwidth']
  return t1 / shards + ring + machine['latency']


def main(argv):
  del argv
  from benchmarks import common
  if _CHILD.value:
    print('RESULT ' + json.dumps(child(_CHILD.value)))
    return
  if _RSS_CHILD.value:
    folder, p, i, port = _RSS_CHILD.value.rsplit(',', 3)
    print('RESULT ' + json.dumps(rss_child(folder, int(p), int(i), int(port))))
    return
  rows = []
  for data in map(int, _DATA.value):
    env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
    args = [sys.executable, os.path.abspath(__file__), f'--child={data}', f'--n={_N.value}',
            f'--d={_D.value}', f'--c={_C.value}', f'--steps={_STEPS.value}',
            f'--quick={_QUICK.value}']
    out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    line = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
    if not line:
      sys.exit(f'error: mesh.data={data} failed: {out.stderr.strip().splitlines()[-1:]}')
    rows.append(json.loads(line[0][7:]))
  if not rows:  # --data= : the RSS table alone
    return rss_only()
  base = rows[0]
  table = []
  for r in rows:
    ideal = base['device_bytes'] / r['data']
    table.append([r['data'], f"{r['device_bytes'] / 2**20:.1f}",
                  f"{100 * (r['device_bytes'] / ideal - 1):+.1f}%",
                  f"{r['peak_rss'] / 2**20:.0f}", r['all_reduce_bytes_per_step'],
                  r['formula_bytes'], f"{r['step_s'] * 1e3:.0f}"])
  common.print_table(
      f"N={base['n']:,} × D={base['d']} float16, C={base['c']}, full batch, 1 member "
      '(simulated CPU devices, one process)',
      ['data', 'MiB/device', 'vs 1/S', 'peak RSS MiB', 'all-reduce B/step', 'formula B',
       'CPU step ms'], table)
  message = formula_bytes(base['c'], base['d'])
  n = _N.value  # the expected steps are for the full-size problem even with --quick
  expected = []
  for name, m in MACHINES.items():
    t1 = single_step(n, base['d'], base['c'], m)
    for s in (1, m['devices']):
      expected.append([name, s, f'{t1 * 1e3:.3f}',
                       f'{expected_step(t1, s, message, m) * 1e6:.0f}',
                       f'{2 * (s - 1) / s * message / 1e3:.1f}'])
  common.print_table(f'expected full-batch step, N={n:,} (estimated 1-device step; ring '
                     'all-reduce)', ['machine', 'data shards', '1-device step ms',
                                     'expected step µs', 'kB sent per device'], expected)
  processes = print_rss(base['n'])
  common.write_json(_OUT.value, {'rows': rows, 'expected': expected, 'machines': MACHINES,
                                 'processes': processes, 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
