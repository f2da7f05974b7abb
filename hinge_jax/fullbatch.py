"""The full-batch objective in one blocked pass over the stored data.

Full-batch gradient descent reads the whole training set every step. Converting all of it to
float32 first would write (and read back) four times the bytes of the stored uint8 pixels;
instead a `lax.scan` walks the data in blocks of rows, converting and centring one block at a
time (it stays in cache), and accumulates the data loss and, for the gradient, dSᵀ·X.

On an accelerator the stored uint8 pixels are kept on the device as bfloat16 instead (exact:
every integer up to 256 is a bfloat16), because XLA converts uint8 to float32 in a kernel of
its own, writing and re-reading four bytes per pixel, while it multiplies bfloat16 operands
directly. The products then take raw pixels and W (or dS) split in two bfloat16 halves
(hi + lo, 16 significant bits in all, float32 accumulation: finer than the TF32 rounding of
float32 matmuls on those chips), and the centring and scaling are applied to the products:
(x − μ)·a·Wᵀ = a·(x Wᵀ − μ Wᵀ) and dSᵀ(x − μ)·a = a·(dSᵀx − (1ᵀdS)ᵀμ): about a third of
the bytes a step reads and writes (`benchmarks/gpu_program.py` plans it).

Because the model is linear, the gradient needs only dS = ∂loss/∂scores per block (from
`jax.vjp` of the loss, the same subgradients as `jax.grad` of the whole objective):
∂L/∂W = Σ_blocks dSᵀ X / N, `(C, D)` like W (and ∂L/∂b = Σ dS / N). `objective` is a
`jax.custom_vjp` whose forward pass computes value and gradient together, so
`jax.value_and_grad(objective)` costs one pass (two matmuls per block), and a plain call
(random search, finite differences) costs one matmul per block. The value and gradient come
from `objective.data_losses` and `objective.penalty`, the minibatch step's own definitions,
summed block by block.
"""

import jax
import jax.numpy as jnp

from hinge_jax import model
from hinge_jax.datasets.base import preprocess
from hinge_jax.objective import data_losses, penalty
from hinge_jax.tuning import fullbatch_block_rows

Array = jax.Array


def blocks(data, num_valid: int, axis: str = '') -> tuple[tuple, Array]:
  """The training split as `((nb, blk, D) raw blocks, mean, scale)` and `(nb, blk)` labels.

  Labels of padding rows are −1 (masked out). Mean and scale travel with the blocks, so the
  objective closes over nothing traced. `axis`: inside `jax.shard_map`, the mesh axis the
  rows are split over (shard i holds the i-th equal run of rows).
  """
  x_raw, y = data.x['train'], data.y['train']
  size = fullbatch_block_rows(x_raw.shape[0])
  offset = jax.lax.axis_index(axis) * y.shape[0] if axis else 0
  y = jnp.where(offset + jnp.arange(y.shape[0]) < num_valid, y, -1)
  return (x_raw.reshape(-1, size, x_raw.shape[-1]), data.mean, data.scale), y.reshape(-1, size)


def _split_bias(params: dict, bias_trick: bool) -> tuple[Array, Array]:
  """(weights on the stored features, bias): the bias is W's last column under the bias trick."""
  w = params['W']
  if bias_trick:
    return w[:, :-1], w[:, -1]
  return w, params.get('b', jnp.zeros(w.shape[0], w.dtype))


def split_bf16(a: Array) -> tuple[Array, Array]:
  """a ≈ hi + lo, two bfloat16 arrays: 8 significant bits each, 16 in all.

  hi is rounded to bfloat16 by `reduce_precision`, not by a float32 → bfloat16 → float32
  round trip: XLA's GPU compiler, allowed excess precision by default, removes such a pair of
  conversions, which turns a − hi into a − a = 0 and silently drops lo (the products would
  then be only as exact as bfloat16).
  """
  hi = jax.lax.reduce_precision(a, exponent_bits=8, mantissa_bits=7)  # bfloat16's, in float32
  return hi.astype(jnp.bfloat16), (a - hi).astype(jnp.bfloat16)


def times_split(a: Array, b_split: tuple, *, rhs: bool) -> Array:
  """a·b (rhs) or b·a, with b as its (hi, lo) halves stacked into one product, float32 out."""
  hi, lo = b_split
  if rhs:  # a (N, D) · b (D, C): one (N, D)·(D, 2C) product
    out = jnp.matmul(a, jnp.concatenate([hi, lo], axis=1), preferred_element_type=jnp.float32)
    c = hi.shape[1]
    return out[:, :c] + out[:, c:]
  out = jnp.matmul(jnp.concatenate([hi, lo], axis=0), a, preferred_element_type=jnp.float32)
  c = hi.shape[0]  # b (C, N) · a (N, D): one (2C, N)·(N, D) product
  return out[:c] + out[c:]


