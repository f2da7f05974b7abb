"""Shared pieces of the benchmarks: the machine record, repeated timing, tables, JSON.

Every benchmark measures its subject and its baselines in the same process, in alternating
rounds (`interleaved`), repeats each measurement, reports the median with the
min–max, and compares only ratios from one run: these machines are shared and noisy.
"""

import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Optional

import numpy as np

# The assignment's SVM settings: batch 200, lr 1e-7, reg 2.5e4.
BATCH, LR, REG = 200, 1e-7, 2.5e4


def hinge_jax_trainer(dataset, loss: str, steps: int, batch: int = BATCH, learning_rates=(LR,),
                      seeds=None, devices=None, tuning=None):
  """hinge_jax's Trainer on `dataset`: SGD, reg on W and bias, one member per learning rate.

  `seeds`: one per member (each then draws its own minibatches); default: all seed 0.
  `devices`: where to train (default: all local devices). `tuning`: a `tuning.Tuning` (a
  `pallas.trainer.PallasTuning` asking for Pallas trains with its `PallasTrainer`).
  """
  from benchmarks.pallas import trainer as pallas_trainer
  from configs import default
  from hinge_jax import sweep
  Trainer = pallas_trainer.trainer_class(tuning)
  c = default.get_config()
  c.loss.name, c.optimizer.name, c.optimizer.learning_rate = loss, 'sgd', LR
  c.reg.strength, c.reg.regularize_bias = REG, True
  c.batch_size, c.num_steps, c.eval_every_steps = batch, steps, steps
  seeds = [0] * len(learning_rates) if seeds is None else seeds
  members = [sweep.member_config(c, {'optimizer.learning_rate': lr, 'seed': s})
             for lr, s in zip(learning_rates, seeds)]
  return Trainer.create(c, dataset, members, devices=devices, tuning=tuning)


# XLA's command buffers (CUDA graphs) by default record fusions and library calls; adding WHILE
# and CONDITIONAL records the whole training loop, so its steps launch without the host.
CMDBUF = {'xla_gpu_enable_command_buffer':
          'FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL',
          'xla_gpu_graph_min_graph_size': 1}


def tuning_variants() -> dict:
  """The `Tuning` variants the GPU benchmarks compare, by name ('default' first)."""
  from benchmarks.pallas.trainer import PallasTuning
  from hinge_jax.tuning import Tuning
  return {
      'default': Tuning(),
      'xla': Tuning(scaled_decay=False),  # XLA's step at every K (the default's reference)
      'unroll1': Tuning(scan_unroll=1),
      'unroll16': Tuning(scan_unroll=16),
      'cond': Tuning(guard='cond'),
      'select': Tuning(guard='select'),  # the per-step guard (minibatches' default: deferred)
      'deferred': Tuning(guard='deferred'),  # one finiteness check a chunk (also full batch)
      'cmdbuf': Tuning(compiler_options=CMDBUF),
      'cmdbuf_unroll1': Tuning(scan_unroll=1, compiler_options=CMDBUF),
      'cmdbuf_cond': Tuning(guard='cond', compiler_options=CMDBUF),
      'cmdbuf_unroll_loops': Tuning(compiler_options={
          **CMDBUF, 'xla_gpu_command_buffer_unroll_loops': True}),
      'triton_gemm_any': Tuning(compiler_options={'xla_gpu_triton_gemm_any': True}),
      'cublaslt': Tuning(compiler_options={'xla_gpu_enable_cublaslt': True}),
      'no_triton_gemm': Tuning(compiler_options={'xla_gpu_enable_triton_gemm': False}),
      'fullbatch_f32': Tuning(fullbatch_bf16=False),  # the uint8 → float32 pass
      # a minibatch step's features as they are (CIFAR: 3,073), or zero-padded to a multiple
      'pad1': Tuning(feature_multiple=1),
      'pad8': Tuning(feature_multiple=8),
      'pad64': Tuning(feature_multiple=64),
      'pad256': Tuning(feature_multiple=256),
      # pallas/fused.py: plain SGD's step as two Pallas kernels (not XLA's ~11), or XLA's forward
      # with the backward product and update as one Pallas kernel (dW never written). By
      # default 4 warps a program for 'step', 8 for 'update' (fused.WARPS), whose tiles are
      # 128 rows of W. Variants: 'step' at 8 warps; 'update' at 4 (it spills registers:
      # gpu_program.py's ptxas table), at 16, and with 64-row tiles (two programs an SM)
      'pallas_step': PallasTuning(pallas='step'),
      'pallas_update': PallasTuning(pallas='update'),
      'pallas_step_w8': PallasTuning(pallas='step', pallas_warps=8),
      # 'step''s update kernel taking the batch 64 or 128 rows an iteration, not 32: 4 or 2
      # dependent iterations a step, not 7 (a step of one model is latency-bound)
      'pallas_step_b64': PallasTuning(pallas='step', pallas_batch_rows=64),
      'pallas_step_b128': PallasTuning(pallas='step', pallas_batch_rows=128),
      'pallas_update_w4': PallasTuning(pallas='update', pallas_warps=4),
      'pallas_update_w16': PallasTuning(pallas='update', pallas_warps=16),
      'pallas_update_r64': PallasTuning(pallas='update', pallas_tile_rows=64),
      # scaled.py: L2's decay as a scalar per member (W = c·V), the update accumulated into
      # W by cuBLAS's backward GEMM (XLA's Triton GEMMs off in that program): no dW, no
      # update pass (benchmarks/scaled_update.py times the bare loops)
      'scaled': Tuning(scaled_decay=True),
  }


