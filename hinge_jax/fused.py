"""Minibatch SGD as two hand-fused kernels a step (Pallas), for a GPU's small models.

XLA compiles one minibatch SGD step of a CIFAR-sized model into about 11 kernels (the gather
and conversion of the batch, a split-K forward product and its reduction, the loss and its
gradient in several small reductions, the backward product, the update); on an H200 each runs
about 1.7 µs, launch-bound, so one model's epoch takes 5.5 ms however small the math
(benchmarks/gpu_profile.py). Here a step is two kernels:

1. `scores`: grid (members, row blocks, feature splits). Each program gathers its rows of
   the minibatch straight from the stored training split (uint8 stays uint8 in memory),
   centres and scales them, and multiplies them with its share of W: partial scores
   `(K, splits, B_pad, C_pad)`.
2. `update`: grid (members, feature blocks). Each program sums the partial scores, computes
   the loss and its gradient with respect to the scores (hand-derived, checked against
   `jax.grad` in tests/test_fused.py), gathers its feature block of the minibatch again,
   multiplies, adds the regularizer's gradient and writes W's block updated in place. It
   also writes the block's share of the penalty and (block 0) the data loss, into a
   `(steps, K, blocks + 1)` buffer that is summed into the step losses after the loop, in
   a fixed order (no atomics: the same seed gives the same bits).

The chunk runs as a `fori_loop` whose body is these two calls; indices, labels and learning
rates for the whole chunk are computed before it. Inside, W is padded to `C_pad` classes
(zero rows, masked out of the loss) and `D_pad` features (zero columns after the pixels, the
bias trick's 1 last, as `train.Tuning.feature_multiple` lays them out).

Scope (`applies`): strategy `sgd` with the plain `sgd` optimizer (any schedule), shared
minibatches, the bias trick, the WW SVM (squared or not) or softmax, regularizer none, l2,
l1 or elastic net, no max-norm, the deferred guard. Elsewhere `train` runs its XLA step.
On the CPU the kernels run in Pallas's interpreter (tests only: slow). It is the same model,
but not the same bits as the XLA step: sums group differently.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hinge_jax import optim

Array = jax.Array

ROWS = 32  # minibatch rows a program handles at a time
COLS = 128  # features a program handles at a time (W's padded width is a multiple)
MAX_SPLITS = 8  # the forward product's feature splits (programs per row block)
LOSSES = ('multiclass_svm', 'softmax_cross_entropy')
REGULARIZERS = ('none', 'l2', 'l1', 'elastic_net')


def applies(spec, guard: str) -> bool:
  """Whether `train_chunk` can train a chunk of `spec` (see the module's docstring)."""
  return (spec.strategy == 'sgd' and spec.optimizer == 'sgd' and not spec.full_batch
          and spec.shared_data and spec.bias_trick and not spec.max_norm
          and spec.loss in LOSSES and spec.reg in REGULARIZERS and guard == 'deferred')


def _pow2(n: int, least: int = 16) -> int:
  return max(least, 1 << max(n - 1, 0).bit_length())


def layout(spec) -> dict:
  """The padded shapes: classes `c_pad`, rows `b_pad`, features `d_pad` (a multiple of
  COLS), feature blocks `blocks` and forward splits `splits` (a divisor of `blocks`)."""
  blocks = -(-spec.num_features // COLS)
  splits = max(s for s in range(1, MAX_SPLITS + 1) if blocks % s == 0)
  return dict(c_pad=_pow2(spec.num_classes), b_pad=-(-spec.batch_size // ROWS) * ROWS,
              d_pad=blocks * COLS, blocks=blocks, splits=splits)


def step_bytes(spec, num_members: int, itemsize: int) -> int:
  """Bytes a step moves through memory at least once: the minibatch's rows of the stored
  split read by both kernels (`itemsize` bytes a pixel), W read twice and written once, the
  partial scores written and read. (An HLO listing counts a Pallas kernel's operands whole:
  the training split.)"""
  lay = layout(spec)
  w = num_members * lay['c_pad'] * lay['d_pad'] * 4
  part = num_members * lay['splits'] * lay['b_pad'] * lay['c_pad'] * 4
  return 2 * spec.batch_size * (spec.num_features - 1) * itemsize + 3 * w + 2 * part


def _features(x_ref, ids, row_ok, c0, mean_ref, bias_ref, scale, pixels, load):
  """The `(ROWS, COLS)` model features of rows `ids`, columns c0…: (x − mean)·scale in the
  pixels, 0 after them, the bias trick's 1 last (`bias_ref`)."""
  cols = c0 + jnp.arange(COLS)
  x = load(x_ref.at[ids, pl_ds(c0, COLS)], mask=row_ok[:, None] & (cols < pixels)[None, :],
           other=0).astype(jnp.float32)
  return (x - mean_ref[pl_ds(c0, COLS)][None, :]) * scale + bias_ref[pl_ds(c0, COLS)][None, :]


def pl_ds(start, size):
  from jax.experimental import pallas as pl
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
  """Per-row losses `(ROWS,)` and d(mean loss)/ds `(ROWS, C_pad)` of the scores `s`; classes
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
                   batch, load):
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
    rows = pl.ds(r * ROWS, ROWS)
    row_ok = r * ROWS + jnp.arange(ROWS) < batch
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
      0, -(-batch // ROWS), body, (jnp.zeros((c_pad, COLS), jnp.float32), jnp.float32(0)))

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


def _pad_w(w: Array, lay: dict) -> Array:
  """`(K, C, D)` → `(K, C_pad, D_pad)`: zero classes below, zero features before the bias."""
  k, c, d = w.shape
  cut = d - 1  # the pixels end; the bias trick's column follows
  zeros = jnp.zeros((k, c, lay['d_pad'] - d), w.dtype)
  w = jnp.concatenate([w[..., :cut], zeros, w[..., cut:]], axis=-1)
  return jnp.pad(w, ((0, 0), (0, lay['c_pad'] - c), (0, 0)))


def _unpad_w(w: Array, spec) -> Array:
  d, c = spec.num_features, spec.num_classes
  return jnp.concatenate([w[:, :c, :d - 1], w[:, :c, -1:]], axis=-1)


def train_chunk(state, start: Array, data, hp: dict, *, spec, length: int,
                unroll: int = 1, interpret: bool | None = None, num_warps: int = 4):
  """`length` plain-SGD steps of every member from step `start` (the deferred guard: members
  diverged before stay frozen): `(state, (length, K) losses)`, as `train._scan_chunk`
  returns them. `unroll`: steps per loop iteration. `interpret`: run Pallas's interpreter
  (None: on the CPU). `num_warps`: Triton's warps per program."""
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import triton as plgpu
  from hinge_jax import train  # the minibatch draws, shared with the XLA step

  if interpret is None:
    interpret = jax.default_backend() == 'cpu'
  lay = layout(spec)
  k = hp['seed'].shape[0]
  b, b_pad, c_pad, d_pad = spec.batch_size, lay['b_pad'], lay['c_pad'], lay['d_pad']
  pixels = spec.num_features - 1
  steps = start + jnp.arange(length, dtype=jnp.int32)
  idx = jax.vmap(lambda t: train.batch_indices(hp['seed'][0], t, spec=spec))(steps)
  idx = jnp.pad(idx.astype(jnp.int32), ((0, 0), (0, b_pad - b)))
  labels = data.y['train'][idx].astype(jnp.int32)
  rate = lambda t: jax.vmap(lambda h: optim.learning_rate(
      spec.schedule, t, h, num_steps=spec.num_steps, decay_steps=spec.decay_steps))(hp)
  lr = jax.vmap(rate)(steps).astype(jnp.float32)  # (length, K)
  mean = jnp.zeros((d_pad,), jnp.float32).at[:pixels].set(data.mean.astype(jnp.float32))
  bias = jnp.zeros((d_pad,), jnp.float32).at[d_pad - 1].set(1.0)
  scale = jnp.reshape(data.scale, (1,)).astype(jnp.float32)
  hyper = jnp.stack([hp['reg_strength'], hp['margin'], hp['l1_ratio'],
                     state.diverged.astype(jnp.float32)], axis=1).astype(jnp.float32)
  x = data.x['train']
  load = functools.partial(plgpu.load) if not interpret else _interpret_load
  params = {} if interpret else dict(
      compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=2))

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
                        batch=b, load=load),
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

  carry = (_pad_w(state.params['W'].astype(jnp.float32), lay),
           jnp.zeros((length, k, lay['blocks'] + 1), jnp.float32))
  unroll = max(1, min(unroll, length))
  loops, tail = divmod(length, unroll)
  carry = jax.lax.fori_loop(
      0, loops, lambda i, c: steps_from(jnp.reshape(i * unroll, (1,)), unroll, c), carry)
  w, stats = steps_from(np.array([loops * unroll], np.int32), tail, carry)
  losses = stats[..., -1] + hp['reg_strength'][None, :] * jnp.sum(stats[..., :-1], axis=-1)

  training = ~state.diverged
  opt = state.opt_state
  opt = opt._replace(count=jnp.where(training, opt.count + length, opt.count),
                     hyperparams={**opt.hyperparams, 'learning_rate': jnp.where(
                         training, lr[-1], opt.hyperparams['learning_rate'])})
  params = {**state.params, 'W': _unpad_w(w, spec).astype(state.params['W'].dtype)}
  return state.replace(params=params, opt_state=opt), losses


def _interpret_load(ref, *, mask=None, other=None):
  """`plgpu.load` for Pallas's interpreter, which has no masked gather: rows are always in
  range (padded rows index row 0); columns past the array's edge read clamped (a gather's
  out-of-bounds rule) and are masked to 0 here, as `other=0` gives on the GPU."""
  del other
  value = ref[...]
  return jnp.where(mask, value, jnp.zeros_like(value)) if mask is not None else value