def exact_bf16(x_block: Array) -> bool:
  """Whether the blocks hold raw pixels stored as bfloat16 (see the module's docstring)."""
  return x_block.dtype == jnp.bfloat16


def _scores(params, x_block, mean, scale, *, spec):
  """(features or None, scores) of one block. For bfloat16 pixels the features are not
  formed: the scores come from the raw products, centred and scaled afterwards."""
  w, b = _split_bias(params, spec.bias_trick)
  if exact_bf16(x_block):
    raw = times_split(x_block, split_bf16(w.T), rhs=True)
    offset = jnp.matmul(w, mean, precision='highest')  # μ Wᵀ, (C,)
    return None, (raw - offset[None]) * scale + b[None]
  x = preprocess(x_block, mean, scale, bias_trick=False, dtype=w.dtype)  # features as W
  return x, model.scores({'W': w, 'b': b}, x)


def _grad_w(ds, x, x_block, mean, scale):
  """dSᵀ·X for the block, `(C, D)` like W."""
  if x is None:  # bfloat16 pixels: a·(dSᵀx − (1ᵀdS)ᵀ μ)
    raw = times_split(x_block, split_bf16(ds.T), rhs=False)
    return (raw - ds.sum(axis=0)[:, None] * mean[None]) * scale
  # dSᵀ·X, (C, D) like W: XLA's CPU backend runs this orientation on its fast matmul path,
  # while Xᵀ·dS, (D, C), goes to a much slower generic one.
  return ds.T @ x


def _block_loss(s, y, hp, *, spec):
  """The data loss summed over a block's rows (padding rows, label −1, masked out)."""
  per = data_losses(s, jnp.maximum(y, 0), hp, spec=spec)
  return jnp.sum(jnp.where(y >= 0, per, 0.0))


def _value(params, x, yb, hp, *, spec):
  xb, mean, scale = x

  def body(total, block):
    _, s = _scores(params, block[0], mean, scale, spec=spec)
    return total + _block_loss(s, block[1], hp, spec=spec), None
  total, _ = jax.lax.scan(body, jnp.zeros((), params['W'].dtype), (xb, yb))
  if spec.data_axis:  # the shards' sums (XLA's all-reduce)
    total = jax.lax.psum(total, spec.data_axis)
  return total / spec.num_train + penalty(params, hp, spec=spec)


def _value_and_grad(params, x, yb, hp, *, spec):
  xb, mean, scale = x
  w, _ = _split_bias(params, spec.bias_trick)

  def body(carry, block):
    total, gw, gb = carry
    x, s = _scores(params, block[0], mean, scale, spec=spec)
    loss, vjp = jax.vjp(lambda s: _block_loss(s, block[1], hp, spec=spec), s)
    (ds,) = vjp(jnp.ones((), s.dtype))
    return (total + loss, gw + _grad_w(ds, x, block[0], mean, scale), gb + ds.sum(axis=0)), None

  zeros = (jnp.zeros((), w.dtype), jnp.zeros(w.shape, w.dtype), jnp.zeros(w.shape[0], w.dtype))
  (total, gw, gb), _ = jax.lax.scan(body, zeros, (xb, yb))
  if spec.data_axis:  # the shards' sums (XLA's all-reduce)
    total, gw, gb = jax.lax.psum((total, gw, gb), spec.data_axis)
  n = spec.num_train
  if spec.bias_trick:
    grads = {'W': jnp.concatenate([gw, gb[:, None]], axis=1) / n}
  else:
    grads = {'W': gw / n, 'b': gb / n}
  reg_value, reg_grads = jax.value_and_grad(penalty)(params, hp, spec=spec)
  grads = jax.tree.map(jnp.add, grads, reg_grads)
  return total / n + reg_value, grads


def make_objective(*, spec):
  """`objective(params, x, y, hp)` on `blocks(...)`'s `(x, y)`, with a one-pass gradient."""

  @jax.custom_vjp
  def objective(params, x, y, hp):
    return _value(params, x, y, hp, spec=spec)

  def fwd(params, x, y, hp):
    value, grads = _value_and_grad(params, x, y, hp, spec=spec)
    return value, grads

  def bwd(grads, cotangent):
    return (jax.tree.map(lambda g: cotangent * g, grads), None, None, None)

  objective.defvjp(fwd, bwd)
  return objective
