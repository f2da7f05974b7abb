"""Gradient check: `jax.grad` against centered finite differences, in float64.

  python -m hinge_jax.gradcheck --config=configs/default.py [--h=1e-5] [--num_coords=50]

For the configured loss and regularizer, at W = `--scale`·randn (or `--params=params.npz`), on
the first `--num_examples` training examples, it compares the analytic gradient a with the
numerical n = (f(θ + h·e_i) − f(θ − h·e_i)) / 2h coordinate by coordinate, with the notes'
relative error |a − n| / max(|a|, |n|):

  > 1e-2 wrong · 1e-2 .. 1e-4 suspicious · 1e-4 .. 1e-7 fine for a kinked loss · ≤ 1e-7 good

Every coordinate is checked for a small problem (≤ `--full_below` parameters), a seeded sample
of `--num_coords` coordinates of every parameter otherwise (`--full` forces every coordinate,
refused above `numerical.max_evals_per_step` loss evaluations). The regularizer's gradient is
checked on its own too (a wrong regularizer gradient is small next to the data gradient).

Kinks: a hinge max(0, m) has no derivative at m = 0. A coordinate is flagged *near a kink*
when some hinge changes sides between θ − h·e_i and θ + h·e_i (for L1: a weight changes sign);
there the centered difference averages two slopes and may disagree with the subgradient —
expected, not a bug. A coordinate fails when it is not near a kink and both its relative error
exceeds `--tol` and its absolute error exceeds the rounding floor of centered differences
(100·ε·max(|f|, 1)/h). Exit status: 0 all pass, 1 a non-kink coordinate failed, 2 bad input.
"""

import dataclasses
import sys
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from jax.flatten_util import ravel_pytree

from hinge_jax import cli_utils, config_lib, datasets, model, numgrad, regularizers
from hinge_jax.errors import UserError
from hinge_jax.objective import objective
from hinge_jax.streams import stream_key
from hinge_jax.train import Spec

Array = jax.Array
THRESHOLDS = ((1e-7, 'good'), (1e-4, 'fine for a kinked loss'), (1e-2, 'suspicious'),
              (np.inf, 'wrong'))  # upper bounds of the notes' bands


def verdict(rel: float) -> str:
  """The notes' band for a relative error."""
  for bound, name in THRESHOLDS:
    if rel <= bound:
      return name
  return 'wrong'  # NaN


def kink_pattern(loss: str, scores: Array, labels: Array, margin) -> Array:
  """Which side of each hinge every example is on: `(N, K)` ints (empty for softmax).

  Two parameter points with different patterns have a kink between them.
  WW SVM: 1[s_j − s_y + Δ > 0]; Crammer–Singer: the rival's index and 1[margin > 0];
  one-vs-all: 1[Δ − t_j s_j > 0].
  """
  n, c = scores.shape
  correct = jnp.take_along_axis(scores, labels[:, None], axis=-1)
  if loss == 'multiclass_svm':
    return (scores - correct + margin > 0).astype(jnp.int32)
  if loss == 'crammer_singer':
    others = jnp.where(jax.nn.one_hot(labels, c, dtype=bool), -jnp.inf, scores)
    rival = jnp.argmax(others, axis=-1)
    active = jnp.max(others, axis=-1) - correct[:, 0] + margin > 0
    return jnp.stack([rival.astype(jnp.int32), active.astype(jnp.int32)], axis=-1)
  if loss == 'one_vs_all':
    targets = 2 * jax.nn.one_hot(labels, c, dtype=scores.dtype) - 1
    return (margin - targets * scores > 0).astype(jnp.int32)
  return jnp.zeros((n, 0), jnp.int32)


@dataclasses.dataclass
class Check:
  """One gradient comparison on a set of flat coordinates (numpy arrays of length M)."""
  name: str
  coords: np.ndarray
  analytic: np.ndarray
  numeric: np.ndarray
  kinks: np.ndarray  # how many hinges change sides between θ − h·e_i and θ + h·e_i
  floor: float  # absolute rounding floor of the centered difference

  @property
  def rel_error(self) -> np.ndarray:
    """|a − n| / max(|a|, |n|), 0 where both are 0."""
    diff = np.abs(self.analytic - self.numeric)
    scale = np.maximum(np.abs(self.analytic), np.abs(self.numeric))
    with np.errstate(invalid='ignore', divide='ignore'):
      return np.where(scale > 0, diff / scale, np.where(diff > 0, np.inf, 0.0))

  def failed(self, tol: float) -> np.ndarray:
    """Coordinates away from kinks that disagree beyond `tol` and beyond the rounding floor."""
    diff = np.abs(self.analytic - self.numeric)
    bad = ~(self.rel_error <= tol) & ~(diff <= self.floor)  # NaN counts as bad
    return bad & (self.kinks == 0)


