"""Where the GPU time of a training step goes: every kernel's measured time, from JAX's profiler.

  python benchmarks/gpu_profile.py [--out=FILE.json] [--calls=3] [--tunings=default,...]
                                   [--traces=DIR] [--noalignment] [--quick]

For the programs of issue #8's GPU targets (one epoch of one model, an epoch of K = 1,024
members, one full-batch step, and ten full-batch steps in one program as `Trainer.fit` runs
them), under each `--tunings` variant of `common.tuning_variants()` (by default: default,
and no_triton_gemm, cuBLAS for every matmul), it times the program (median of repeats,
untraced), counts its kernels and bytes a step in the optimized HLO (`hlo_kernels`), and
records `--calls` calls under `jax.profiler.trace`. From
the trace's GPU events it sums, per call, each kernel's time and the time the GPU ran any
kernel ("busy"); the untraced time minus the busy time is what the GPU spent idle, waiting
for the host. First, unless --noalignment, it times the step's two matmuls alone (kernel
time) for one model and for 1,024 members at 3,073 features and at 16-byte-aligned widths.

Complements `benchmarks/gpu.py`; run both in one device call. Off a GPU it runs, but the
CPU's trace has no GPU events, so its kernel times are empty.
"""

import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_OUT = flags.DEFINE_string('out', None, 'JSON output (default $OUT/gpu_profile.json or '
                           'benchmarks/results/gpu_profile.json).')
_CALLS = flags.DEFINE_integer('calls', 3, 'Calls recorded in each trace.')
_TRACES = flags.DEFINE_string('traces', None, 'Also keep each perfetto trace in this folder.')
_TUNINGS = flags.DEFINE_list('tunings', ['default', 'no_triton_gemm'],
                             'Variants of common.tuning_variants() to profile.')
_ALIGN = flags.DEFINE_bool('alignment', True, 'Also time the matmuls at aligned widths.')
_QUICK = flags.DEFINE_bool('quick', False, 'K = 16 instead of 1,024 (a smoke run, also on a CPU).')


def gpu_events(trace_dir: str) -> list:
  """The complete ('X') events on the GPU's streams of the perfetto trace under `trace_dir`."""
  paths = sorted(glob.glob(os.path.join(trace_dir, 'plugins', 'profile', '*',
                                        'perfetto_trace.json.gz')))
  if not paths:
    raise FileNotFoundError(f'no perfetto trace under {trace_dir}')
  with gzip.open(paths[-1]) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  names = {e['pid']: e['args']['name'] for e in events
           if e.get('ph') == 'M' and e.get('name') == 'process_name'}
  gpu = {pid for pid, name in names.items() if re.search(r'GPU|/device:', name)}
  return [e for e in events if e.get('ph') == 'X' and e.get('pid') in gpu
          and e.get('dur') is not None]


def summarize(events: list, calls: int, wall_s: float) -> dict:
  """Per call: busy time (union of kernel intervals), per-kernel time and count, top kernels."""
  intervals = sorted((e['ts'], e['ts'] + e['dur']) for e in events)
  busy, end = 0.0, float('-inf')
  for start, stop in intervals:
    if stop > end:
      busy += stop - max(start, end)
      end = stop
  per = collections.defaultdict(lambda: [0.0, 0])
  for e in events:
    per[e['name']][0] += e['dur']
    per[e['name']][1] += 1
  kernels = sorted(({'name': n, 'us_per_call': t / calls, 'launches_per_call': c / calls}
                    for n, (t, c) in per.items()), key=lambda k: -k['us_per_call'])
  return {'wall_us_per_call': wall_s / calls * 1e6, 'busy_us_per_call': busy / calls,
          'events_per_call': len(events) / calls, 'kernels': kernels}


def traced_kernels_us(fn, calls: int) -> tuple[float, list]:
  """GPU kernel time of one `fn()` call (µs, mean of `calls` traced calls) and its kernels."""
  import jax
  jax.block_until_ready(fn())
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(calls):
        jax.block_until_ready(fn())
    events = gpu_events(tmp)
  names = sorted({e['name'] for e in events})
  return sum(e['dur'] for e in events) / calls, names


def alignment(np, calls: int) -> dict:
  """The training step's two matmuls, for one model (10 rows of W) and for K = 1,024 members
  (10,240 rows), at the bias trick's width D = 3,073 and at widths whose rows are 16-byte
  aligned (3,072, 3,076, 3,080), default precision, timed as GPU kernel time."""
  import jax
  rng = np.random.default_rng(0)
  out = {}
  for rows in (10, 10240):
    for width in (3073, 3072, 3076, 3080):
      w = jax.device_put(rng.standard_normal((rows, width), dtype=np.float32))
      xb = jax.device_put(rng.standard_normal((200, width), dtype=np.float32))
      ds = jax.device_put(rng.standard_normal((rows, 200), dtype=np.float32))
      fwd = jax.jit(lambda w, x: w @ x.T)  # scores: W · Xᵀ
      bwd = jax.jit(lambda g, x: g @ x)  # gradient: dSᵀ · X
      for name, f, args in (('fwd', fwd, (w, xb)), ('bwd', bwd, (ds, xb))):
        us, kernels = traced_kernels_us(lambda: f(*args), calls)
        flops = 2 * rows * 200 * width
        tflops = flops / us / 1e6 if us else float('nan')  # no GPU events off a GPU
        out[f'{name}_rows{rows}_d{width}'] = {'us': us, 'tflops': tflops, 'kernels': kernels}
        print(f'  {name} W[{rows},{width}]: {us:8.1f} µs of kernels, {tflops:6.1f} TFLOP/s  '
              f'{", ".join(k[:60] for k in kernels)}', flush=True)
  return out


