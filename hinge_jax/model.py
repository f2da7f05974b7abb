"""The linear score function s = f(x; W, b) = x W + b, as pure functions on a params pytree."""

import jax
import jax.numpy as jnp

Array = jax.Array


def init_params(key: Array, num_features: int, num_classes: int, *, scale=1e-3,
                use_bias: bool = True, dtype=jnp.float32) -> dict:
  """W ~ scale·N(0, 1) of shape (D, C); b = 0 of shape (C,) when `use_bias`.

  With the bias trick the data carry a constant-1 feature, `use_bias=False`, and the last
  row of W is the bias.
  """
  params = {'W': scale * jax.random.normal(key, (num_features, num_classes), dtype)}
  if use_bias:
    params['b'] = jnp.zeros((num_classes,), dtype)
  return params


def scores(params: dict, x: Array, *, precision=None) -> Array:
  """Class scores `x @ W (+ b)`.

  Args:
    params: `{'W': (D, C)}` or `{'W': (D, C), 'b': (C,)}`.
    x: `(..., D)` features.
    precision: passed to the matmul (`'highest'` to avoid TF32 on GPUs).

  Returns:
    `(..., C)` scores.
  """
  s = jnp.matmul(x, params['W'], precision=precision)
  if 'b' in params:
    s = s + params['b'].reshape((1,) * (s.ndim - 1) + (-1,))
  return s


def predict(params: dict, x: Array) -> Array:
  """The predicted class: argmax of the scores."""
  return jnp.argmax(scores(params, x), axis=-1)
