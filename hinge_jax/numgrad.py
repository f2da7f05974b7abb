"""Centered finite differences of a scalar function of a params pytree.

The numerical gradient of the lecture: ∂f/∂θ_i ≈ (f(θ + h·e_i) − f(θ − h·e_i)) / 2h, one pair
of evaluations per coordinate. Coordinates are evaluated in vmapped batches (`lax.map` with
`batch_size`), so memory stays bounded while the work is batched.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

Array = jax.Array


def num_params(params) -> int:
  """Total number of scalar parameters in a pytree."""
  return int(sum(leaf.size for leaf in jax.tree.leaves(params)))


def perturbed(flat: Array, i: Array, h) -> tuple[Array, Array, Array]:
  """θ + h·e_i, θ − h·e_i and the step actually taken, (θ_i + h) − (θ_i − h) after rounding.

  Dividing by the rounded step rather than by 2h removes the error of representing θ_i ± h,
  which matters in float32.
  """
  plus, minus = flat.at[i].add(h), flat.at[i].add(-h)
  return plus, minus, plus[i] - minus[i]


def centered_differences(f: Callable, params, coords: Array, h, *,
                         batch_size: int = 256) -> Array:
  """Centered-difference estimates of ∂f/∂θ_i for the flat coordinates `coords`.

  Args:
    f: params pytree → scalar.
    params: the point θ.
    coords: `(M,)` int indices into `ravel_pytree(params)[0]`.
    h: the step (> 0).
    batch_size: coordinates evaluated together under `vmap`.

  Returns:
    `(M,)` estimates.
  """
  flat, unravel = ravel_pytree(params)

  def one(i):
    plus, minus, step = perturbed(flat, i, jnp.asarray(h, flat.dtype))
    return (f(unravel(plus)) - f(unravel(minus))) / step
  return jax.lax.map(one, coords, batch_size=min(batch_size, max(coords.shape[0], 1)))


def numerical_grad(f: Callable, params, h, *, batch_size: int = 256):
  """The full centered-difference gradient of `f` at `params`, shaped like `params`.

  Costs 2·P evaluations of `f` for P parameters (the lecture: 30,731 for CIFAR-10).
  """
  flat, unravel = ravel_pytree(params)
  coords = jnp.arange(flat.shape[0], dtype=jnp.int32)
  return unravel(centered_differences(f, params, coords, h, batch_size=batch_size))
