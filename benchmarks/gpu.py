"""GPU checks and timings in one prepared run (issues #6 and #8), for a lent GPU machine.

  python benchmarks/gpu.py [--quick] [--out=FILE.json]

1. Correctness: the same run on the GPU and on the host CPU (both default precision, then the
   GPU at `precision='highest'`), and a sweep member against its single run on the GPU.
2. One epoch (245 steps of batch 200, one `lax.scan`) of one model, uint8 CIFAR-shaped data.
3. Sweep scaling, K = 1 … 1024 members sharing minibatches, and K = 1024 with own seeds:
   model-epochs per second.
4. One full-batch gradient step over 49,000 rows.
Each timing is the median of repeats after a warm-up call; FLOPs and bytes per step give the
achieved fraction of the card's matmul throughput (TF32 tensor cores: JAX's default float32
matmul precision on these cards) and memory bandwidth (peaks from the vendor's data sheets).
Targets (H200): one epoch ≤ 3 ms; ≥ 20,000 model-epochs/s at K = 1,024; full-batch ≤ 0.3 ms.
"""

import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_QUICK = flags.DEFINE_bool('quick', False, 'Fewer sizes and repeats.')
_OUT = flags.DEFINE_string('out', None, 'JSON output (default $OUT/gpu.json or '
                           'benchmarks/results/gpu.json).')

# Vendor peaks (SXM parts): HBM bandwidth, dense TF32 tensor-core FLOP/s, FP32 (CUDA cores).
PEAKS = {'H200': (4.8e12, 494.7e12, 66.9e12), 'H100': (3.35e12, 494.7e12, 66.9e12)}


def _peaks(kind: str):
  for name, values in PEAKS.items():
    if name in kind:
      return values
  return None


