"""The training objective of one member: mean data loss + λ·R(params).

The one definition every consumer uses: the minibatch step, the full batch, gradcheck,
sanity and landscape. `spec` is any object with the run's static fields (`loss`, `squared`,
`reg`, `regularize_bias`, `bias_trick`); `hp` holds one member's hyperparameters.
"""

import jax

from hinge_jax import losses, model, regularizers

Array = jax.Array


def data_losses(scores: Array, y: Array, hp: dict, *, spec) -> Array:
  """Per-example data loss of `scores` `(N, C)` for labels `y` `(N,)`."""
  return losses.get(spec.loss)(scores, y, margin=hp['margin'], squared=spec.squared)


def penalty(params, hp: dict, *, spec) -> Array:
  """λ·R(params): the regularization term of the objective."""
  return hp['reg_strength'] * regularizers.penalty(
      params, spec.reg, regularize_bias=spec.regularize_bias, bias_column=spec.bias_trick,
      l1_ratio=hp['l1_ratio'])


def objective(params, x: Array, y: Array, hp: dict, *, spec, feature_blocks: int = 1) -> Array:
  """Mean data loss over `(x, y)` + λ·R(params); `feature_blocks` only splits the product."""
  s = model.scores(params, x, feature_blocks=feature_blocks)
  return data_losses(s, y, hp, spec=spec).mean() + penalty(params, hp, spec=spec)
