"""GPU checks and timings in one prepared run (issues #6 and #8), for a lent GPU machine.

  python benchmarks/gpu.py [--quick] [--out=FILE.json]

1. Correctness: the same run on the GPU and on the host CPU (both default precision, then the
   GPU at `precision='highest'`), a sweep member against its single run on the GPU, and the
   full-batch objective and gradient against float64 NumPy.
2. Fused: `pallas/fused.py`'s modes against XLA's step (`PallasTuning(pallas=...)`): 'step' (two
   kernels a step) at K = 1, 4, 16, 64 and 'update' (the backward product and the update in
   one kernel) at K = 1 … 1,024, one epoch of members sharing minibatches, both losses at
   K = 1, with the weights' difference from XLA's (run early; Pallas is outside the
   package since it never won); and `scaled.py`'s W = c·V (`Tuning(scaled_decay=True)`: the update
   inside cuBLAS's backward GEMM) at every K.
3. Tuning (run early, so that a run cut short keeps it): the epoch, K = 1,024 and the
   full-batch step under `tuning.Tuning` variants (the per-step guard against the deferred
   one; the features' zero padding to a multiple of 1 (none), 8, 64, 128 (the default) or
   256; loop unrolling, XLA command buffers for the whole loop, cuBLAS rather than Triton
   matmuls; the full batch's formulation), each checked
   against the default variant's weights; the optimized program of each epoch variant is
   written to `hlo/` beside the JSON, with its kernel counts in the JSON.
4. One epoch (245 steps of batch 200, one `lax.scan`) of one model, uint8 CIFAR-shaped data.
5. Sweep scaling, K = 1 … 1024 members sharing minibatches, and K = 1024 with own seeds:
   model-epochs per second.
6. One full-batch gradient step over 49,000 rows, alone and per step in a program of ten, and
   its pieces (matmuls, conversion) timed alone in several formulations.
7. The bias as a parameter of its own (3,072 features, aligned as they are) against the bias
   trick's column (3,073 features, padded to 3,200 by default), at K = 1 and 1,024.
The JSON is rewritten after every section, so a run cut short keeps what it measured.
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
SECTIONS = ('correctness', 'fused', 'tuning', 'epoch', 'sweep', 'fullbatch', 'fullbatch_parts',
            'bias_column')  # in the order they run
_SECTIONS = flags.DEFINE_list('sections', None, 'Run only these sections (default: all): '
                              + ', '.join(SECTIONS) + '.')
_FUSED_KS = flags.DEFINE_list('fused_ks', None, 'The fused section\'s member counts (default: '
                              '1, 1024, 4, 16, 64, 256; --quick: 1, 16), in that order.')
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
  unknown = [s for s in _SECTIONS.value or () if s not in SECTIONS]
  if unknown:
    sys.exit(f'--sections: unknown {", ".join(unknown)}; choose from {", ".join(SECTIONS)}')
  if not all(k.isdigit() and int(k) > 0 for k in _FUSED_KS.value or ()):
    sys.exit(f'--fused_ks={",".join(_FUSED_KS.value)}: give positive member counts, e.g. 1,1024')
  import jax
  import numpy as np
  from benchmarks import common, hlo_kernels
  from hinge_jax.datasets.base import finalize
  quick = _QUICK.value
  tunings = common.tuning_variants()
  device = jax.local_devices()[0]
  kind = device.device_kind
  peaks = _peaks(kind)
  print(f'device: {kind} ({jax.default_backend()}), jax {jax.__version__}', flush=True)
  report = {'device': kind, 'backend': jax.default_backend(), 'jax': jax.__version__,
             'machine': common.machine()}
  x, y, dataset = common.cifar_dataset()
  n, d, c, b = dataset.size('train'), dataset.num_features, 10, common.BATCH
  epoch_steps = n // b
  repeats = 3 if quick else 10

  def timed(trainer, steps):
    return common.repeat(common.chunk_runner(trainer, steps), repeats)

  def fractions(seconds, member_steps, rows_per_step, k):
    flops = 4 * rows_per_step * d * c * member_steps
    data_bytes = rows_per_step * (d - 1) * (member_steps // k) + 3 * d * c * 4 * member_steps
    out = {'tflops': flops / seconds / 1e12, 'gb_per_s': data_bytes / seconds / 1e9}
    if peaks:
      out.update(bandwidth_fraction=data_bytes / seconds / peaks[0],
                 tf32_fraction=flops / seconds / peaks[1])
    return out

  out_path = _OUT.value or (os.path.join(os.environ['OUT'], 'gpu.json') if os.environ.get('OUT')
                            else 'benchmarks/results/gpu.json')

  def section(name, fn):
    if _SECTIONS.value and name not in _SECTIONS.value:
      return
    print(f'\n== {name}', flush=True)
    t0 = time.perf_counter()
    try:
      report[name] = fn()
    except Exception as e:  # noqa: BLE001 - one failing section must not lose the others
      traceback.print_exc()
      report[name] = {'error': f'{type(e).__name__}: {e}'}
    report.setdefault('section_wall_s', {})[name] = time.perf_counter() - t0
    common.write_json(out_path, report)

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
    # The full-batch objective and gradient (on a GPU: raw pixels and bfloat16 halves, see
    # fullbatch.py) against float64 NumPy from the textbook formulas.
    import jax.numpy as jnp
    from benchmarks import baselines
    from hinge_jax import fullbatch
    fb = common.hinge_jax_trainer(small, 'multiclass_svm', 1, batch=0)
    w0 = (np.random.default_rng(2).standard_normal((c, d)) * 1e-3).astype(np.float32)
    blocks_x, blocks_y = fullbatch.blocks(fb.data, fb.spec.num_train)
    value, grads = jax.value_and_grad(fullbatch.make_objective(spec=fb.spec))(
        {'W': jnp.asarray(w0)}, blocks_x, blocks_y, jax.tree.map(lambda a: a[0], fb.hp))
    features = baselines.numpy_features(x['train'][:4000], np.asarray(small.mean)).astype(
        np.float64)
    want_value, want_grad = baselines.svm_loss_grad(w0.T.astype(np.float64), features,
                                                    y['train'][:4000], common.REG)
    out['fullbatch_value_vs_numpy64_rel'] = float(abs(float(value) - want_value) / want_value)
    out['fullbatch_grad_vs_numpy64_max_abs_diff_rel'] = float(
        np.abs(np.asarray(grads['W'], np.float64) - want_grad.T).max() / np.abs(want_grad).max())
    out['fullbatch_x_dtype'] = str(fb.data.x['train'].dtype)
    print('  ' + ', '.join(f'{k}={v:.2e}' if isinstance(v, float) else f'{k}={v}'
                           for k, v in out.items()))
    return out

  def fused_step():
    """An epoch under fused.py's Pallas modes and under XLA's step, side by side.

    The two targets' cases run first (one model, then K = 1,024), so that a run cut short by
    the device's time limit keeps them; the JSON is rewritten after each case. Δw is the
    largest weight difference from XLA's step relative to its largest weight, over all
    members and over the members of lr ≤ 1e-7 alone (at larger rates this data's SGD is
    chaotic: a 1e-6 change of W0 moves the final W by tens of percent, so Δw over them
    measures the chaos, not the kernel)."""
    from hinge_jax.train import Tuning
    out = report['fused'] = {}
    ks = [int(k) for k in _FUSED_KS.value] if _FUSED_KS.value else (
        [1, 16] if quick else [1, 1024, 4, 16, 64, 256])
    cases = [('multiclass_svm', k) for k in ks]
    if 1 in ks:  # softmax's one model right after the two targets' cases
      after = max(ks.index(1), ks.index(1024) if 1024 in ks else -1)
      cases.insert(after + 1, ('softmax_cross_entropy', 1))
    for loss, k in cases:
      lrs = np.logspace(-8, -6, k) if k > 1 else np.array([common.LR])
      calm = lrs <= common.LR * (1 + 1e-6)  # the members of lr ≤ 1e-7 (logspace rounds)
      modes = (['xla'] + (['pallas_step'] if k <= 64 else [])
               + ['pallas_update', 'scaled']
               + (['pallas_step_w8', 'pallas_step_b64', 'pallas_step_b128'] if k == 1 else [])
               + (['pallas_update_w4', 'pallas_update_w16', 'pallas_update_r64']
                  if k == 1024 else []))
      row, ref = {}, None
      out[f'{loss}_k{k}'] = row
      for name in modes:
        try:
          trainer = common.hinge_jax_trainer(dataset, loss, epoch_steps, learning_rates=lrs,
                                             tuning=tunings[name])
          t = timed(trainer, epoch_steps)
          w = np.asarray(trainer.run_chunk(trainer.init(), 0, epoch_steps)[0].params['W'])
          w = w.reshape((k,) + w.shape[-2:])
          if 'default_is' not in row:  # what Tuning() picks: the same for every mode
            row['default_is'] = ('scaled' if Tuning().for_members(trainer.spec, k).scaled_decay
                                 else 'xla')
          del trainer
        except Exception as e:  # noqa: BLE001 - a kernel that fails must not end the section
          row[name] = {'error': f'{type(e).__name__}: {e}'}
          print(f'  {loss} K={k} {name}: {row[name]["error"][:300]}', flush=True)
          common.write_json(out_path, report)
          continue
        row[name] = {'epoch_s': t, 'model_epochs_per_s': k / t['median']}
        if name == 'xla':
          ref = w
        elif ref is not None:
          row[name]['w_max_abs_diff_rel'] = float(np.abs(w - ref).max() / np.abs(ref).max())
          row[name]['w_max_abs_diff_rel_lr_le_1e-7'] = float(
              np.abs(w[calm] - ref[calm]).max() / np.abs(ref[calm]).max())
          row[name]['over_xla'] = t['median'] / row['xla']['epoch_s']['median']
        print(f'  {loss} K={k:4d} {name}: epoch {common.fmt(t, 1e3, 2)} ms, '
              f'{k / t["median"]:,.0f} model-epochs/s'
              + (f', {row[name]["over_xla"]:.2f}× XLA\'s, '
                 f'Δw {row[name]["w_max_abs_diff_rel"]:.1e} '
                 f'(lr ≤ 1e-7: {row[name]["w_max_abs_diff_rel_lr_le_1e-7"]:.1e})'
                 if 'over_xla' in row[name] else '')
              + ' (targets: ≤ 3 ms at K = 1; ≥ 20,000 at K = 1,024)', flush=True)
        common.write_json(out_path, report)
      print(f'  {loss} K={k:4d}: Tuning() trains it as {row.get("default_is")}', flush=True)
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
    ks = [1, 64] if quick else [1, 16, 64, 256, 1024]  # quick: a smoke run, also on a CPU
    for k, own in [(k, False) for k in ks] + [(ks[-1], True)]:
      seeds = list(range(k)) if own else None
      trainer = common.hinge_jax_trainer(dataset, 'multiclass_svm', epoch_steps,
                                         learning_rates=np.logspace(-8, -6, k), seeds=seeds)
      t = timed(trainer, epoch_steps)
      rate = k / t['median']
      row = {'k': k, 'own_minibatches': own, 'epoch_s': t, 'model_epochs_per_s': rate,
             'scaled_decay': bool(trainer.tuning.scaled_mode(trainer.spec, 'deferred')),
             **fractions(t['median'], epoch_steps * k, b, 1 if own else k)}
      rows.append(row)
      print(f'  K={k:5d}{" own seeds" if own else ""}'
            f'{" (W = c·V)" if row["scaled_decay"] else ""}: epoch {common.fmt(t, 1e3, 2)} ms, '
            f'{rate:,.0f} model-epochs/s, {row["tflops"]:.1f} TFLOP/s', flush=True)
      del trainer
    return rows

  def full_batch():
    """One step alone (a program of one step: its launch from the host is in the time), and
    per step in a program of ten (as `Trainer.fit` runs full-batch steps between evaluations)."""
    out = {}
    for loss in ('multiclass_svm', 'softmax_cross_entropy'):
      t = timed(common.hinge_jax_trainer(dataset, loss, 1, batch=0), 1)
      t10 = timed(common.hinge_jax_trainer(dataset, loss, 10, batch=0), 10)
      per = {key: (v / 10 if key != 'times' else [u / 10 for u in v]) for key, v in t10.items()}
      out[loss] = {'step_s': t, **fractions(t['median'], 1, n, 1), 'in_chunk_of_10': {
          'step_s': per, **fractions(per['median'], 1, n, 1)}}
      print(f'  {loss}: full-batch step {common.fmt(t, 1e3, 3)} ms alone, '
            f'{common.fmt(per, 1e3, 3)} ms a step in a program of 10 (target ≤ 0.3 ms); '
            f'{out[loss]["in_chunk_of_10"]["tflops"]:.1f} TFLOP/s, '
            f'{out[loss]["in_chunk_of_10"]["gb_per_s"]:.0f} GB/s in 10', flush=True)
    return out

  def parts():
    """The full-batch step's pieces, timed alone in several formulations (where its time goes,
    and what a faster formulation costs in accuracy: each output against float64 NumPy)."""
    import jax.numpy as jnp
    from hinge_jax import fullbatch
    xu = jax.device_put(x['train'])
    mu = jax.device_put(dataset.mean)
    xf = jax.block_until_ready((xu.astype(jnp.float32) - mu))
    rng = np.random.default_rng(0)
    w_np = (rng.standard_normal((c, d - 1)) * 1e-3).astype(np.float32)  # (C, D), as W is stored
    ds_np = rng.standard_normal((n, c)).astype(np.float32)
    w, ds = jax.device_put(w_np), jax.device_put(ds_np)
    centred = x['train'].astype(np.float64) - dataset.mean.astype(np.float64)
    want = {'conv': centred, 'fwd': centred @ w_np.T.astype(np.float64),
            'bwd': ds_np.T.astype(np.float64) @ centred}
    want['bwdT'] = want['bwd'].T
    del centred
    f32 = jnp.float32
    out = {}
    for name, ref, fn, args in (
        ('convert', 'conv', lambda a: a.astype(f32) - mu, (xu,)),
        ('fwd_float', 'fwd', lambda a, w: a @ w.T, (xf, w)),
        ('fwd_uint8_fused', 'fwd', lambda a, w: (a.astype(f32) - mu) @ w.T, (xu, w)),
        ('bwd_dsT_x', 'bwd', lambda a, g: g.T @ a, (xf, ds)),
        ('bwd_xT_ds', 'bwdT', lambda a, g: a.T @ g, (xf, ds)),
        ('bwd_uint8_fused', 'bwd', lambda a, g: g.T @ (a.astype(f32) - mu), (xu, ds)),
        # the same products as reductions (XLA's reduction emitters read the uint8 once)
        ('fwd_uint8_reduce', 'fwd', lambda a, w: (a.astype(f32)[:, None, :] * w).sum(-1)
         - w @ mu, (xu, w)),
        ('bwd_uint8_reduce', 'bwd', lambda a, g: (g[:, :, None] * a.astype(f32)[:, None, :]
                                                  ).sum(0) - g.sum(0)[:, None] * mu, (xu, ds)),
        # as hinge_jax's full batch on an accelerator (fullbatch.py): raw pixels exact in bf16,
        # the float32 side as hi + lo bf16 halves, float32 accumulation
        ('fwd_uint8_bf16x2', 'fwd', lambda a, w: fullbatch.times_split(
            a.astype(jnp.bfloat16), fullbatch.split_bf16(w.T), rhs=True)
         - jnp.matmul(w, mu, precision='highest'), (xu, w)),
        ('bwd_uint8_bf16x2', 'bwd', lambda a, g: fullbatch.times_split(
            a.astype(jnp.bfloat16), fullbatch.split_bf16(g.T), rhs=False)
         - g.sum(0)[:, None] * mu, (xu, ds))):
      for variant, options in (('', None), ('+triton_gemm_any', {'xla_gpu_triton_gemm_any': True})):
        if variant and ('fused' not in name and 'bf16' not in name):
          continue
        f = jax.jit(fn).lower(*args).compile(compiler_options=options)
        t = common.repeat(lambda: jax.block_until_ready(f(*args)), repeats)
        got = np.asarray(f(*args), np.float64)
        err = float(np.abs(got - want[ref]).max() / np.abs(want[ref]).max())
        out[name + variant] = {**t, 'max_abs_err_rel': err}
        print(f'  {name + variant}: {common.fmt(t, 1e3, 3)} ms, error {err:.1e}', flush=True)
    return out

  def tuning():
    """The epoch (K = 1), K = 1,024 and the full-batch step under `Tuning` variants."""
    hlo_dir = os.path.join(os.path.dirname(os.path.abspath(out_path)), 'hlo')
    os.makedirs(hlo_dir, exist_ok=True)
    out = {'epoch': {}, 'sweep_1024': {}, 'fullbatch': {}}

    def measure(trainer, steps, reps):
      t = common.repeat(common.chunk_runner(trainer, steps), reps)
      final = trainer.run_chunk(trainer.init(), 0, steps)[0]
      return t, np.asarray(final.params['W'])

    def row(variant, trainer, steps, reps, reference, hlo_name=None):
      t, w = measure(trainer, steps, reps)
      entry = {'time_s': t}
      if reference is not None:
        entry['w_max_abs_diff_rel'] = float(np.abs(w - reference).max() / np.abs(reference).max())
      if hlo_name:
        text = trainer.compiled_chunk(trainer.init(), steps).as_text()
        with open(os.path.join(hlo_dir, f'{hlo_name}_{variant}.txt'), 'w') as f:
          f.write(text)
        entry['kernels'] = hlo_kernels.loop_summary(
            text, trainer.tuning.unroll(steps), block=trainer.tuning.loop_block(trainer.spec))
      return entry, w

    def variants(group, names, make_trainer, steps, reps, hlo_name, describe, members=None):
      """Times each variant; the first is the reference the others' weights are checked on.
      With `members`, each entry also gets its model-epochs per second (a chunk is an epoch)."""
      reference = None
      for variant in names:
        try:
          trainer = make_trainer(tunings[variant])
          entry, w = row(variant, trainer, steps, reps, reference, hlo_name)
          del trainer
        except Exception as e:  # noqa: BLE001 - a variant XLA refuses must not end the section
          out[group][variant] = {'error': f'{type(e).__name__}: {e}'}
          print(f'  {group} {variant}: {out[group][variant]["error"][:200]}', flush=True)
          continue
        reference = w if reference is None else reference
        if members:
          entry['model_epochs_per_s'] = members / entry['time_s']['median']
        out[group][variant] = entry
        kernels = (f'{entry["kernels"]["kernels_per_step"]:.2f} kernels and '
                   f'{entry["kernels"]["bytes_per_step"] / 1e6:.1f} MB a step, '
                   if 'kernels' in entry else '')
        print(f'  {group} {variant}: {common.fmt(entry["time_s"], 1e3, 3)} ms '
              f'{describe(entry)}, {kernels}Δw {entry.get("w_max_abs_diff_rel", 0.0):.1e}',
              flush=True)

    # the variants still in question (earlier runs timed the rest: unrolling by 1, the cond
    # guard, command buffers with them, Triton for any GEMM and cuBLASLt were no faster; see
    # the README): the per-step guard against the deferred default, the features' padding
    epoch_names = [v for v in ('default', 'pallas_step', 'select', 'pad1', 'pad8', 'pad64',
                               'pad256', 'cmdbuf',
                               'unroll16', 'no_triton_gemm')
                   if not quick or v in ('default', 'pallas_step', 'pad1')]
    variants('epoch', epoch_names,
             lambda t: common.hinge_jax_trainer(dataset, 'multiclass_svm', epoch_steps, tuning=t),
             epoch_steps, repeats, 'epoch',
             lambda e: f'({e["time_s"]["median"] / epoch_steps * 1e6:.1f} µs a step)')
    k = 16 if quick else 1024

    variants('sweep_1024', ('xla', 'default', 'pallas_update', 'scaled', 'select', 'pad1',
                            'pad8', 'pad64', 'pad256', 'cmdbuf'),
             lambda t: common.hinge_jax_trainer(dataset, 'multiclass_svm', epoch_steps,
                                                learning_rates=np.logspace(-8, -6, k), tuning=t),
             epoch_steps, max(3, repeats // 2), None,
             lambda e: f'(K = {k}: {e["model_epochs_per_s"]:,.0f} model-epochs/s)', members=k)
    variants('fullbatch', ('default', 'deferred', 'fullbatch_f32', 'triton_gemm_any'),
             lambda t: common.hinge_jax_trainer(dataset, 'multiclass_svm', 1, batch=0, tuning=t),
             1, repeats, 'fullbatch', lambda e: '(one step)')
    return out

  def bias_column():
    """The epoch (K = 1) and K = 1,024 with the bias as a parameter of its own (W of 3,072
    features, aligned as they are) against the bias trick's 3,073rd column, the same model.
    Timed alone, the K = 1,024 products at 3,073 features ran on cuBLAS's unaligned kernels,
    2.4× slower than at 3,072 (gpu_profile.py's widths experiment); the training step now
    pads them (`Tuning.feature_multiple`)."""
    _, _, plain = common.cifar_dataset(bias_trick=False)
    out = {}
    for k in (1, 16 if quick else 1024):
      for name, data in (('bias_trick', dataset), ('bias_parameter', plain)):
        trainer = common.hinge_jax_trainer(data, 'multiclass_svm', epoch_steps,
                                           learning_rates=np.logspace(-8, -6, k))
        t = timed(trainer, epoch_steps)
        out[f'k{k}_{name}'] = {'epoch_s': t, 'model_epochs_per_s': k / t['median']}
        print(f'  K={k:5d} {name}: epoch {common.fmt(t, 1e3, 2)} ms, '
              f'{k / t["median"]:,.0f} model-epochs/s', flush=True)
        del trainer
    return out

  # The tuning table goes second: it holds the default of each target next to its variants, so a
  # run cut short by the device's time limit still has what decides the defaults.
  section('correctness', correctness)
  section('fused', fused_step)
  section('tuning', tuning)
  section('epoch', epoch)
  section('sweep', sweep_scaling)
  section('fullbatch', full_batch)
  section('fullbatch_parts', parts)
  section('bias_column', bias_column)


if __name__ == '__main__':
  app.run(main)