def check_gradient(f: Callable, params, coords: np.ndarray, *, h: float,
                   pattern: Optional[Callable] = None, grad: Optional[Callable] = None,
                   name: str = 'objective', batch_size: int = 256) -> Check:
  """Compares the gradient of scalar `f` at `params` with centered differences.

  Args:
    f: params → scalar.
    params: the point θ (float64 for a meaningful check).
    coords: flat coordinate indices (into `ravel_pytree(params)`).
    h: the finite-difference step (> 0).
    pattern: params → int array of hinge sides (`kink_pattern`); None: no kinks.
    grad: the gradient to check (params → params-shaped); default `jax.grad(f)`.
    name: label of the check.
    batch_size: coordinates evaluated together under vmap.

  Returns:
    A `Check` with the analytic and numerical values of each coordinate.
  """
  if not h > 0:
    raise UserError(f'h={h} must be > 0 (a small step such as 1e-5)')
  flat, unravel = ravel_pytree(params)
  analytic = ravel_pytree((grad or jax.grad(f))(params))[0]
  coords_j = jnp.asarray(coords, jnp.int32)

  def one(i):
    plus, minus, step = numgrad.perturbed(flat, i, jnp.asarray(h, flat.dtype))
    p_plus, p_minus = unravel(plus), unravel(minus)
    numeric = (f(p_plus) - f(p_minus)) / step
    kinks = (jnp.sum(pattern(p_plus) != pattern(p_minus)) if pattern is not None
             else jnp.zeros((), jnp.int32))
    return numeric, kinks
  numeric, kinks = jax.jit(lambda c: jax.lax.map(one, c, batch_size=min(batch_size, len(coords))))(
      coords_j)
  value = float(f(params))
  floor = 100 * float(jnp.finfo(flat.dtype).eps) * max(abs(value), 1.0) / h
  return Check(name=name, coords=np.asarray(coords), analytic=np.asarray(analytic[coords_j]),
               numeric=np.asarray(numeric), kinks=np.asarray(kinks), floor=floor)


def choose_coords(params, *, num_coords: int, full: bool, full_below: int, max_evals: int,
                  seed: int) -> np.ndarray:
  """Every flat coordinate (small problems, or `full`), else a seeded sample of each leaf."""
  sizes = [leaf.size for leaf in jax.tree.leaves(params)]
  total = sum(sizes)
  if full and 2 * total > max_evals:
    raise UserError(f'a full gradient check of {total} parameters needs {2 * total} loss '
                    f'evaluations, over numerical.max_evals_per_step={max_evals}; drop --full '
                    f'to check a sample (--num_coords per parameter), or raise the budget')
  if full or total <= full_below:
    return np.arange(total)
  rng = np.random.default_rng(seed)
  out, offset = [], 0
  for size in sizes:
    out.append(offset + np.sort(rng.choice(size, min(num_coords, size), replace=False)))
    offset += size
  return np.concatenate(out)


def coord_name(params, i: int) -> str:
  """`W[12, 3]` for flat coordinate i."""
  leaves = jax.tree.leaves_with_path(params)
  for path, leaf in leaves:
    if i < leaf.size:
      key = jax.tree_util.keystr(path).strip("[]'")
      return f'{key}[{", ".join(str(int(v)) for v in np.unravel_index(i, leaf.shape))}]'
    i -= leaf.size
  raise IndexError(i)


def _leaf_ranges(params):
  out, offset = [], 0
  for path, leaf in jax.tree.leaves_with_path(params):
    out.append((jax.tree_util.keystr(path).strip("[]'"), tuple(leaf.shape), offset,
                offset + leaf.size))
    offset += leaf.size
  return out


