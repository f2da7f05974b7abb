"""The linear-probe protocol: a softmax classifier on fixed features, λ chosen by validation.

As representation-learning papers evaluate embeddings (`configs/probe.py`): the features come
from `dataset.name='npy'`; every λ of a log grid (`probe.*`) is one member of a sweep over
`reg.strength`, all trained in one vmapped program by L-BFGS to convergence (`stop.*`); λ is
the member with the best validation accuracy (the sweep's rule, ties to the lower objective);
`probe.refit=True` then retrains on train + val at the chosen λ's scikit-learn C, and the test
accuracy is that model's. Outputs: the sweep's (sweep.csv, sweep.json, the chosen member's
results.json and params.npz), probe.json (grid, accuracies, chosen λ, test accuracy, refit),
probe_params.npz (the refit model) and plots/probe.png (validation accuracy over λ).
"""

import contextlib
import math
import os
import signal
import time

import jax
import ml_collections
import numpy as np

from hinge_jax import config_lib, datasets, distributed, experiment, io_utils, plots, results
from hinge_jax import sweep
from hinge_jax.convergence import final_fields
from hinge_jax.datasets import lazy, rows as data_rows
from hinge_jax.datasets.base import finalize
from hinge_jax.datasets.loaders import common
from hinge_jax.errors import ConfigError, DataError, Interrupted
from hinge_jax.train import Trainer, check_fits

PLOT_SIZE = (6.4, 4.0)  # inches: 640×400 pixels
_GRID_HINT = ('set probe.lambda_min > 0, probe.lambda_max >= lambda_min and probe.num_lambdas '
              '>= 1, or list positive values in probe.lambdas')


def is_probe(config: ml_collections.ConfigDict) -> bool:
  """Whether the config asks for the probe protocol (it has a `probe` block)."""
  return config.get('probe') is not None


def _number(text: str) -> float:
  try:
    return float(text)
  except ValueError:
    raise ConfigError(f'probe.lambdas: {text.strip()!r} is not a number; {_GRID_HINT}')


def lambdas(config: ml_collections.ConfigDict) -> list[float]:
  """The λ grid: `probe.lambdas` ('1e-4,1e-3,...') if given, else `probe.num_lambdas` values
  log-spaced from `probe.lambda_min` to `probe.lambda_max`. Empty or non-positive: one line."""
  p = config.probe
  text = str(p.get('lambdas', '') or '')
  if text.strip():
    grid = [_number(v) for v in text.split(',') if v.strip()]
    if not grid:
      raise ConfigError(f'probe.lambdas={text!r} holds no value: the λ grid is empty; '
                        f'{_GRID_HINT}')
    bad = [v for v in grid if not (math.isfinite(v) and v > 0)]
    if bad:
      raise ConfigError(f'probe.lambdas holds {bad[0]:g}: the λ grid is on a log scale, every '
                        f'value must be positive and finite; {_GRID_HINT}')
    return grid
  n = p.get('num_lambdas', 0)
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ConfigError(f'probe.num_lambdas={n!r}: the λ grid is empty; {_GRID_HINT}')
  low, high = p.get('lambda_min'), p.get('lambda_max')
  for name, v in (('lambda_min', low), ('lambda_max', high)):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
      raise ConfigError(f'probe.{name}={v!r}: the λ grid is on a log scale, its bounds must be '
                        f'positive; {_GRID_HINT}')
  if low > high:
    raise ConfigError(f'probe.lambda_min={low:g} is above probe.lambda_max={high:g}; swap them')
  return [float(v) for v in np.geomspace(low, high, n)] if n > 1 else [float(low)]


def check(config: ml_collections.ConfigDict) -> list[float]:
  """The probe's own fields, before anything is loaded: the grid, `refit`, no sweep declared."""
  grid = lambdas(config)
  if not isinstance(config.probe.get('refit', False), bool):
    raise ConfigError(f'probe.refit={config.probe.refit!r} must be True or False')
  if sweep.is_sweep(config):
    raise ConfigError('the probe sweeps reg.strength over its λ grid itself; clear sweep.grid, '
                      'sweep.zip and sweep.random, and set probe.lambdas or probe.lambda_min/'
                      'lambda_max/num_lambdas')
  return grid


