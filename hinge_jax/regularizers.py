"""Regularization penalties R(params) on a params pytree.

The objective is `mean data loss + λ·R(params)`. Following the lecture, L2 is Σ W² (no ½).
Whether the bias is penalized is a switch: with a separate `b` it means including `b`; with
the bias trick (the bias is the last column of `W`, `(C, D)`) it means including that column,
which is what the assignment's `reg·ΣW²` does.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from hinge_jax.registry import Registry

Array = jax.Array
Params = dict
REGULARIZERS: Registry[Callable[..., Array]] = Registry('reg.name')


def penalized(params: Params, *, regularize_bias: bool, bias_column: bool) -> list[Array]:
  """The arrays a penalty applies to.

  Args:
    params: `{'W': (C, D)}` (bias trick, `bias_column=True`) or `{'W': (C, D), 'b': (C,)}`.
    regularize_bias: include the bias (`b`, or the last column of `W` under the bias trick).
    bias_column: whether the last column of `W` is the bias (the bias trick).
  """
  w = params['W']
  if regularize_bias:
    return [w] + ([params['b']] if 'b' in params else [])
  return [w[..., :-1] if bias_column else w]


@REGULARIZERS.register('none')
def none(arrays: list[Array], **unused) -> Array:
  """R = 0."""
  del unused
  return jnp.zeros((), arrays[0].dtype)


@REGULARIZERS.register('l2')
def l2(arrays: list[Array], **unused) -> Array:
  """R = Σ w² (the lecture's convention; no factor ½)."""
  del unused
  return sum(jnp.sum(a * a) for a in arrays)


@jax.custom_jvp
def _abs(x: Array) -> Array:
  """|x| whose derivative is sign(x): 0 at 0, the subgradient the assignment's `np.sign(W)`
  takes (`jnp.abs` takes 1 there). A weight at exactly 0 then stays there under an L1 step
  with a zero data gradient: the zero-padded features of `tuning.Tuning.feature_multiple` keep
  their weights at 0."""
  return jnp.abs(x)


@_abs.defjvp
def _abs_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return jnp.abs(x), jnp.sign(x) * t


@REGULARIZERS.register('l1')
def l1(arrays: list[Array], **unused) -> Array:
  """R = Σ |w| (encourages sparse weights); its subgradient is sign(w), 0 at w = 0."""
  del unused
  return sum(jnp.sum(_abs(a)) for a in arrays)


@REGULARIZERS.register('elastic_net')
def elastic_net(arrays: list[Array], *, l1_ratio=0.5, **unused) -> Array:
  """R = α Σ |w| + (1 − α) Σ w², α = `l1_ratio` in [0, 1] (a traced array is fine)."""
  del unused
  return l1_ratio * l1(arrays) + (1 - l1_ratio) * l2(arrays)


def get(name: str) -> Callable[..., Array]:
  """The regularizer registered under `name` (a clear ConfigError lists the choices otherwise)."""
  return REGULARIZERS.get(name)


def penalty(params: Params, name: str, *, regularize_bias: bool, bias_column: bool,
            l1_ratio=0.5) -> Array:
  """R(params) for the named regularizer."""
  arrays = penalized(params, regularize_bias=regularize_bias, bias_column=bias_column)
  return get(name)(arrays, l1_ratio=l1_ratio)


def project_max_norm(params: Params, max_norm: Array, *, bias_column: bool) -> Params:
  """Max-norm constraint: rescale each class's weight vector so that ‖w_c‖₂ ≤ c.

  Applied after each step (projected gradient). The bias is left out of the norm.
  A non-positive `max_norm` disables the projection, so sweeps can mix both.
  """
  w = params['W']
  weights = w[..., :-1] if bias_column else w
  norms = jnp.sqrt(jnp.sum(weights * weights, axis=-1, keepdims=True))
  factor = jnp.where((max_norm > 0) & (norms > max_norm), max_norm / jnp.maximum(norms, 1e-30), 1.0)
  if bias_column:
    w = jnp.concatenate([weights * factor, w[..., -1:]], axis=-1)
  else:
    w = w * factor
  return {**params, 'W': w}
