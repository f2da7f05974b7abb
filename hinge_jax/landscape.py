"""Looking at the loss around a point: the step-size table and 1-D / 2-D landscape slices.

  python -m hinge_jax.landscape --config=configs/default.py --workdir=DIR [--params=params.npz]

*Step-size table* (the notes'): the training objective after one full-batch gradient step
W − η·∇L(W) for log-spaced η (`--lr_min`..`--lr_max`, `--num_lrs`), all η in one vmapped call.
Printed, and saved as `step_sizes.json` and `step_sizes.csv`.

*Slices*: L(W + a·W1) on a 1-D grid and L(W + a·W1 + b·W2) on a 2-D grid, a, b ∈ [−extent,
extent], along directions W1, W2 drawn from the seed's `landscape` stream and scaled to unit
norm over all parameters (so `a` is a distance in weight space). The grid is one vmapped
program (`lax.map` in batches of `--batch_size` points). Saved as `landscape.npz` (the grids
and losses), `landscape.json` (what was computed) and `landscape_1d.png`, `landscape_2d.png` (drawn by `hinge_jax.plots`).
The SVM objective is piecewise linear and convex along any line; softmax is smooth.

W is W0 = init_scale·randn (the run's initialization) or the parameters in `--params`
(a run's `params.npz`). The objective is the config's (mean data loss + λR) on the first
`--num_examples` training examples (0: all).
"""

import csv
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from hinge_jax import cli_utils, config_lib, datasets, io_utils, model, plots, results
from hinge_jax.errors import UserError
from hinge_jax.objective import objective
from hinge_jax.streams import stream_key
from hinge_jax.train import Spec

Array = jax.Array


def unit_directions(key: Array, params, num: int) -> list:
  """`num` random directions shaped like `params`, each of unit norm over all leaves."""
  out = []
  for k in jax.random.split(key, num):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(k, len(leaves))
    d = [jax.random.normal(kk, leaf.shape, leaf.dtype) for kk, leaf in zip(keys, leaves)]
    norm = jnp.sqrt(sum(jnp.sum(x * x) for x in d))
    out.append(jax.tree.unflatten(treedef, [x / norm for x in d]))
  return out


def step_size_losses(f, params, learning_rates: Array) -> tuple[Array, Array]:
  """f(params) and f(params − η·∇f(params)) for every η, in one vmapped call.

  Args:
    f: params → scalar objective (full batch).
    params: the point.
    learning_rates: `(M,)` step sizes.

  Returns:
    `(loss before, (M,) losses after one step)`.
  """
  loss, grads = jax.value_and_grad(f)(params)
  after = jax.vmap(lambda lr: f(jax.tree.map(lambda p, g: p - lr * g, params, grads)))(
      learning_rates)
  return loss, after


def slice_losses(f, params, directions: list, coords: Array, *, batch_size: int = 64) -> Array:
  """f(params + Σ_k coords[..., k]·directions[k]) over a grid of coordinates.

  Args:
    f: params → scalar.
    params: the centre.
    directions: K params-shaped directions.
    coords: `(..., K)` grid of coefficients.
    batch_size: grid points evaluated together under vmap.

  Returns:
    Losses of shape `coords.shape[:-1]`.
  """
  flat = coords.reshape(-1, coords.shape[-1])

  def one(c):
    moved = params
    for k, d in enumerate(directions):
      moved = jax.tree.map(lambda p, dd, ck=c[k]: p + ck * dd, moved, d)
    return f(moved)
  losses = jax.lax.map(one, flat, batch_size=min(batch_size, flat.shape[0]))
  return losses.reshape(coords.shape[:-1])


