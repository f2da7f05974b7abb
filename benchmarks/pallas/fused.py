"""Minibatch SGD with hand-written kernels (Pallas, Triton on a GPU): `PallasTuning.pallas`.

A study kept beside its benchmark records, outside the package: on the H200 it was timed on,
neither mode beat XLA's step at any member count (benchmarks/reference/gpu_h200_fused*.json,
docs/performance.md). `benchmarks/pallas/trainer.py` plugs it into `hinge_jax.train.Trainer`;
its tests run in Pallas's interpreter on the CPU, out of the default run:

    python -m pytest benchmarks/pallas

XLA compiles one minibatch SGD step of a CIFAR-sized model into about 11 kernels (the gather
and conversion of the batch, a split-K forward product and its reduction, the loss and its
gradient in several small reductions, the backward product, the update). Two regimes leave
time on the table (benchmarks/gpu_profile.py, an H200):
- one model: each kernel runs about 1.7 µs, launch-bound, so an epoch takes 5.5 ms however
  small the math;
- 1,024 members: XLA writes dW (131 MB) and reads it back in a separate update pass over W.

Mode 'step' (`step_chunk`), for one or a few members: a step is two kernels.
1. `scores`: grid (members, row blocks, feature splits). Each program gathers its rows of
   the minibatch straight from the stored training split (uint8 stays uint8 in memory),
   centres and scales them, and multiplies them with its share of W: partial scores
   `(K, splits, B_pad, C_pad)`.
2. `update`: grid (members, feature blocks). Each program sums the partial scores, computes
   the loss and its gradient with respect to the scores (hand-derived for the WW SVM and
   softmax, checked against `jax.grad` in tests/test_fused.py), gathers its feature block
   of the minibatch again, multiplies, adds the regularizer's gradient and writes W's block
   updated in place. It also writes the block's share of the penalty and (block 0) the data
   loss, into a `(steps, K, blocks + 1)` buffer summed into the step losses after the loop,
   in a fixed order (no atomics: the same seed gives the same bits).
The chunk runs as a `fori_loop` whose body is these calls; indices, labels and learning
rates for the whole chunk are computed before it. Inside, W is padded to `C_pad` classes
(zero rows, masked out of the loss) and `D_pad` features (zero columns after the pixels, the
bias trick's 1 last, as `Tuning.feature_multiple` lays them out).

Mode 'update' (`update_chunk`), for many members: XLA computes the features, the forward
product and the loss's gradient (any loss); one kernel, tile by tile of W (members ×
classes, features), computes dW = dSᵀx and writes W − lr·(dW + λ∇R(W)) in place, with each
row's penalty: dW never reaches memory.

Scope (`applies`): strategy `sgd` with the plain `sgd` optimizer (any schedule), shared
minibatches, the bias trick, regularizer none, l2, l1 or elastic net, no max-norm, the
deferred guard; 'step' also needs the WW SVM (squared or not) or softmax. Elsewhere `train`
runs its XLA step. On the CPU the kernels run in Pallas's interpreter (tests only: slow).
It is the same model, but not the same bits as the XLA step: sums group differently.

Measured on an H200 (benchmarks/gpu.py's `fused` section, jax 0.11.2), neither mode beats
XLA's step, so `Tuning.pallas` stays off by default: one model's epoch took 7.28 ms under
'step' (its two kernels 10 and 14 µs a step: latency-bound programs on a fifth of the SMs)
against XLA's 5.66 ms, and 6.23 ms under 'update'; 1,024 members 110.6 ms under 'update'
(its kernel 342 µs a step, against XLA's backward GEMM and update pass, 69 + 99 µs) against
67.8 ms.

On a GPU the kernels compile through Pallas's Triton backend, which JAX 0.11 deprecates (to
be removed in a later version: the Pallas changelog). Where a JAX lacks it, a chunk asked to
run them stops with a one-line error that names `Tuning(pallas=None)`; XLA's step, the
default, needs no Pallas at all.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hinge_jax import errors, losses, model
from hinge_jax.scaled import chunk_draws, finish_chunk
from hinge_jax.state import pad_features, unpad_features

Array = jax.Array

ROWS = 32  # minibatch rows a program handles at a time
BATCH_ROWS = (16, 32, 64, 128)  # minibatch rows a kernel's loop may take an iteration
COLS = 128  # features a program handles at a time (W's padded width is a multiple)
MAX_SPLITS = 8  # the forward product's feature splits (programs per row block)
LOSSES = ('multiclass_svm', 'softmax_cross_entropy')
REGULARIZERS = ('none', 'l2', 'l1', 'elastic_net')
MODES = ('step', 'update')  # see the module's docstring
# Triton's warps per program where `PallasTuning.pallas_warps` is None. From `ptxas -v` on
# the kernels compiled for an H100/H200 (sm_90a; benchmarks/gpu_program.py --tuning=...):
# 'step' at 4 warps uses 127-128 registers a thread, no spills (1 warp spills); 'update's
# 128 × 128 tile at 4 warps needs 255 registers and spills 1.4 KB a thread (its accumulator
# and W's tile are both 64 KB), at 8 warps 251 registers and no spills.
WARPS = {'step': 4, 'update': 8}
WARP_CHOICES = (1, 2, 4, 8, 16)  # what `PallasTuning.pallas_warps` takes


def applies(spec, guard: str, mode: str = 'step') -> bool:
  """Whether `mode`'s chunk can train `spec` (see the module's docstring): plain minibatch SGD
  sharing its minibatches under the deferred guard, the bias trick, no max-norm, a
  regularizer in `REGULARIZERS`; 'step' also needs a loss in `LOSSES` ('update' takes any:
  XLA differentiates it)."""
  if mode not in MODES:
    raise ValueError(f'unknown Pallas mode {mode!r}; choose from {MODES}')
  return (spec.strategy == 'sgd' and spec.optimizer == 'sgd' and not spec.full_batch
          and spec.shared_data and spec.bias_trick and not spec.max_norm
          and spec.reg in REGULARIZERS and guard == 'deferred'
          and (mode == 'update' or spec.loss in LOSSES))


def _pow2(n: int, least: int = 16) -> int:
  return max(least, 1 << max(n - 1, 0).bit_length())


def layout(spec, batch_rows: int = ROWS) -> dict:
  """The padded shapes: classes `c_pad`, rows `b_pad` (a multiple of ROWS and of the update
  kernel's `batch_rows`), features `d_pad` (a multiple of COLS), feature blocks `blocks` and
  forward splits `splits` (a divisor of `blocks`)."""
  blocks = -(-spec.num_features // COLS)
  splits = max(s for s in range(1, MAX_SPLITS + 1) if blocks % s == 0)
  rows = max(ROWS, batch_rows)
  return dict(c_pad=_pow2(spec.num_classes), b_pad=-(-spec.batch_size // rows) * rows,
              d_pad=blocks * COLS, blocks=blocks, splits=splits)


def step_bytes(spec, num_members: int, itemsize: int, batch_rows: int = ROWS) -> int:
  """Bytes a step moves through memory at least once: the minibatch's rows of the stored
  split read by both kernels (`itemsize` bytes a pixel), W read twice and written once, the
  partial scores written and read. (An HLO listing counts a Pallas kernel's operands whole:
  the training split.)"""
  lay = layout(spec, batch_rows)
  w = num_members * lay['c_pad'] * lay['d_pad'] * 4
  part = num_members * lay['splits'] * lay['b_pad'] * lay['c_pad'] * 4
  return 2 * spec.batch_size * (spec.num_features - 1) * itemsize + 3 * w + 2 * part


def _features(x_ref, ids, row_ok, c0, mean_ref, bias_ref, scale, pixels, load):
  """The `(len(ids), COLS)` model features of rows `ids`, columns c0…: (x − mean)·scale in the
  pixels, 0 after them, the bias trick's 1 last (`bias_ref`)."""
  cols = c0 + jnp.arange(COLS)
  x = load(x_ref.at[ids, _ds(c0, COLS)], mask=row_ok[:, None] & (cols < pixels)[None, :],
           other=0).astype(jnp.float32)
  return (x - mean_ref[_ds(c0, COLS)][None, :]) * scale + bias_ref[_ds(c0, COLS)][None, :]


def _ds(start, size):
  from jax.experimental import pallas as pl  # lazily: `import hinge_jax` stays Pallas-free
  return pl.ds(start, size)


def _scores_kernel(t_ref, u_ref, idx_ref, x_ref, mean_ref, bias_ref, scale_ref, w_ref, out_ref,
                   *, pixels, per_split, load):
  from jax.experimental import pallas as pl
  k, r, s = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  t = t_ref[0] + u_ref[0]
  ids = idx_ref[t, pl.ds(r * ROWS, ROWS)]
  row_ok = jnp.ones((ROWS,), jnp.bool_)  # padded rows (index 0) are masked out of the loss
  scale = scale_ref[0]

  def body(i, acc):
    c0 = (s * per_split + i) * COLS
    feats = _features(x_ref, ids, row_ok, c0, mean_ref, bias_ref, scale, pixels, load)
    w = w_ref[k, :, pl.ds(c0, COLS)]
    return acc + jax.lax.dot_general(feats, w, (((1,), (1,)), ((), ())),
                                     preferred_element_type=jnp.float32)
  acc = jax.lax.fori_loop(0, per_split, body, jnp.zeros((ROWS, w_ref.shape[1]), jnp.float32))
  out_ref[k, s, pl.ds(r * ROWS, ROWS), :] = acc


def _loss_and_grad(s, y, row_ok, *, loss, squared, num_classes, batch, margin):
  """Per-row losses `(rows,)` and d(mean loss)/ds `(rows, C_pad)` of the scores `s`; classes
  at and past `num_classes` and rows not `row_ok` count for nothing."""
  classes = jnp.arange(s.shape[1])[None, :]
  class_ok = classes < num_classes
  target = classes == y[:, None]
  correct = jnp.sum(jnp.where(target, s, 0.0), axis=1)
  if loss == 'softmax_cross_entropy':
    masked = jnp.where(class_ok, s, -jnp.inf)
    top = jnp.max(masked, axis=1)
    e = jnp.exp(masked - top[:, None])
    z = jnp.sum(e, axis=1)
    losses = jnp.log(z) + top - correct
    ds = e / z[:, None] - target.astype(jnp.float32)
  else:  # the Weston–Watkins SVM: hinge with a strict indicator, NaN kept (losses.hinge)
    m = s - correct[:, None] + margin
    rival = class_ok & ~target
    active = rival & (m > 0)
    counted = active | (rival & jnp.isnan(m))
    losses = jnp.sum(jnp.where(counted, m * m if squared else m, 0.0), axis=1)
    coef = jnp.where(active, 2 * m if squared else 1.0, 0.0)
    ds = coef - target.astype(jnp.float32) * jnp.sum(coef, axis=1)[:, None]
  ds = jnp.where(row_ok[:, None], ds, 0.0) / batch
  return jnp.where(row_ok, losses, 0.0), ds


def _update_kernel(t_ref, u_ref, idx_ref, y_ref, x_ref, mean_ref, bias_ref, scale_ref, lr_ref,
                   hyper_ref, part_ref, w_ref, stats_in_ref, w_out_ref, stats_ref, *,
                   pixels, width, splits, loss, squared, reg, regularize_bias, num_classes,
                   batch, batch_rows, load):
  from jax.experimental import pallas as pl
  del stats_in_ref  # aliased to stats_ref
  k, j = pl.program_id(0), pl.program_id(1)
  t = t_ref[0] + u_ref[0]
  c0 = j * COLS
  scale = scale_ref[0]
  reg_strength, margin, l1_ratio, frozen = (hyper_ref[k, i] for i in range(4))
  w = w_ref[k, :, pl.ds(c0, COLS)]
  c_pad = w.shape[0]

  def body(r, carry):
    acc, total = carry
    rows = pl.ds(r * batch_rows, batch_rows)
    row_ok = r * batch_rows + jnp.arange(batch_rows) < batch
    s = part_ref[k, 0, rows, :]
    for i in range(1, splits):
      s = s + part_ref[k, i, rows, :]
    losses, ds = _loss_and_grad(s, y_ref[t, rows], row_ok, loss=loss, squared=squared,
                                num_classes=num_classes, batch=batch, margin=margin)
    feats = _features(x_ref, idx_ref[t, rows], row_ok, c0, mean_ref, bias_ref, scale, pixels,
                      load)
    feats = jnp.where(row_ok[:, None], feats, 0.0)
    acc = acc + jax.lax.dot_general(ds, feats, (((0,), (0,)), ((), ())),
                                    preferred_element_type=jnp.float32)
    return acc, total + jnp.sum(losses)
  grad, total = jax.lax.fori_loop(
      0, -(-batch // batch_rows), body,
      (jnp.zeros((c_pad, COLS), jnp.float32), jnp.float32(0)))

  penalized = w
  if not regularize_bias:  # the bias trick's column, W's last, is left out of the penalty
    penalized = jnp.where((c0 + jnp.arange(COLS) == width - 1)[None, :], 0.0, w)
  if reg == 'none':
    penalty = jnp.float32(0)
  else:
    a = {'l2': 0.0, 'l1': 1.0}.get(reg, l1_ratio)
    sign = jnp.sign(penalized)
    penalty = jnp.sum(a * jnp.abs(penalized) + (1 - a) * penalized * penalized)
    grad = grad + reg_strength * (a * sign + (1 - a) * 2 * penalized)
  w_new = w - lr_ref[t, k] * grad
  w_out_ref[k, :, pl.ds(c0, COLS)] = jnp.where(frozen != 0, w, w_new)
  stats_ref[t, k, j] = penalty

  @pl.when(j == 0)
  def _():
    stats_ref[t, k, pl.num_programs(1)] = total / batch


def _padded_w(state, spec, d_pad: int, c_pad: int) -> Array:
  """W `(K, C_pad, D_pad)` in float32: `state.pad_features`'s layout (zero features after the
  pixels, the bias trick's column last), zero classes below."""
  w = pad_features(state, spec, d_pad - spec.num_features).params['W']
  return jnp.pad(w.astype(jnp.float32), ((0, 0), (0, c_pad - spec.num_classes), (0, 0)))


def _unpadded_w(state, w: Array, spec) -> Array:
  """`_padded_w` undone (`state.unpad_features`): W `(K, C, D)`."""
  padded = state.replace(params={**state.params, 'W': w[:, :spec.num_classes]})
  return unpad_features(padded, spec, w.shape[-1] - spec.num_features).params['W']


def step_chunk(state, start: Array, data, hp: dict, *, spec, length: int,
               unroll: int = 1, interpret: bool | None = None,
               num_warps: int = WARPS['step'], batch_rows: int = ROWS):
  """`length` plain-SGD steps of every member from step `start`, two kernels a step (the
  deferred guard: members diverged before stay frozen): `(state, (length, K) losses)`, as
  `step.scan_chunk` returns them. `unroll`: steps per loop iteration. `interpret`: run
  Pallas's interpreter (None: on the CPU). `num_warps`: Triton's warps per program.
  `batch_rows`: the minibatch rows an iteration of the update kernel's loop takes, one of
  `BATCH_ROWS` (the scores kernel takes ROWS a program)."""
  from jax.experimental import pallas as pl

  if batch_rows not in BATCH_ROWS:
    raise ValueError(f'batch_rows={batch_rows!r} must be one of {BATCH_ROWS}')
  lay = layout(spec, batch_rows)
  k = hp['seed'].shape[0]
  b, b_pad, c_pad, d_pad = spec.batch_size, lay['b_pad'], lay['c_pad'], lay['d_pad']
  pixels = spec.num_features - 1
  idx, lr = chunk_draws(start, hp, spec=spec, length=length)
  idx = jnp.pad(idx, ((0, 0), (0, b_pad - b)))
  labels = data.y['train'][idx].astype(jnp.int32)
  mean = jnp.zeros((d_pad,), jnp.float32).at[:pixels].set(data.mean.astype(jnp.float32))
  bias = jnp.zeros((d_pad,), jnp.float32).at[d_pad - 1].set(1.0)
  scale = jnp.reshape(data.scale, (1,)).astype(jnp.float32)
  hyper = jnp.stack([hp['reg_strength'], hp['margin'], hp['l1_ratio'],
                     state.diverged.astype(jnp.float32)], axis=1).astype(jnp.float32)
  x = data.x['train']
  interpret, load, params = _lowering(interpret, num_warps)

  scores = pl.pallas_call(
      functools.partial(_scores_kernel, pixels=pixels,
                        per_split=lay['blocks'] // lay['splits'], load=load),
      out_shape=jax.ShapeDtypeStruct((k, lay['splits'], b_pad, c_pad), jnp.float32),
      grid=(k, b_pad // ROWS, lay['splits']), interpret=interpret, name='hinge_jax_scores',
      **params)
  update = pl.pallas_call(
      functools.partial(_update_kernel, pixels=pixels, width=d_pad, splits=lay['splits'],
                        loss=spec.loss, squared=spec.squared, reg=spec.reg,
                        regularize_bias=spec.regularize_bias, num_classes=spec.num_classes,
                        batch=b, batch_rows=batch_rows, load=load),
      out_shape=(jax.ShapeDtypeStruct((k, c_pad, d_pad), jnp.float32),
                 jax.ShapeDtypeStruct((length, k, lay['blocks'] + 1), jnp.float32)),
      grid=(k, lay['blocks']), input_output_aliases={11: 0, 12: 1}, interpret=interpret,
      name='hinge_jax_update', **params)

  def steps_from(base, count, carry):
    # step base + u as the kernels' base and constant offset (not an add kernel per step)
    for u in range(count):
      w, stats = carry
      offset = np.array([u], np.int32)
      part = scores(base, offset, idx, x, mean, bias, scale, w)
      carry = update(base, offset, idx, labels, x, mean, bias, scale, lr, hyper, part, w, stats)
    return carry

  carry = (_padded_w(state, spec, d_pad, c_pad),
           jnp.zeros((length, k, lay['blocks'] + 1), jnp.float32))
  unroll = max(1, min(unroll, length))
  loops, tail = divmod(length, unroll)
  carry = jax.lax.fori_loop(
      0, loops, lambda i, c: steps_from(jnp.reshape(i * unroll, (1,)), unroll, c), carry)
  w, stats = steps_from(np.array([loops * unroll], np.int32), tail, carry)
  losses = stats[..., -1] + hp['reg_strength'][None, :] * jnp.sum(stats[..., :-1], axis=-1)
  return finish_chunk(state, _unpadded_w(state, w, spec), lr, length), losses


WIDE_ROWS = 128  # rows of W (members × classes) an update program writes (the default)
TILE_ROWS = (16, 32, 64, 128, 256)  # the heights `update_chunk` takes
WIDE_BATCH = 32  # minibatch rows a product step of the update program takes (the default)


def _backward_update_kernel(ds_ref, x_ref, lr_ref, lam_ref, l1_ref, frozen_ref, w_ref,
                            w_out_ref, pen_ref, *, rows, classes, members, width, batch,
                            batch_rows, reg, regularize_bias, load):
  """W's rows r0… and features c0…: W − lr·(dSᵀx + λ∇R(W)), with each row's penalty."""
  from jax.experimental import pallas as pl
  i, j = pl.program_id(0), pl.program_id(1)
  r0, c0 = i * rows, j * COLS
  member = (r0 + jnp.arange(rows)) // classes
  ok = member < members
  member = jnp.minimum(member, members - 1)
  lr, lam, l1_ratio, frozen = (load(ref.at[member], mask=ok, other=0)
                               for ref in (lr_ref, lam_ref, l1_ref, frozen_ref))

  row_ids = (r0 + jnp.arange(rows))[:, None]
  col_ids = (c0 + jnp.arange(COLS))[None, :]

  def body(q, acc):
    # the batch's rows past its end and dS's rows past K·C read as 0 (masked, not padded)
    b = q * batch_rows + jnp.arange(batch_rows)
    ds = load(ds_ref.at[row_ids, b[None, :]], mask=ok[:, None] & (b < batch)[None, :],
              other=0)
    x = load(x_ref.at[b[:, None], col_ids], mask=(b < batch)[:, None], other=0)
    return acc + jax.lax.dot_general(ds, x, (((1,), (0,)), ((), ())),
                                     preferred_element_type=jnp.float32)
  grad = jax.lax.fori_loop(0, -(-batch // batch_rows), body,
                           jnp.zeros((rows, COLS), jnp.float32))
  w = w_ref[pl.ds(r0, rows), pl.ds(c0, COLS)]
  penalized = w
  if not regularize_bias:  # the bias trick's column, W's last, is left out of the penalty
    penalized = jnp.where((c0 + jnp.arange(COLS) == width - 1)[None, :], 0.0, w)
  if reg == 'none':
    penalty = jnp.zeros((rows,), jnp.float32)
  else:
    a = {'l2': 0.0, 'l1': 1.0}.get(reg, l1_ratio[:, None])
    penalty = jnp.sum(a * jnp.abs(penalized) + (1 - a) * penalized * penalized, axis=1)
    grad = grad + lam[:, None] * (a * jnp.sign(penalized) + (1 - a) * 2 * penalized)
  w_out_ref[pl.ds(r0, rows), pl.ds(c0, COLS)] = jnp.where(
      (frozen != 0)[:, None], w, w - lr[:, None] * grad)
  pen_ref[pl.ds(r0, rows), j] = penalty


def update_chunk(state, start: Array, data, hp: dict, *, spec, length: int, unroll: int = 1,
                 interpret: bool | None = None, num_warps: int = WARPS['update'],
                 tile_rows: int = WIDE_ROWS, batch_rows: int = WIDE_BATCH):
  """`step_chunk`'s contract, for many members: XLA computes each step's features, scores,
  loss and dL/dS (`jax.value_and_grad` of `losses.py`'s loss: any loss); one Pallas kernel
  computes dW = dSᵀx tile by tile and writes W − lr·(dW + λ∇R(W)) in place, with each row's
  penalty for the step's loss. dW is never written to memory: at 1,024 CIFAR members that is
  131 MB a step not written and read back, and XLA's separate update pass not run.
  `tile_rows`: W's rows (members × classes) a program writes, one of `TILE_ROWS` (by 128
  features). `batch_rows`: the minibatch rows an iteration of its product takes, one of
  `BATCH_ROWS`."""
  from jax.experimental import pallas as pl

  k, c, d = state.params['W'].shape
  d_pad = -(-d // COLS) * COLS
  kc = k * c
  if tile_rows not in TILE_ROWS:
    raise ValueError(f'tile_rows={tile_rows!r} must be one of {TILE_ROWS}')
  if batch_rows not in BATCH_ROWS:
    raise ValueError(f'batch_rows={batch_rows!r} must be one of {BATCH_ROWS}')
  rows = min(tile_rows, _pow2(kc))
  kc_pad = -(-kc // rows) * rows
  b = spec.batch_size
  idx, lr = chunk_draws(start, hp, spec=spec, length=length)
  interpret, load, params = _lowering(interpret, num_warps)
  call = pl.pallas_call(
      functools.partial(_backward_update_kernel, rows=rows, classes=c, members=k, width=d_pad,
                        batch=b, batch_rows=batch_rows, reg=spec.reg,
                        regularize_bias=spec.regularize_bias, load=load),
      out_shape=(jax.ShapeDtypeStruct((kc_pad, d_pad), jnp.float32),
                 jax.ShapeDtypeStruct((kc_pad, d_pad // COLS), jnp.float32)),
      grid=(kc_pad // rows, d_pad // COLS), input_output_aliases={6: 0},
      interpret=interpret, name='hinge_jax_backward_update', **params)
  frozen = state.diverged.astype(jnp.float32)
  lam, l1_ratio = hp['reg_strength'].astype(jnp.float32), hp['l1_ratio'].astype(jnp.float32)

  def member_loss(s, y, margin):
    return jnp.mean(losses.get(spec.loss)(s, y, margin=margin, squared=spec.squared))

  def step(w, inputs):
    ids, lr_t = inputs
    x = data.features(data.x['train'][ids], d_pad - d)
    y = data.y['train'][ids]
    s = jax.vmap(lambda wm: model.scores({'W': wm}, x))(w[:kc].reshape(k, c, d_pad))
    data_loss, ds = jax.vmap(jax.value_and_grad(member_loss), in_axes=(0, None, 0))(
        s, y, hp['margin'])
    ds_t = jnp.swapaxes(ds, 1, 2).reshape(kc, b)
    w, pen = call(ds_t, x, lr_t, lam, l1_ratio, frozen, w)
    return w, data_loss + lam * jnp.sum(pen[:kc].reshape(k, -1), axis=1)

  w0 = jnp.pad(_padded_w(state, spec, d_pad, c).reshape(kc, d_pad), ((0, kc_pad - kc), (0, 0)))
  w, chunk_losses = jax.lax.scan(step, w0, (idx, lr), unroll=max(1, min(unroll, length)))
  w = _unpadded_w(state, w[:kc].reshape(k, c, d_pad), spec)
  return finish_chunk(state, w, lr, length), chunk_losses


def _lowering(interpret: bool | None, num_warps: int):
  """`(interpret, load, pallas_call settings)`: Pallas's interpreter (None: on the CPU) with
  `_interpret_load`, else Triton's masked `load` and its `num_warps` (`CompilerParams`;
  `TritonCompilerParams` in older JAX)."""
  if interpret is None:
    interpret = jax.default_backend() == 'cpu'
  if interpret:
    return True, _interpret_load, {}
  try:
    from jax.experimental.pallas import triton as plgpu
  except ImportError as e:  # deprecated in JAX 0.11, to be removed (the Pallas changelog)
    raise errors.UserError(
        f"Tuning.pallas needs Pallas's Triton backend, which JAX {jax.__version__} does not "
        f"have ({e}); train with Tuning(pallas=None), XLA's step") from None
  params = getattr(plgpu, 'CompilerParams', None) or getattr(plgpu, 'TritonCompilerParams')
  return False, plgpu.load, dict(compiler_params=params(num_warps=num_warps, num_stages=2))


def _interpret_load(ref, *, mask=None, other=None):
  """`plgpu.load` for Pallas's interpreter, which has no masked gather: rows are always in
  range (padded rows index row 0); columns past the array's edge read clamped (a gather's
  out-of-bounds rule) and are masked to 0 here, as `other=0` gives on the GPU."""
  del other
  value = ref[...]
  return jnp.where(mask, value, jnp.zeros_like(value)) if mask is not None else value