def check_validation(config: ml_collections.ConfigDict) -> None:
  """λ is chosen on the validation split: the data must have one (loaded and checked here,
  before anything is compiled; memory-mapped features are only read)."""
  dataset = datasets.load(config.dataset)
  if dataset.size('val') == 0:
    raise DataError(f'{dataset.name}: the validation split is empty, and the probe chooses λ '
                    f'by validation accuracy; give x_val/y_val, or set dataset.val_fraction > 0')


def sweep_config(config: ml_collections.ConfigDict, grid: list) -> ml_collections.ConfigDict:
  """The probe as a sweep: one member per λ (`repr` keeps every float exactly)."""
  return config_lib.with_fields(config, {
      'sweep.grid': 'reg.strength=' + ','.join(repr(float(v)) for v in grid)})


def sklearn_c(strength: float, num_train: int) -> float:
  """scikit-learn's C for λ: ½‖W‖² + C·Σloss = (mean loss + λ‖W‖²)·C·N when λ = 1/(2·C·N)."""
  return 1.0 / (2.0 * strength * num_train)


def train_plus_val(config: ml_collections.ConfigDict, dataset):
  """The dataset with val joined to train (one host copy; several processes: a lazy join,
  each reads its rows), its mean recomputed; val empty."""
  join = lazy.concat if data_rows.several() else lambda a, b: np.concatenate([a, b])
  x = {'train': join(dataset.x['train'], dataset.x['val']),
       'val': lazy.rows(dataset.x['val'], 0, 0), 'test': dataset.x['test']}
  y = {'train': join(dataset.y['train'], dataset.y['val']),
       'val': lazy.rows(dataset.y['val'], 0, 0), 'test': dataset.y['test']}
  return finalize(dataset.name, x, y, num_classes=dataset.num_classes,
                  image_shape=dataset.image_shape, class_names=dataset.class_names,
                  **common(config.dataset))


def refit(config: ml_collections.ConfigDict, strength: float, workdir: str, log=print) -> dict:
  """Trains one model on train + val at the chosen λ's C (λ·N_train/(N_train + N_val)) and
  tests it; its parameters go to probe_params.npz (process 0's). Over several processes the
  one model's rows lie over every process's devices (`mesh.data` = all of them)."""
  dataset = datasets.load(config.dataset)
  n_train, n_val = dataset.size('train'), dataset.size('val')
  joined = train_plus_val(config, dataset)
  del dataset
  scaled = strength * n_train / (n_train + n_val)
  fields = {'reg.strength': scaled}
  if jax.process_count() > 1:
    fields['mesh.data'] = len(jax.devices())
  member = config_lib.with_fields(config, fields)
  check_fits(member, joined)
  trainer = Trainer.create(member, joined, [member])
  reached = [0]
  with experiment.StopSignals() as signals:
    def on_chunk(step, state, pending):
      reached[0] = step
      return not signals.signum
    state = trainer.fit(trainer.init(), on_chunk=on_chunk)
    if signals.signum:
      name = signal.Signals(signals.signum).name
      raise Interrupted(signals.signum, reached[0],
                        f'{name} at step {reached[0]} of the refit: the probe was stopped; rerun '
                        f'the same command with --overwrite to redo it')
  final = experiment.summarize(trainer, state.params)
  params = distributed.to_host(state.params)
  convergence = final_fields(trainer.convergence_record, params,
                             config_lib.hyper_arrays([member], np.float64), joined,
                             spec=trainer.spec, last_step=reached[0])[0]
  if distributed.is_writer():
    results.save_params(os.path.join(workdir, 'probe_params.npz'), params)
  log(f'refit on train + val ({joined.size("train")} examples) at reg.strength={scaled:g}: '
      f'test_acc {final["test"]["accuracy"]:.4f}; {experiment.convergence_line(convergence)}')
  return {'reg_strength': scaled, 'sklearn_C': sklearn_c(scaled, joined.size('train')),
          'train_examples': joined.size('train'), 'convergence': convergence,
          'train_accuracy': float(final['train']['accuracy']),
          'test_accuracy': float(final['test']['accuracy']),
          'final_loss': float(final['train']['loss']),
          'diverged': bool(np.asarray(state.diverged)[0])}