def objective_on_train(config, dataset, *, num_examples: int = 0, params_path: str = ''):
  """(f, params): the config's objective on the training set (first `num_examples`), and W."""
  n = dataset.size('train') if num_examples <= 0 else min(num_examples, dataset.size('train'))
  x = datasets.preprocess(jnp.asarray(dataset.x['train'][:n]), dataset.mean, dataset.scale,
                          bias_trick=dataset.bias_trick)
  y = jnp.asarray(dataset.y['train'][:n])
  hp_np = config_lib.hyper_arrays([config])
  spec = Spec.create(config, dataset, hp_np)
  hp = {k: jnp.asarray(v[0]) for k, v in hp_np.items()}
  if params_path:
    try:
      with np.load(params_path, allow_pickle=False) as fh:
        params = {k: jnp.asarray(fh[k], jnp.float32) for k in fh.files}
    except (OSError, ValueError) as e:
      raise UserError(f'--params={params_path!r} could not be read as .npz ({e}); give a '
                      f'params.npz written by a run')
    want = (dataset.num_classes, dataset.num_features)
    if 'W' not in params or tuple(params['W'].shape) != want:
      raise UserError(f'--params={params_path!r} holds no W of shape {want} for this config')
  else:
    params = model.init_params(stream_key(int(config.seed), 'init'), dataset.num_features,
                               dataset.num_classes, scale=float(config.init_scale),
                               use_bias=not dataset.bias_trick)
  return (lambda p: objective(p, x, y, hp, spec=spec)), params, n


def step_size_table(f, params, lr_min: float, lr_max: float, num: int) -> dict:
  """The table as a dict: `loss_before`, `learning_rates`, `losses`, `best`."""
  if not (0 < lr_min <= lr_max) or num < 1:
    raise UserError(f'step sizes need 0 < lr_min <= lr_max and num_lrs >= 1 (got {lr_min:g}, '
                    f'{lr_max:g}, {num})')
  lrs = np.logspace(np.log10(lr_min), np.log10(lr_max), num).astype(np.float32)
  before, after = jax.jit(step_size_losses, static_argnums=0)(f, params, jnp.asarray(lrs))
  after = np.asarray(after, np.float64)
  best = int(np.nanargmin(np.where(np.isfinite(after), after, np.nan))) if np.isfinite(
      after).any() else None
  return {'loss_before': float(before), 'learning_rates': lrs.astype(np.float64).tolist(),
          'losses': after.tolist(), 'best_learning_rate': None if best is None else float(lrs[best]),
          'best_loss': None if best is None else float(after[best])}


def format_step_table(t: dict) -> str:
  lines = [f'step-size table: loss after one full-batch gradient step from {t["loss_before"]:.6f}',
           f'  {"learning rate":>13}  {"loss after":>14}  {"change":>11}']
  for lr, loss in zip(t['learning_rates'], t['losses']):
    lines.append(f'  {lr:>13.0e}  {loss:>14.6f}  {loss - t["loss_before"]:>+11.3e}')
  if t['best_learning_rate'] is not None:
    lines.append(f'best: {t["best_learning_rate"]:.0e} → {t["best_loss"]:.6f}')
  return '\n'.join(lines)


def step_table_csv(t: dict) -> str:
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator='\n')
  w.writerow(['learning_rate', 'loss_after', 'loss_before'])
  for lr, loss in zip(t['learning_rates'], t['losses']):
    w.writerow([f'{lr:.6g}', f'{loss:.9g}', f'{t["loss_before"]:.9g}'])
  return buf.getvalue()


def slices(f, params, seed: int, *, extent: float, num_1d: int, num_2d: int,
           batch_size: int = 64) -> dict:
  """The 1-D and 2-D slices along seeded unit directions (numpy arrays)."""
  if not extent > 0 or num_1d < 3 or num_2d < 3:
    raise UserError(f'landscape slices need extent > 0, num_1d >= 3 and num_2d >= 3 (got '
                    f'{extent:g}, {num_1d}, {num_2d})')
  d1, d2 = unit_directions(stream_key(seed, 'landscape'), params, 2)
  a = jnp.linspace(-extent, extent, num_1d)
  b = jnp.linspace(-extent, extent, num_2d)
  grid = jnp.stack(jnp.meshgrid(b, b, indexing='ij'), axis=-1)  # [i, j] = (a_i, b_j)
  run = jax.jit(lambda dirs, c: slice_losses(f, params, dirs, c, batch_size=batch_size))
  loss_1d = run([d1], a[:, None])
  loss_2d = run([d1, d2], grid)
  return {'a': np.asarray(a), 'loss_1d': np.asarray(loss_1d), 'a_2d': np.asarray(b),
          'b_2d': np.asarray(b), 'loss_2d': np.asarray(loss_2d)}