def run(config: ml_collections.ConfigDict, *, h: float = 1e-5, num_examples: int = 500,
        num_coords: int = 50, full: bool = False, full_below: int = 2000, scale: float = 0.0,
        tol: float = 1e-6, params_path: str = '', grad: Optional[Callable] = None,
        dataset=None) -> dict:
  """The configured objective's gradient check in float64; returns a report dict.

  `grad` replaces `jax.grad` of the objective (to show that a wrong gradient is caught).
  """
  config_lib.validate(config)
  if not h > 0:
    raise UserError(f'--h={h} must be > 0 (a small step such as 1e-5)')
  if num_examples < 1 or num_coords < 1:
    raise UserError('--num_examples and --num_coords must be at least 1')
  dataset = dataset if dataset is not None else datasets.load(config.dataset)
  with jax.enable_x64(True):
    n = min(num_examples, dataset.size('train'))
    x = datasets.preprocess(jnp.asarray(dataset.x['train'][:n]), dataset.mean, dataset.scale,
                            bias_trick=dataset.bias_trick, dtype=jnp.float64)
    y = jnp.asarray(dataset.y['train'][:n])
    hp_np = config_lib.hyper_arrays([config])
    spec = Spec.create(config, dataset, hp_np)
    hp = {k: jnp.asarray(v[0], jnp.float64) for k, v in hp_np.items()}
    if params_path:
      params = _load_params(params_path)
    else:
      init_scale = scale or float(config.init_scale)
      params = model.init_params(stream_key(int(config.seed), 'init'),
                                 dataset.num_features, dataset.num_classes, scale=init_scale,
                                 use_bias=not dataset.bias_trick, dtype=jnp.float64)
    f = lambda p: objective(p, x, y, hp, spec=spec)
    coords = choose_coords(params, num_coords=num_coords, full=full, full_below=full_below,
                           max_evals=int(config.numerical.max_evals_per_step),
                           seed=int(config.seed))
    loss_pattern = lambda p: kink_pattern(spec.loss, model.scores(p, x), y, hp['margin'])
    reg_kinked = spec.reg in ('l1', 'elastic_net')

    def reg_pattern(p):
      arrays = regularizers.penalized(p, regularize_bias=spec.regularize_bias,
                                      bias_column=spec.bias_trick)
      return jnp.concatenate([jnp.ravel(a > 0) for a in arrays]).astype(jnp.int32)

    def both_patterns(p):
      parts = [jnp.ravel(loss_pattern(p))]
      if reg_kinked:
        parts.append(reg_pattern(p))
      return jnp.concatenate(parts)

    r = lambda p: regularizers.penalty(p, spec.reg, regularize_bias=spec.regularize_bias,
                                       bias_column=spec.bias_trick, l1_ratio=hp['l1_ratio'])
    checks = [check_gradient(f, params, coords, h=h, pattern=both_patterns, grad=grad,
                             name='objective')]
    if spec.reg != 'none':
      checks.append(check_gradient(r, params, coords, h=h,
                                   pattern=reg_pattern if reg_kinked else None,
                                   name='regularizer'))
    value = float(f(params))
  failures = int(sum(c.failed(tol).sum() for c in checks))
  return {'config': config, 'dataset': dataset.name, 'num_examples': n, 'h': h, 'tol': tol,
          'point': params_path or f'W = {scale or float(config.init_scale):g}·randn '
                                  f'(seed {int(config.seed)})',
          'objective': value, 'params': jax.tree.map(np.asarray, params), 'checks': checks,
          'leaves': _leaf_ranges(params), 'failures': failures, 'passed': failures == 0}


def _load_params(path: str) -> dict:
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: jnp.asarray(f[k], jnp.float64) for k in f.files}
  except (OSError, ValueError) as e:
    raise UserError(f'--params={path!r} could not be read as .npz ({e}); give a params.npz '
                    f'written by a run')