def main(argv):
  del argv
  import jax
  import numpy as np
  from benchmarks import common
  from hinge_jax.datasets.base import finalize
  quick = _QUICK.value
  device = jax.local_devices()[0]
  kind = device.device_kind
  peaks = _peaks(kind)
  print(f'device: {kind} ({jax.default_backend()}), jax {jax.__version__}', flush=True)
  report = {'device': kind, 'backend': jax.default_backend(), 'jax': jax.__version__}
  x, y, dataset = common.cifar_dataset()
  n, d, c, b = dataset.size('train'), dataset.num_features, 10, common.BATCH
  epoch_steps = n // b
  repeats = 3 if quick else 10

  def timed(trainer, steps):
    holder = {'state': trainer.init()}

    def call():
      holder['state'], losses = trainer.run_chunk(holder['state'], 0, steps)
      jax.block_until_ready(losses)
    return common.repeat(call, repeats)

  def fractions(seconds, member_steps, rows_per_step, k):
    flops = 4 * rows_per_step * d * c * member_steps
    data_bytes = rows_per_step * (d - 1) * (member_steps // k) + 3 * d * c * 4 * member_steps
    out = {'tflops': flops / seconds / 1e12, 'gb_per_s': data_bytes / seconds / 1e9}
    if peaks:
      out.update(bandwidth_fraction=data_bytes / seconds / peaks[0],
                 tf32_fraction=flops / seconds / peaks[1])
    return out

  def section(name, fn):
    print(f'\n== {name}', flush=True)
    try:
      report[name] = fn()
    except Exception as e:  # noqa: BLE001 - one failing section must not lose the others
      traceback.print_exc()
      report[name] = {'error': f'{type(e).__name__}: {e}'}

  def correctness():
    small = finalize('small', {s: v[:4000] if s == 'train' else v for s, v in x.items()},
                     {s: v[:4000] if s == 'train' else v for s, v in y.items()}, num_classes=10,
                     center=True, scale=1.0, bias_trick=True)
    out = {}

    def params(trainer):
      return np.asarray(trainer.fit(trainer.init()).params['W'])
    gpu = params(common.hinge_jax_trainer(small, 'multiclass_svm', 200))
    cpu = params(common.hinge_jax_trainer(small, 'multiclass_svm', 200,
                                          devices=jax.devices('cpu')[:1]))
    scale = np.abs(cpu).max()
    out['gpu_vs_cpu_max_abs_diff_rel'] = float(np.abs(gpu - cpu).max() / scale)
    with jax.default_matmul_precision('highest'):
      gpu_hi = params(common.hinge_jax_trainer(small, 'multiclass_svm', 200))
    out['gpu_highest_vs_cpu_max_abs_diff_rel'] = float(np.abs(gpu_hi - cpu).max() / scale)
    lrs = np.logspace(-8, -6, 8)
    many = params(common.hinge_jax_trainer(small, 'multiclass_svm', 200, learning_rates=lrs))
    worst = 0.0
    for k in (0, 3, 7):
      one = params(common.hinge_jax_trainer(small, 'multiclass_svm', 200,
                                            learning_rates=[lrs[k]]))[0]
      worst = max(worst, float(np.abs(many[k] - one).max() / np.abs(one).max()))
    out['sweep_member_vs_single_max_abs_diff_rel'] = worst
    print('  ' + ', '.join(f'{k}={v:.2e}' for k, v in out.items()))
    return out

  def epoch():
    out = {}
    for loss in ('multiclass_svm', 'softmax_cross_entropy'):
      t = timed(common.hinge_jax_trainer(dataset, loss, epoch_steps), epoch_steps)
      out[loss] = {'epoch_s': t, **fractions(t['median'], epoch_steps, b, 1)}
      print(f'  {loss}: one epoch ({epoch_steps} steps) {common.fmt(t, 1e3, 2)} ms '
            f'(target ≤ 3 ms); {out[loss]["tflops"]:.2f} TFLOP/s', flush=True)
    return out

  def sweep_scaling():
    rows = []
    ks = [1, 64, 1024] if quick else [1, 16, 64, 256, 1024]
    for k, own in [(k, False) for k in ks] + [(1024, True)]:
      seeds = list(range(k)) if own else None
      trainer = common.hinge_jax_trainer(dataset, 'multiclass_svm', epoch_steps,
                                         learning_rates=np.logspace(-8, -6, k), seeds=seeds)
      t = timed(trainer, epoch_steps)
      rate = k / t['median']
      row = {'k': k, 'own_minibatches': own, 'epoch_s': t, 'model_epochs_per_s': rate,
             **fractions(t['median'], epoch_steps * k, b, 1 if own else k)}
      rows.append(row)
      print(f'  K={k:5d}{" own seeds" if own else ""}: epoch {common.fmt(t, 1e3, 2)} ms, '
            f'{rate:,.0f} model-epochs/s, {row["tflops"]:.1f} TFLOP/s', flush=True)
      del trainer
    return rows

  def full_batch():
    out = {}
    for loss in ('multiclass_svm', 'softmax_cross_entropy'):
      t = timed(common.hinge_jax_trainer(dataset, loss, 1, batch=0), 1)
      out[loss] = {'step_s': t, **fractions(t['median'], 1, n, 1)}
      print(f'  {loss}: full-batch step {common.fmt(t, 1e3, 3)} ms (target ≤ 0.3 ms); '
            f'{out[loss]["tflops"]:.1f} TFLOP/s, {out[loss]["gb_per_s"]:.0f} GB/s', flush=True)
    return out

  def parts():
    """The full-batch step's pieces, timed alone (where its time goes)."""
    import jax.numpy as jnp
    xu = jax.device_put(x['train'])
    mu = jax.device_put(dataset.mean)
    xf = jax.block_until_ready((xu.astype(jnp.float32) - mu))
    w = jnp.zeros((c, d - 1), jnp.float32)  # (C, D), as hinge_jax stores W
    ds = jnp.ones((n, c), jnp.float32)
    out = {}
    for name, fn, args in (
        ('convert', lambda a: a.astype(jnp.float32) - mu, (xu,)),
        ('fwd_float', lambda a, w: a @ w.T, (xf, w)),
        ('fwd_uint8_fused', lambda a, w: (a.astype(jnp.float32) - mu) @ w.T, (xu, w)),
        ('bwd_dsT_x', lambda a, g: g.T @ a, (xf, ds)),
        ('bwd_xT_ds', lambda a, g: a.T @ g, (xf, ds)),
        ('bwd_uint8_fused', lambda a, g: g.T @ (a.astype(jnp.float32) - mu), (xu, ds))):
      f = jax.jit(fn)
      t = common.repeat(lambda: jax.block_until_ready(f(*args)), repeats)
      out[name] = t
      print(f'  {name}: {common.fmt(t, 1e3, 3)} ms', flush=True)
    return out

  section('correctness', correctness)
  section('epoch', epoch)
  section('sweep', sweep_scaling)
  section('fullbatch', full_batch)
  section('fullbatch_parts', parts)
  report['machine'] = common.machine()
  out = _OUT.value or (os.path.join(os.environ['OUT'], 'gpu.json') if os.environ.get('OUT')
                       else 'benchmarks/results/gpu.json')
  common.write_json(out, report)


if __name__ == '__main__':
  app.run(main)
