"""The linear score function s = f(x; W, b) = W x + b, as pure functions on a params pytree.

W has one row per class, `(C, D)`, the lecture's layout (f(x, W) = Wx with W 10 × 3072 for
CIFAR-10). Row c is class c's template. For a batch of rows `x` `(N, D)` the scores are
`x Wᵀ` `(N, C)`. The layout is also the fast one: the gradient `dSᵀ x` comes out `(C, D)`,
which XLA's matmuls produce directly, with no transposes in the training step.
"""

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


def init_params(key: Array, num_features: int, num_classes: int, *, scale=1e-3,
                use_bias: bool = True, dtype=jnp.float32) -> dict:
  """W ~ scale·N(0, 1) of shape (C, D); b = 0 of shape (C,) when `use_bias`.

  With the bias trick the data carry a constant-1 feature, `use_bias=False`, and the last
  column of W is the bias. The draws are those of a `(D, C)` normal, transposed: the same
  numbers per (feature, class) as the assignment's `W = scale·randn(D, C)` layout. They are
  drawn flat and reshaped (the same numbers): XLA compiles a 1-D draw several times faster.
  """
  w = (scale * jax.random.normal(key, (num_features * num_classes,), dtype)).reshape(
      num_features, num_classes)
  params = {'W': w.T}
  if use_bias:
    params['b'] = jnp.zeros((num_classes,), dtype)
  return params


def scores(params: dict, x: Array, *, precision=None, feature_blocks: int = 1) -> Array:
  """Class scores `x Wᵀ (+ b)`.

  Args:
    params: `{'W': (C, D)}` or `{'W': (C, D), 'b': (C,)}`.
    x: `(..., D)` features.
    precision: passed to the matmul (`'highest'` to avoid TF32 on GPUs).
    feature_blocks: computes the product as this many products over consecutive blocks of
      the D features, summed (the same math; float32 rounding may differ in the last bits).
      A speed setting: on the CPU, XLA runs independent products at the same time, one per
      core, while it runs a single product with few output columns (N×10) on about one
      core. `tuning.forward_feature_blocks` decides when it pays.

  Returns:
    `(..., C)` scores.
  """
  # W·xᵀ, then classes last: under vmap over members XLA turns this into one
  # (K·C, D)-by-(D, N) product with W as stored (x Wᵀ would transpose all of W first)
  w, d = params['W'], params['W'].shape[-1]
  if not 1 <= feature_blocks <= d:
    raise ValueError(f'feature_blocks={feature_blocks} must be between 1 and D={d}')
  cuts = [d * i // feature_blocks for i in range(feature_blocks + 1)]
  parts = [jax.lax.dot_general(w[:, a:b], x[..., a:b], (((1,), (x.ndim - 1,)), ((), ())),
                               precision=precision) for a, b in zip(cuts[:-1], cuts[1:])]
  s = jnp.moveaxis(functools.reduce(jnp.add, parts), 0, -1)
  if 'b' in params:
    s = s + params['b'].reshape((1,) * (s.ndim - 1) + (-1,))
  return s


def predict(params: dict, x: Array) -> Array:
  """The predicted class: argmax of the scores."""
  return jnp.argmax(scores(params, x), axis=-1)