def main(argv):
  del argv
  import jax
  import numpy as np
  from benchmarks import common, hlo_kernels
  variants = common.tuning_variants()
  unknown = [name for name in _TUNINGS.value if name not in variants]
  if unknown:
    sys.exit(f'--tunings: unknown {", ".join(unknown)}; choose from {", ".join(variants)}')
  tunings = {name: variants[name] for name in _TUNINGS.value}
  out_path = _OUT.value or (os.path.join(os.environ['OUT'], 'gpu_profile.json')
                            if os.environ.get('OUT') else 'benchmarks/results/gpu_profile.json')
  calls = _CALLS.value
  device = jax.local_devices()[0]
  print(f'device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}',
        flush=True)
  report = {'device': device.device_kind, 'jax': jax.__version__, 'machine': common.machine()}
  x, y, dataset = common.cifar_dataset()
  steps = dataset.size('train') // common.BATCH
  k = 16 if _QUICK.value else 1024
  programs = {
      'epoch': lambda t: (common.hinge_jax_trainer(dataset, 'multiclass_svm', steps, tuning=t),
                          steps),
      f'sweep_{k}': lambda t: (common.hinge_jax_trainer(
          dataset, 'multiclass_svm', steps, learning_rates=np.logspace(-8, -6, k), tuning=t),
                               steps),
      'fullbatch': lambda t: (common.hinge_jax_trainer(dataset, 'multiclass_svm', 1, batch=0,
                                                       tuning=t), 1),
      # ten full-batch steps in one program, as `Trainer.fit` runs them between evaluations
      'fullbatch_x10': lambda t: (common.hinge_jax_trainer(dataset, 'multiclass_svm', 10,
                                                           batch=0, tuning=t), 10)}

  if _ALIGN.value:
    try:
      report['alignment'] = alignment(np, calls)
    except Exception as e:  # noqa: BLE001 - the programs' profiles must still run
      traceback.print_exc()
      report['alignment'] = {'error': f'{type(e).__name__}: {e}'}
    common.write_json(out_path, report)

  def profile(name, trainer, n, reps):
    call = common.chunk_runner(trainer, n)
    timing = common.repeat(call, reps)
    text = trainer.compiled_chunk(trainer.init(), n).as_text()
    summary = hlo_kernels.loop_summary(text, trainer.tuning.unroll(n))
    w = np.asarray(trainer.run_chunk(trainer.init(), 0, n)[0].params['W'])
    with tempfile.TemporaryDirectory() as tmp:
      t0 = time.perf_counter()
      with jax.profiler.trace(tmp, create_perfetto_trace=True):
        for _ in range(calls):
          call()
      wall = time.perf_counter() - t0
      prof = summarize(gpu_events(tmp), calls, wall)
      if _TRACES.value:
        os.makedirs(_TRACES.value, exist_ok=True)
        trace = glob.glob(os.path.join(tmp, 'plugins', 'profile', '*',
                                       'perfetto_trace.json.gz'))[-1]
        shutil.copy(trace, os.path.join(_TRACES.value, name.replace('/', '_') + '.json.gz'))
    print(f'\n== {name}: {common.fmt(timing, 1e3, 3)} ms a call; traced: '
          f'{prof["wall_us_per_call"]:.0f} µs wall, {prof["busy_us_per_call"]:.0f} µs GPU '
          f'busy, {prof["events_per_call"]:.0f} kernels a call '
          f'(HLO: {summary["kernels_per_step"]:.2f} a step)', flush=True)
    for kern in prof['kernels'][:12]:
      print(f'  {kern["us_per_call"]:9.1f} µs  ×{kern["launches_per_call"]:6.0f}  '
            f'{kern["name"][:90]}', flush=True)
    return {'time_s': timing, 'hlo': summary, 'profile': prof}, w

  for program, make in programs.items():
    reference = None
    for tname, tuning in tunings.items():
      name = f'{program}/{tname}'
      try:
        trainer, n = make(tuning)
        entry, w = profile(name, trainer, n, 5 if program.startswith('sweep') else 10)
        del trainer
        reference = w if reference is None else reference
        entry['w_max_abs_diff_rel'] = float(np.abs(w - reference).max() / np.abs(reference).max())
        report[name] = entry
      except Exception as e:  # noqa: BLE001 - one program must not lose the others
        traceback.print_exc()
        report[name] = {'error': f'{type(e).__name__}: {e}'}
      common.write_json(out_path, report)

if __name__ == '__main__':
  app.run(main)