def probe_figure(grid: list, rows: list, chosen: int):
  """Validation (and training) accuracy over λ on a log axis, the chosen λ marked."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib loads on demand
  from matplotlib.figure import Figure
  fig = Figure(figsize=PLOT_SIZE, dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  acc = lambda key: np.array([np.nan if r[key] is None else r[key] for r in rows], float)
  ax.plot(grid, acc('val_accuracy'), 'o-', label='validation')
  ax.plot(grid, acc('train_accuracy'), '.--', color='gray', label='train')
  ax.axvline(grid[chosen], color='red', lw=1, label=f'chosen λ = {grid[chosen]:.3g}')
  ax.set_xscale('log')
  ax.set_xlabel('λ (reg.strength)')
  ax.set_ylabel('accuracy')
  ax.set_title('linear probe: accuracy over λ')
  ax.legend(loc='best')
  fig.tight_layout()
  return fig


def run(config: ml_collections.ConfigDict, workdir: str, log=print, *,
        overwrite: bool = False) -> dict:
  """The probe protocol from a config to a workdir; returns probe.json's contents."""
  wall_start = time.perf_counter()
  grid = check(config)  # before anything is read or compiled
  check_validation(config)
  summary = sweep.run(sweep_config(config, grid), workdir, log=log, overwrite=overwrite)
  rows, best = summary['members'], summary['best_member']
  chosen = float(rows[best]['reg.strength'])
  n_train = int(summary['train_examples'])
  record = {
      'lambdas': grid,
      'val_accuracy': [r['val_accuracy'] for r in rows],
      'train_accuracy': [r['train_accuracy'] for r in rows],
      'converged': [r.get('converged') for r in rows],
      'steps': [r.get('steps') for r in rows],
      'objective': [r.get('objective') for r in rows],
      'chosen_member': best, 'chosen_lambda': chosen,
      'chosen_sklearn_C': sklearn_c(chosen, n_train),
      'train_examples': n_train,
      'val_accuracy_chosen': rows[best]['val_accuracy'],
      'test_accuracy_train_only': rows[best]['test_accuracy'],
      'refit': None,
  }
  again = 'rerun the same command with --overwrite'
  writer = distributed.is_writer()  # several processes: process 0 writes, all refit
  with contextlib.ExitStack() as stack:
    experiment.in_every_process(
        lambda: writer and stack.enter_context(io_utils.WorkdirLock(workdir)))
    stack.enter_context(results.disk_errors(workdir, again))
    if config.probe.get('refit', False):
      record['refit'] = refit(config, chosen, workdir, log=log)
    record['test_accuracy'] = (record['refit']['test_accuracy'] if record['refit']
                               else record['test_accuracy_train_only'])
    record['wall_time_s'] = time.perf_counter() - wall_start
    record['devices'] = [str(d) for d in jax.devices()]
    if writer:
      io_utils.write_json(os.path.join(workdir, 'probe.json'), record)
      os.makedirs(os.path.join(workdir, 'plots'), exist_ok=True)
      plots.save(probe_figure(grid, rows, best), os.path.join(workdir, 'plots', 'probe.png'))
  log(f'probe: chosen λ = {chosen:g} (member {best} of {len(grid)}), val_acc '
      f'{record["val_accuracy_chosen"]:.4f}, test_acc {record["test_accuracy"]:.4f}'
      + (' (refit on train + val)' if record['refit'] else ''))
  return record