def peak_gflops(repeats: int) -> float:
  """This machine's float32 matmul throughput (NumPy/BLAS, 2048², best of repeats)."""
  import time
  import numpy as np
  a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - t0)
  return 2 * 2048**3 / best / 1e9



CIFAR_SHAPE = dict(num_train=49_000, num_val=1_000, num_test=1_000, dim=3072, classes=10)


def machine() -> dict:
  """What the numbers were measured on: CPU, cores, devices, library versions, BLAS, threads."""
  import jax
  info = {'python': sys.version.split()[0], 'platform': platform.platform(),
          'processor': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
          'jax_backend': jax.default_backend(),
          'devices': [f'{d.device_kind}' for d in jax.local_devices()],
          'threads_env': {k: os.environ.get(k) for k in (
              'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'XLA_FLAGS',
              'OPENBLAS_CORETYPE')}}
  try:
    with open('/proc/cpuinfo') as f:
      models = [l.split(':', 1)[1].strip() for l in f if l.startswith('model name')]
    info['cpu_model'] = models[0] if models else None
  except OSError:
    pass
  from importlib import metadata
  info['versions'] = {}
  for package in ('jax', 'jaxlib', 'optax', 'flax', 'numpy', 'scikit-learn', 'torch'):
    try:
      info['versions'][package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      pass
  try:
    import threadpoolctl
    info['blas'] = [{k: p.get(k) for k in ('internal_api', 'version', 'num_threads',
                                           'architecture')}
                    for p in threadpoolctl.threadpool_info()]
  except ImportError:
    info['blas'] = None
  return info


def chunk_runner(trainer, steps: int) -> Callable[[], None]:
  """A call that trains `steps` more steps with `trainer.run_chunk` (hinge_jax's real training
  path, from the state the previous call left) and waits for them: what the benchmarks time."""
  import jax
  holder = {'state': trainer.init()}

  def call():
    holder['state'], losses = trainer.run_chunk(holder['state'], 0, steps)
    jax.block_until_ready(losses)
  return call


def repeat(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
  """Times `fn()` `repeats` times after `warmup` calls; seconds as median, min, max, all."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return {'median': statistics.median(times), 'min': min(times), 'max': max(times),
          'times': times}


def interleaved(fns: dict, repeats: int, rounds: Optional[int] = None) -> dict:
  """Times each of `fns` (name → callable) `repeats` times in all, in `rounds` turns each
  (default: one timed call a turn, the finest mixing).

  Each round gives every function a turn: one untimed warm-up call, then its share of timed
  calls back to back (as a training loop calls them). The order rotates between rounds. A
  stretch of machine noise then falls on all of them alike instead of on whichever ran at
  that moment, and each turn starts warm: the previous library's worker threads (OpenBLAS
  and XLA's CPU pools busy-wait after a call) have been replaced by this one's. Returns
  name → `repeat`'s dict.
  """
  names = list(fns)
  rounds = max(1, min(rounds or repeats, repeats))
  per_turn = [repeats // rounds + (r < repeats % rounds) for r in range(rounds)]
  times = {name: [] for name in names}
  for r in range(rounds):
    for i in range(len(names)):
      name = names[(r + i) % len(names)]
      fns[name]()
      for _ in range(per_turn[r]):
        t0 = time.perf_counter()
        fns[name]()
        times[name].append(time.perf_counter() - t0)
  return {name: {'median': statistics.median(t), 'min': min(t), 'max': max(t), 'times': t}
          for name, t in times.items()}


def cifar_like_uint8(seed: int = 0, num_train: int = CIFAR_SHAPE['num_train']):
  """CIFAR-shaped synthetic data as CIFAR stores it: uint8 pixels, 10 class clusters."""
  rng = np.random.default_rng(seed)
  n = num_train + CIFAR_SHAPE['num_val'] + CIFAR_SHAPE['num_test']
  d, c = CIFAR_SHAPE['dim'], CIFAR_SHAPE['classes']
  y = rng.integers(0, c, n).astype(np.int32)
  centres = rng.integers(64, 192, (c, d)).astype(np.int16)
  x = np.clip(centres[y] + rng.integers(-48, 49, (n, d), dtype=np.int16), 0, 255).astype(np.uint8)
  cut1, cut2 = num_train, num_train + CIFAR_SHAPE['num_val']
  return ({'train': x[:cut1], 'val': x[cut1:cut2], 'test': x[cut2:]},
          {'train': y[:cut1], 'val': y[cut1:cut2], 'test': y[cut2:]})


def cifar_dataset(seed: int = 0, bias_trick: bool = True):
  """`(x, y, dataset)`: the raw uint8 splits and their hinge_jax Dataset (centred; with the
  bias trick by default, else the bias is a parameter of its own)."""
  from hinge_jax.datasets.base import finalize
  x, y = cifar_like_uint8(seed)
  dataset = finalize('cifar_like', {k: v for k, v in x.items()}, {k: v for k, v in y.items()},
                     num_classes=CIFAR_SHAPE['classes'], center=True, scale=1.0,
                     bias_trick=bias_trick)
  return x, y, dataset


def print_table(title: str, header: list[str], rows: list[list]) -> None:
  widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
  print(f'\n{title}')
  print('  '.join(str(h).rjust(w) for h, w in zip(header, widths)))
  for r in rows:
    print('  '.join(str(v).rjust(w) for v, w in zip(r, widths)))


def fmt(t: dict, unit: float = 1e3, digits: int = 1) -> str:
  """'median (min–max)' in ms by default."""
  return f'{t["median"] * unit:.{digits}f} ({t["min"] * unit:.{digits}f}–{t["max"] * unit:.{digits}f})'


def write_json(path: str, payload: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(payload, f, indent=2, default=float)
  os.replace(path + '.tmp', path)
  print(f'\nwrote {path}')