def format_report(report: dict, max_listed: int = 5) -> str:
  """The report as text: one row per (check, parameter), then failures and kink mismatches."""
  c = report['config']
  lines = [f'gradcheck: {c.loss.name}{" (squared)" if c.loss.squared else ""} + '
           f'{c.reg.strength:g}·{c.reg.name} on {report["dataset"]} '
           f'({report["num_examples"]} training examples), float64, h={report["h"]:g}, at '
           f'{report["point"]}; objective {report["objective"]:.6f}; rounding floor '
           f'{max(c.floor for c in report["checks"]):.1e}',
           f'{"check":<12} {"param":<6} {"shape":<10} {"coords":>6} {"kinks":>6} '
           f'{"max rel err":>12} {"max rel err*":>13} {"max abs err":>12}  verdict (away from '
           f'kinks)']
  tol = report['tol']
  for check in report['checks']:
    rel, near = check.rel_error, check.kinks > 0
    diff = np.abs(check.analytic - check.numeric)
    for name, shape, lo, hi in report['leaves']:
      sel = (check.coords >= lo) & (check.coords < hi)
      if not sel.any():
        continue
      away = sel & ~near
      counted = away & (diff > check.floor)  # a difference rounding cannot explain
      worst = float(np.max(rel[away], initial=0.0))
      big = np.maximum(np.abs(check.analytic), np.abs(check.numeric)) >= check.floor / tol
      worst_big = float(np.max(rel[away & big], initial=0.0))
      failed = int(check.failed(tol)[sel].sum())
      if not away.any():
        text = 'n/a (all near kinks)'
      elif counted.any():
        text = verdict(float(np.max(rel[counted])))
      elif verdict(worst) == 'good':
        text = 'good'
      else:
        text = 'good: every |a − n| is below the rounding floor (small |a|)'
      if failed:
        text += f'; {failed} FAIL'
      lines.append(f'{check.name:<12} {name:<6} {str(shape):<10} {int(sel.sum()):>6} '
                   f'{int(near[sel].sum()):>6} {worst:>12.2e} {worst_big:>13.2e} '
                   f'{float(np.max(diff[away], initial=0.0)):>12.2e}  {text}')
  lines.append(f'* over coordinates with max(|a|, |n|) >= the check\'s floor/tol (at most '
               f'{max(c.floor for c in report["checks"]) / tol:.1e}), where a relative error of '
               f'tol rises above rounding')
  params = report['params']
  for check in report['checks']:
    bad = np.flatnonzero(check.failed(tol))
    for j in bad[:max_listed]:
      lines.append(f'FAIL {check.name} {coord_name(params, int(check.coords[j]))}: analytic '
                   f'{check.analytic[j]:.8g}, numerical {check.numeric[j]:.8g}, rel error '
                   f'{check.rel_error[j]:.2e} ({verdict(check.rel_error[j])}), not near a kink')
    kinked = np.flatnonzero((check.kinks > 0) & ~(check.rel_error <= tol))
    for j in kinked[:max_listed]:
      lines.append(f'kink {check.name} {coord_name(params, int(check.coords[j]))}: analytic '
                   f'{check.analytic[j]:.8g}, numerical {check.numeric[j]:.8g}, rel error '
                   f'{check.rel_error[j]:.2e}: {int(check.kinks[j])} kink(s) between θ−h and θ+h '
                   f'(a hinge margin or an L1 weight changes sign), so the centered difference '
                   f'averages two slopes (expected at a kink, not a bug)')
    if len(kinked) > max_listed:
      lines.append(f'... {len(kinked) - max_listed} more mismatches at kinks in {check.name}')
  lines.append(('PASS' if report['passed'] else 'FAIL') +
               f': {report["failures"]} coordinate(s) away from kinks disagree beyond '
               f'rel {tol:g} (and the rounding floor)')
  return '\n'.join(lines)


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  report = run(_CONFIG.value, h=f.h, num_examples=f.num_examples, num_coords=f.num_coords,
               full=f.full, full_below=f.full_below, scale=f.scale, tol=f.tol,
               params_path=f.params)
  print(format_report(report))
  sys.exit(0 if report['passed'] else 1)


_CONFIG = None


def cli() -> None:
  """`python -m hinge_jax.gradcheck --config=...`: absl flags, a one-line error on bad input."""
  global _CONFIG
  flags.DEFINE_float('h', 1e-5, 'Finite-difference step (> 0); the notes use 1e-5 in float64.')
  flags.DEFINE_integer('num_examples', 500, 'Training examples in the objective (a dev set).')
  flags.DEFINE_integer('num_coords', 50, 'Coordinates sampled per parameter (large problems).')
  flags.DEFINE_bool('full', False, 'Check every coordinate (refused above the budget).')
  flags.DEFINE_integer('full_below', 2000, 'Check every coordinate when there are at most this '
                       'many parameters.')
  flags.DEFINE_float('scale', 0.0, 'Check at W = scale·randn (0: the config\'s init_scale).')
  flags.DEFINE_float('tol', 1e-6, 'Relative error above which a non-kink coordinate fails.')
  flags.DEFINE_string('params', '', 'Check at the parameters in this .npz (a run\'s params.npz).')
  _CONFIG = cli_utils.config_flag()
  cli_utils.run(main)


if __name__ == '__main__':
  cli()
