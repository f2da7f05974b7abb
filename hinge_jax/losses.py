"""Per-example classification losses on linear scores.

Every loss takes `scores` of shape `(..., C)` and integer `labels` of shape `(...)` and
returns per-example losses of shape `(...)`; reduction is the caller's. Hinges are written
with a strict indicator, so `jax.grad` gives exactly the hand-derived subgradient
1[margin > 0] at a tie (where `jnp.maximum(x, 0)` would give 0.5), and NaN scores give NaN
losses instead of being hidden by the hinge.
"""

from typing import Callable

import jax
import jax.numpy as jnp

from hinge_jax.registry import Registry

Array = jax.Array
LOSSES: Registry[Callable[..., Array]] = Registry('loss.name')


def hinge(margins: Array) -> Array:
  """max(0, m) with derivative 1[m > 0] (0 at m = 0) that propagates NaN.

  Args:
    margins: any shape.

  Returns:
    Elementwise positive part of `margins`; NaN where `margins` is NaN.
  """
  zero = jnp.zeros_like(margins)
  return jnp.where(margins > 0, margins, jnp.where(jnp.isnan(margins), margins, zero))


def _power(x: Array, squared: bool) -> Array:
  return x * x if squared else x


def _one_hot(labels: Array, num_classes: int, dtype) -> Array:
  return jax.nn.one_hot(labels, num_classes, dtype=dtype)


def _correct_score(scores: Array, labels: Array) -> Array:
  return jnp.take_along_axis(scores, labels[..., None], axis=-1)[..., 0]


@LOSSES.register('multiclass_svm')
def multiclass_svm(scores: Array, labels: Array, *, margin=1.0, squared: bool = False) -> Array:
  """Weston–Watkins multiclass SVM loss (the lecture's form).

  L_i = Σ_{j≠y_i} max(0, s_j − s_{y_i} + Δ), or Σ_{j≠y_i} max(0, s_j − s_{y_i} + Δ)² when
  `squared` (the L2-SVM).

  Args:
    scores: `(..., C)` class scores.
    labels: `(...)` integer labels in [0, C).
    margin: Δ, a scalar (a traced array is fine, so sweeps can vary it).
    squared: square each hinge term.

  Returns:
    `(...)` per-example losses.

  >>> import jax.numpy as jnp
  >>> float(multiclass_svm(jnp.array([3.2, 5.1, -1.7]), jnp.array(0)))  # doctest: +ELLIPSIS
  2.9...
  """
  num_classes = scores.shape[-1]
  not_target = 1 - _one_hot(labels, num_classes, scores.dtype)
  margins = scores - _correct_score(scores, labels)[..., None] + margin
  return jnp.sum(not_target * _power(hinge(margins), squared), axis=-1)


@LOSSES.register('crammer_singer')
def crammer_singer(scores: Array, labels: Array, *, margin=1.0, squared: bool = False) -> Array:
  """Crammer–Singer ("structured") multiclass hinge loss.

  L_i = max(0, max_{j≠y_i} s_j − s_{y_i} + Δ) (squared when `squared`). At a tie between
  competing classes the subgradient goes to the first of them (argmax's convention), as a
  hand derivation would pick it; `jnp.max` would split it.

  Args:
    scores: `(..., C)` class scores.
    labels: `(...)` integer labels in [0, C).
    margin: Δ, a scalar.
    squared: square the hinge.

  Returns:
    `(...)` per-example losses.
  """
  num_classes = scores.shape[-1]
  is_target = _one_hot(labels, num_classes, jnp.bool_)
  competitors = jnp.where(is_target, -jnp.inf, scores)
  rival = jnp.argmax(competitors, axis=-1)
  rival_score = _correct_score(scores, rival)
  return _power(hinge(rival_score - _correct_score(scores, labels) + margin), squared)


@LOSSES.register('one_vs_all')
def one_vs_all(scores: Array, labels: Array, *, margin=1.0, squared: bool = False) -> Array:
  """One-vs-all binary hinge, summed over classes.

  L_i = Σ_j max(0, Δ − t_j s_j) with t_j = +1 for j = y_i and −1 otherwise.

  Args:
    scores: `(..., C)` class scores.
    labels: `(...)` integer labels in [0, C).
    margin: Δ, a scalar.
    squared: square each hinge term.

  Returns:
    `(...)` per-example losses.
  """
  targets = 2 * _one_hot(labels, scores.shape[-1], scores.dtype) - 1
  return jnp.sum(_power(hinge(margin - targets * scores), squared), axis=-1)


@LOSSES.register('softmax_cross_entropy')
def softmax_cross_entropy(scores: Array, labels: Array, **unused) -> Array:
  """Softmax cross-entropy, computed stably: L_i = −s_{y_i} + log Σ_j exp(s_j).

  The log-sum-exp shifts by the maximum score first, so large scores do not overflow.
  Keyword arguments a hinge loss takes (`margin`, `squared`) are accepted and ignored, so
  every loss has one call signature.

  Args:
    scores: `(..., C)` class scores.
    labels: `(...)` integer labels in [0, C).

  Returns:
    `(...)` per-example losses.
  """
  del unused
  return jax.nn.logsumexp(scores, axis=-1) - _correct_score(scores, labels)


def get(name: str) -> Callable[..., Array]:
  """The loss registered under `name` (a clear ConfigError lists the choices otherwise)."""
  return LOSSES.get(name)


def expected_initial_loss(name: str, num_classes: int, margin: float = 1.0,
                          squared: bool = False) -> float:
  """The loss at s ≈ 0 (small random W): the lecture's sanity check.

  WW SVM: (C − 1)·Δ (squared: (C − 1)·Δ²); Crammer–Singer: Δ (Δ²); one-vs-all: C·Δ (C·Δ²);
  softmax: ln C.
  """
  power = 2 if squared else 1
  if name == 'multiclass_svm':
    return (num_classes - 1) * margin**power
  if name == 'crammer_singer':
    return margin**power
  if name == 'one_vs_all':
    return num_classes * margin**power
  if name == 'softmax_cross_entropy':
    return float(jnp.log(num_classes))
  LOSSES.get(name)  # raises the registry's error for an unknown name
  raise ValueError(f'no expected initial loss is known for loss {name!r}')
