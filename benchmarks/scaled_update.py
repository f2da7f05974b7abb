"""K members' minibatch SGD with L2 when each W carries its decay as a scalar (W = c·V).

  python benchmarks/scaled_update.py [--quick] [--ks=...] [--steps=245] [--out=FILE.json]
  python benchmarks/scaled_update.py --card=h200 [--ks=1024]   # the compiled program only

An ablation for #8's K = 1,024 target (≥ 20,000 model-epochs/s on an H200), timed on bare
loops outside hinge_jax's trainer. A step of plain SGD with L2,
W ← (1 − 2·lr·λ)·W − lr·dSᵀX, is on the card a forward GEMM, a backward GEMM that writes dW
(131 MB at K = 1,024) and a pass that reads W and dW and writes W: 630 MB a step, the pass
alone a third of the step (benchmarks/reference/gpu_h200_tuning_profile.log). Carry each
member's decay as a scalar c (W = c·V, Pegasos's trick) and the step becomes
V ← V + α·dSᵀX with α = −lr/c′ and c′ = (1 − 2·lr·λ)·c: an accumulate that cuBLAS's GEMM does
in place (β = 1), which XLA's GEMM rewriter emits where XLA's Triton GEMMs are off. dW and
the separate pass are gone. The penalty λ‖W‖² = λc²‖V‖² of each step's loss then needs W
read once more ('scaled': a reduction over V) or not at all ('scaled_gram': ‖V‖² carried
from step to step, with ⟨V, dSᵀX⟩ = Σ dS ⊙ (XVᵀ) from the forward product and
‖dSᵀX‖² = Σ_c dS_cᵀ (XXᵀ) dS_c from the batch's 200 × 200 Gram matrix).

Variants (each one program: the epoch's `fori_loop`, unrolled 4 steps an iteration as
hinge_jax's GPU default; CIFAR-shaped uint8 data, batch 200, WW SVM, 3,073 features padded to
3,200, shared minibatches, lr from 1e-8 to 1e-6, λ = 2.5e4):
- `plain`: W's update as hinge_jax's XLA step writes it, XLA's default GEMMs;
- `plain_cublas`: the same with XLA's Triton GEMMs off (cuBLAS; what the autotuner picked
  at K = 1,024 on the H200 anyway);
- `scaled`, `scaled_gram`: W = c·V as above, Triton GEMMs off.
Each is checked against `plain`: the final W (c·V) and every step's loss, relative to their
largest magnitude. The table gives the epoch's median time (min–max), model-epochs/s, the
ratio to `plain` (same run) and, from the compiled program, kernels and bytes a step. It
decides whether the trick is worth a `train.Tuning` mode; it is not one yet. Where the
decay reaches 0 (2·lr·λ = 1) or c underflows the trick does not apply: `decay_floor` says
how small c gets in a chunk, for a caller to fall back before that.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

FLAGS = flags.FLAGS

VARIANTS = ('plain', 'plain_cublas', 'scaled', 'scaled_gram')
NO_TRITON_GEMM = {'xla_gpu_enable_triton_gemm': False}
FEATURES = 3200  # 3,072 pixels, zeros, the bias trick's 1 last (feature_multiple = 128)
UNROLL = 4


def decay_floor(lrs, lam: float, steps: int) -> float:
  """The smallest |c| any member reaches in `steps` steps: ∏ |1 − 2·lr·λ|."""
  import numpy as np
  return float(np.min(np.abs(1 - 2 * np.asarray(lrs, np.float64) * lam) ** steps))


def epoch_program(variant: str, steps: int, unroll: int = UNROLL):
  """`f(w0, x, y, mean, idx, lrs, lam) -> (W after `steps` steps, (steps, K) step losses)`:
  K members' SGD on the WW SVM with λ‖W‖² (bias included), minibatch t = rows `idx[t]` of
  the uint8 `x`, centred by `mean`; W as `(K, C, FEATURES)`. Not jitted."""
  import jax
  import jax.numpy as jnp
  from hinge_jax import losses
  if variant not in VARIANTS:
    raise ValueError(f'unknown variant {variant!r}; choose from {VARIANTS}')
  scaled = variant.startswith('scaled')
  svm = losses.get('multiclass_svm')

  def features(x, mean, rows):
    pixels = x[rows].astype(jnp.float32) - mean[None, :]
    b, d = pixels.shape
    return pixels, jnp.concatenate([pixels, jnp.zeros((b, FEATURES - d - 1), jnp.float32),
                                    jnp.ones((b, 1), jnp.float32)], axis=1)

  def data_loss_and_grad(scores, labels):
    # scores (K, C, B), as the GEMM W·Xᵀ writes them and hinge_jax's model.scores computes
    # them; the library's loss takes classes last
    def total(s):
      per_member = jnp.mean(svm(jnp.swapaxes(s, 1, 2), labels[None, :], margin=1.0), axis=1)
      return jnp.sum(per_member), per_member
    (_, per_member), ds = jax.value_and_grad(total, has_aux=True)(scores)
    return per_member, ds

  def run(w0, x, y, mean, idx, lrs, lam):
    k = w0.shape[0]
    decay = 1 - 2 * lrs * lam

    def body(t, carry):
      w, c, q, out = carry
      pixels, xb = features(x, mean, idx[t])
      yb = y[idx[t]]
      raw = jnp.einsum('kcd,bd->kcb', w, xb)
      if not scaled:
        data, ds = data_loss_and_grad(raw, yb)
        penalty = lam * jnp.sum(w * w, axis=(1, 2))
        w = decay[:, None, None] * w - lrs[:, None, None] * jnp.einsum('kcb,bd->kcd', ds, xb)
        return w, c, q, out.at[t].set(data + penalty)
      data, ds = data_loss_and_grad(c[:, None, None] * raw, yb)
      if variant == 'scaled':
        q = jnp.sum(w * w, axis=(1, 2))
      penalty = lam * c * c * q
      c_next = decay * c
      alpha = -lrs / c_next
      grad_v = jnp.einsum('kcb,bd->kcd', ds * alpha[:, None, None], xb)
      if variant == 'scaled_gram':
        # XXᵀ from the pixels (the zero features add nothing, the bias 1 adds 1): from X
        # itself, XLA's dot merger joins it to W·Xᵀ by copying W and X into one operand
        gram = pixels @ pixels.T + 1.0
        cross = jnp.sum(ds * raw, axis=(1, 2))  # ⟨V, dSᵀX⟩
        sq = jnp.sum(ds * jnp.einsum('kcb,bB->kcB', ds, gram), axis=(1, 2))  # ‖dSᵀX‖²
        q = q + 2 * alpha * cross + alpha * alpha * sq
      w = w + grad_v
      return w, c_next, q, out.at[t].set(data + penalty)

    ones = jnp.ones((k,), jnp.float32)
    q0 = jnp.sum(w0 * w0, axis=(1, 2))
    w, c, _, out = jax.lax.fori_loop(
        0, steps, body, (w0, ones, q0, jnp.zeros((steps, k), jnp.float32)), unroll=unroll)
    return (c[:, None, None] * w if scaled else w), out

  return run


def card_program(variant: str, k: int, steps: int, target: str = 'h200') -> str:
  """`variant`'s optimized HLO for K members and `steps` steps on CIFAR's shapes, compiled
  for the card `target` without one (`gpu_program.card_sharding`; its RuntimeError where
  JAX's CUDA plugin is missing). Triton GEMMs off except for `plain`, as `main` runs them."""
  import jax
  import jax.numpy as jnp
  from benchmarks import common, gpu_program
  on_card = gpu_program.card_sharding(target)
  n, d, c = common.CIFAR_SHAPE['num_train'], common.CIFAR_SHAPE['dim'], common.CIFAR_SHAPE[
      'classes']
  shapes = (((k, c, FEATURES), jnp.float32), ((n, d), jnp.uint8), ((n,), jnp.int32),
            ((d,), jnp.float32), ((steps, common.BATCH), jnp.int32), ((k,), jnp.float32),
            ((), jnp.float32))
  args = [jax.ShapeDtypeStruct(shape, dtype, sharding=on_card) for shape, dtype in shapes]
  options = NO_TRITON_GEMM if variant != 'plain' else None
  return jax.jit(epoch_program(variant, steps)).lower(*args).compile(
      compiler_options=options).as_text()


def print_card_table(target: str, ks) -> None:
  """Each variant's kernels and bytes a step in the program compiled for `target`."""
  from benchmarks import common, gpu_program, hlo_kernels
  bandwidth = gpu_program.CARDS[target]['bandwidth']
  rows = []
  for k in ks:
    for variant in VARIANTS:
      text = card_program(variant, k, 4 * UNROLL, target)
      summary = hlo_kernels.loop_summary(text, UNROLL)
      floor = summary['bytes_per_step'] / bandwidth
      rows.append([k, variant, f'{summary["kernels_per_step"]:.2f}',
                   f'{summary["bytes_per_step"] / 1e6:,.1f}', f'{floor * 1e6:,.1f}',
                   f'{k / (floor * 245):,.0f}'])
  common.print_table(f'{gpu_program.CARDS[target]["name"]}, compiled without a card: a step',
                     ['K', 'variant', 'kernels', 'MB', 'µs at full bandwidth',
                      'model-epochs/s cap'], rows)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  from benchmarks import common, hlo_kernels
  if FLAGS.card:
    try:
      print_card_table(FLAGS.card, [int(k) for k in FLAGS.ks or [1024]])
    except RuntimeError as e:
      sys.exit(str(e))
    return
  on_gpu = jax.default_backend() != 'cpu'
  quick = FLAGS.quick
  ks = [int(k) for k in (FLAGS.ks or ([1024] if on_gpu and not quick else [16]))]
  steps = 20 if quick else FLAGS.steps
  repeats = 2 if quick else FLAGS.repeats
  x, y, dataset = common.cifar_dataset()
  c = common.CIFAR_SHAPE['classes']
  n = x['train'].shape[0]
  device = jax.local_devices()[0]
  print(f'device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}; '
        f'{steps} steps, batch {common.BATCH}', flush=True)
  report = {'device': device.device_kind, 'jax': jax.__version__, 'steps': steps,
            'machine': common.machine(), 'rows': []}
  out_path = FLAGS.out or (os.path.join(os.environ['OUT'], 'scaled_update.json')
                            if os.environ.get('OUT') else 'benchmarks/results/scaled_update.json')
  xd, yd = jax.device_put(x['train']), jax.device_put(y['train'])
  mean = jax.device_put(np.asarray(dataset.mean, np.float32))
  idx = jax.device_put(np.random.default_rng(0).integers(0, n, (steps, common.BATCH),
                                                         dtype=np.int32))
  table = []
  for k in ks:
    lrs = np.logspace(-8, -6, k).astype(np.float32)
    floor = decay_floor(lrs, common.REG, steps)
    w0 = jax.device_put((np.random.default_rng(1).standard_normal((k, c, FEATURES)) * 1e-3
                         ).astype(np.float32))
    args = (w0, xd, yd, mean, idx, jax.device_put(lrs), jnp.float32(common.REG))
    ref = None
    for variant in VARIANTS:
      options = NO_TRITON_GEMM if (on_gpu and variant != 'plain') else None
      compiled = jax.jit(epoch_program(variant, steps)).lower(*args).compile(
          compiler_options=options)
      summary = hlo_kernels.loop_summary(compiled.as_text(), UNROLL)
      t = common.repeat(lambda: jax.block_until_ready(compiled(*args)), repeats)
      w, step_losses = (np.asarray(a) for a in compiled(*args))
      row = {'k': k, 'variant': variant, 'compiler_options': options, 'epoch_s': t,
             'model_epochs_per_s': k * steps * common.BATCH / n / t['median'],
             'kernels_per_step': summary['kernels_per_step'],
             'bytes_per_step': summary['bytes_per_step'], 'decay_floor': floor}
      if ref is None:
        ref = (w, step_losses, t['median'])
      row['w_max_abs_diff_rel'] = float(np.abs(w - ref[0]).max() / np.abs(ref[0]).max())
      row['loss_max_abs_diff_rel'] = float(np.abs(step_losses - ref[1]).max()
                                           / np.abs(ref[1]).max())
      row['over_plain'] = t['median'] / ref[2]
      report['rows'].append(row)
      table.append([k, variant, common.fmt(t, 1e3, 2), f'{row["model_epochs_per_s"]:,.0f}',
                    f'{row["over_plain"]:.3f}', f'{summary["kernels_per_step"]:.2f}',
                    f'{summary["bytes_per_step"] / 1e6:,.1f}',
                    f'{row["w_max_abs_diff_rel"]:.1e}', f'{row["loss_max_abs_diff_rel"]:.1e}'])
      print(f'  K={k} {variant}: {common.fmt(t, 1e3, 2)} ms', flush=True)
      common.write_json(out_path, report)
  common.print_table(
      f'{steps} steps of K members (W = c·V: the update in the GEMM; ratios within this run)',
      ['K', 'variant', 'ms (median, min–max)', 'model-epochs/s', '× plain', 'kernels/step',
       'MB/step', 'Δw', 'Δloss'], table)
  print('target (H200): ≥ 20,000 model-epochs/s at K = 1,024')


if __name__ == '__main__':  # flags here: the module's functions import beside gpu_program's
  flags.DEFINE_bool('quick', False, 'K = 16, 20 steps, 2 repeats (a smoke run).')
  flags.DEFINE_list('ks', None, 'Member counts (default 1024 on a GPU, 16 on the CPU).')
  flags.DEFINE_integer('steps', 245, 'Steps a timed call (245: an epoch).')
  flags.DEFINE_integer('repeats', 10, 'Timed repeats a variant.')
  flags.DEFINE_enum('card', None, ['h100', 'h200'], 'Only list each variant\'s kernels and '
                    'bytes a step, compiled for this card without one (needs the CUDA plugin: '
                    'benchmarks/gpu_program.py).')
  flags.DEFINE_string('out', None, 'JSON output (default $OUT/scaled_update.json or '
                      'benchmarks/results/scaled_update.json).')
  if any(a.startswith('--card') for a in sys.argv[1:]):  # as gpu_program.py: no card, no driver
    os.environ.setdefault('CUDA_VISIBLE_DEVICES', '-1')
    os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')
  app.run(main)