def run(config, workdir: str, *, mode: str = 'all', params_path: str = '',
        num_examples: int = 0, lr_min: float = 1e-10, lr_max: float = 1e-1, num_lrs: int = 10,
        extent: float = 10.0, num_1d: int = 201, num_2d: int = 41, batch_size: int = 64,
        log=print, dataset=None) -> dict:
  """Computes and saves what `mode` asks for (`all`, `step_sizes`, `slices`) in `workdir`."""
  if mode not in ('all', 'step_sizes', 'slices'):
    raise UserError(f'--mode={mode!r} is not known; choose one of: all, slices, step_sizes')
  config_lib.validate(config)
  results.prepare_workdir(workdir)
  dataset = dataset if dataset is not None else datasets.load(config.dataset)
  f, params, n = objective_on_train(config, dataset, num_examples=num_examples,
                                    params_path=params_path)
  where = params_path or f'W0 = {float(config.init_scale):g}·randn'
  out = {'point': where, 'num_examples': n}
  if mode in ('all', 'step_sizes'):
    t = step_size_table(f, params, lr_min, lr_max, num_lrs)
    io_utils.write_json(os.path.join(workdir, 'step_sizes.json'), t)
    io_utils.write_atomic(os.path.join(workdir, 'step_sizes.csv'), step_table_csv(t))
    log(format_step_table(t))
    out['step_sizes'] = t
  if mode in ('all', 'slices'):
    s = slices(f, params, int(config.seed), extent=extent, num_1d=num_1d, num_2d=num_2d,
               batch_size=batch_size)
    tmp = os.path.join(workdir, 'landscape.tmp.npz')
    np.savez(tmp, **s)
    os.replace(tmp, os.path.join(workdir, 'landscape.npz'))
    title = f'{config.loss.name} + {config.reg.strength:g}·{config.reg.name} at {os.path.basename(where)}'
    pngs = plots.draw_landscape(s, workdir, title)
    meta = {'point': where, 'num_examples': n, 'extent': extent, 'num_1d': num_1d,
            'num_2d': num_2d, 'seed': int(config.seed), 'stream': 'landscape',
            'loss_at_centre': float(f(params)), 'min_1d': float(np.min(s['loss_1d'])),
            'min_2d': float(np.min(s['loss_2d'])), 'files': ['landscape.npz'] + [
                os.path.basename(p) for p in pngs]}
    io_utils.write_json(os.path.join(workdir, 'landscape.json'), meta)
    log(f'landscape: 1-D slice ({num_1d} points) and 2-D slice ({num_2d}×{num_2d}) along unit '
        f'directions, a, b ∈ [−{extent:g}, {extent:g}], loss at the centre '
        f'{meta["loss_at_centre"]:.6f}; saved {", ".join(meta["files"])} in {workdir}')
    out['slices'] = s
  return out


_CONFIG = None


def main(argv) -> None:
  del argv
  fl = flags.FLAGS
  run(_CONFIG.value, fl.workdir or '', mode=fl.mode, params_path=fl.params,
      num_examples=fl.num_examples, lr_min=fl.lr_min, lr_max=fl.lr_max, num_lrs=fl.num_lrs,
      extent=fl.extent, num_1d=fl.num_1d, num_2d=fl.num_2d, batch_size=fl.batch_size)


def cli() -> None:
  """`python -m hinge_jax.landscape --config=... --workdir=DIR`."""
  global _CONFIG
  flags.DEFINE_string('workdir', None, 'Directory for the tables, data and plots.')
  flags.DEFINE_enum('mode', 'all', ['all', 'step_sizes', 'slices'], 'What to compute.')
  flags.DEFINE_string('params', '', 'Centre at the parameters in this .npz (default: W0).')
  flags.DEFINE_integer('num_examples', 0, 'Training examples in the objective (0: all).')
  flags.DEFINE_float('lr_min', 1e-10, 'Smallest step size of the table.')
  flags.DEFINE_float('lr_max', 1e-1, 'Largest step size of the table.')
  flags.DEFINE_integer('num_lrs', 10, 'Log-spaced step sizes in the table.')
  flags.DEFINE_float('extent', 10.0, 'Slices span a, b ∈ [−extent, extent] (unit directions).')
  flags.DEFINE_integer('num_1d', 201, 'Points of the 1-D slice.')
  flags.DEFINE_integer('num_2d', 41, 'Points per side of the 2-D slice.')
  flags.DEFINE_integer('batch_size', 64, 'Grid points evaluated together under vmap.')
  flags.mark_flag_as_required('workdir')
  _CONFIG = cli_utils.config_flag()
  cli_utils.run(main)


if __name__ == '__main__':
  cli()
