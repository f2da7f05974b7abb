"""The demo's computation: scores, losses, the L2 penalty and one gradient step, by hinge_jax.

The objective is `objective.data_losses` (the `hinge_jax.losses` loss) averaged over the
points, plus `objective.penalty` (λ·Σ W², the bias not penalized), and the step is
W ← W − lr·∇ from `jax.grad` of it: plain full-batch gradient descent, the step
`python -m hinge_jax.main` takes with `optimizer.name='sgd'` and `batch_size=0`. The points
are padded to one of a few sizes (`BUCKETS`) under a mask, so each loss compiles once per
size: dragging or adding points does not recompile.
"""

import dataclasses
import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np

from hinge_jax import model, objective
from hinge_jax.demo import schema

BUCKETS = (16, 64, 256, schema.MAX_POINTS)


@dataclasses.dataclass(frozen=True)
class DemoSpec:
  """The static fields `hinge_jax.objective` reads: the demo's loss, L2 on W, a separate b."""
  loss: str
  squared: bool
  reg: str = 'l2'
  regularize_bias: bool = False
  bias_trick: bool = False


def bucket(n: int) -> int:
  """The padded number of points: the smallest bucket holding `n`."""
  return next(b for b in BUCKETS if n <= b)


def _terms(params, x, y, mask, hp, *, spec):
  """(total, (scores, per-point losses, data loss, λR)); padding rows count for nothing."""
  s = model.scores(params, x)
  per = jnp.where(mask, objective.data_losses(s, y, hp, spec=spec), 0.0)
  count = jnp.maximum(jnp.sum(mask.astype(s.dtype)), 1.0)
  data = jnp.sum(per) / count
  reg = objective.penalty(params, hp, spec=spec)
  return data + reg, (s, per, data, reg)


def _report(params, x, y, mask, hp, *, spec) -> dict:
  total, (s, per, data, reg) = _terms(params, x, y, mask, hp, spec=spec)
  correct = jnp.sum(jnp.where(mask, jnp.argmax(s, axis=-1) == y, False).astype(s.dtype))
  return {'W': params['W'], 'b': params['b'], 'scores': s, 'losses': per, 'data_loss': data,
          'reg_loss': reg, 'loss': total, 'correct': correct}


def _step(params, x, y, mask, hp, lr, *, spec) -> dict:
  """One gradient step of size `lr`, then the report at the new weights. `lr = 0` is the
  report at the given weights (W is kept as it is, whatever the gradient): one program per
  loss serves both."""
  grads = jax.grad(lambda p: _terms(p, x, y, mask, hp, spec=spec)[0])(params)
  params = jax.tree.map(lambda p, g: jnp.where(lr > 0, p - lr * g, p), params, grads)
  return _report(params, x, y, mask, hp, spec=spec)


@functools.lru_cache(maxsize=None)
def program(loss: str, squared: bool):
  """The jitted step of one loss (jax.jit compiles it once per bucket of points)."""
  return jax.jit(functools.partial(_step, spec=DemoSpec(loss=loss, squared=squared)))


def _arguments(p: schema.Problem) -> tuple:
  n, size = p.num_points, bucket(p.num_points)
  x = np.zeros((size, schema.NUM_FEATURES), np.float32)
  y = np.zeros((size,), np.int32)
  x[:n], y[:n] = p.x, p.y
  hp = {'margin': np.float32(p.margin), 'reg_strength': np.float32(p.reg),
        'l1_ratio': np.float32(0.5)}
  return {'W': p.w, 'b': p.b}, x, y, np.arange(size) < n, hp


def _response(out: dict, n: int) -> dict:
  """JSON-able: float32 values as Python floats (exact), per-point rows cut to `n`. A value
  that overflowed float32 (huge weights or points, a step size that diverges) is refused."""
  out = jax.device_get(out)
  cut = {k: v[:n] if k in ('scores', 'losses') else v for k, v in out.items()}
  bad = [k for k, v in cut.items() if not np.all(np.isfinite(v))]
  if bad:
    raise schema.RequestError(f'{" and ".join(bad)} overflowed float32 (NaN or infinite): the '
                              f'weights, points or step size are too large; make them smaller')
  return {
      'W': out['W'].tolist(), 'b': out['b'].tolist(),
      'scores': out['scores'][:n].tolist(), 'losses': out['losses'][:n].tolist(),
      'data_loss': float(out['data_loss']) if n else None,
      'reg_loss': float(out['reg_loss']),
      'loss': float(out['loss']) if n else None,
      'accuracy': float(out['correct']) / n if n else None,
  }


def evaluate(p: schema.Problem) -> dict:
  """Scores, per-point losses, data/reg/total loss and accuracy at the request's weights."""
  return _response(program(p.loss, p.squared)(*_arguments(p), np.float32(0)), p.num_points)


def step(p: schema.Problem) -> dict:
  """One gradient step from the request's weights; the report at the new weights."""
  schema.trainable(p)
  return _response(program(p.loss, p.squared)(*_arguments(p), np.float32(p.lr)),
                   p.num_points)


def warm_up(loss: str = schema.LOSSES[0], squared: bool = False, num_points: int = 2) -> None:
  """Compiles one loss's program for the bucket of `num_points` points."""
  p = schema.Problem(w=np.zeros((3, 2), np.float32), b=np.zeros(3, np.float32),
                     x=np.zeros((num_points, 2), np.float32),
                     y=np.arange(num_points, dtype=np.int32) % 2, loss=loss, squared=squared,
                     margin=1.0, reg=0.0, lr=0.1)
  step(p)


def warm_up_rest(stop: threading.Event) -> None:
  """Compiles every loss (squared or not) for the two smaller buckets, the presets' sizes,
  until `stop` is set: run in the background, so that switching a loss or loading blobs does
  not pause. The process must not exit during a compile (XLA aborts): set `stop`, then join."""
  for size in BUCKETS[:2]:
    for squared in (False, True):
      for loss in schema.LOSSES[:3] if squared else schema.LOSSES:
        if stop.is_set():
          return
        warm_up(loss, squared, size)
