"""Hyperparameter sweeps: many settings of the numeric fields in one compiled program.

A sweep is declared in the config it sweeps, as text that the command line can override:

  config.sweep.grid = 'optimizer.learning_rate=1e-7,5e-5; reg.strength=2.5e4,5e4'  # product
  config.sweep.zip = 'loss.margin=1,2,3; seed=0,1,2'       # varied together, then × grid
  config.sweep.random = 'optimizer.learning_rate=loguniform(1e-8,1e-5); reg.strength=uniform(1e3,1e5)'
  config.sweep.num_samples = 64                            # random points (seeded by sweep.seed)

Every swept field must be numeric and traceable (`config_lib.HYPER_FIELDS`): learning rate and
schedule parameters, regularization strength, margin, momentum/betas, init scale, seed. Each
member is one setting; all members are trained by `jax.vmap` over one step, with the members'
axis sharded over the local devices. Fields that change shapes or code (loss, dataset, batch
size, strategy) are structural: `launch/` expands them into separate runs.
"""

import ast
import math
import os
import re
import signal
import tempfile
import time

import jax
import ml_collections
import numpy as np

from hinge_jax import (config_lib, datasets, distributed, experiment, io_utils, mesh, metadata,
                       plots, results)
from hinge_jax.convergence import FIELDS as CONVERGENCE_FIELDS, final_fields
from hinge_jax.errors import ConfigError, DivergedError, Interrupted
from hinge_jax.train import Spec, Trainer, check_fits

_RANDOM = re.compile(r'^(loguniform|uniform|choice)\((.*)\)$')


def parse_axes(text: str, what: str) -> list[tuple[str, str]]:
  """'a.b=1,2; c=3' → [('a.b', '1,2'), ('c', '3')]: the declaration form of every sweep."""
  out = []
  for part in filter(None, (p.strip() for p in re.split(r'[;\n]', text or ''))):
    if '=' not in part:
      raise ConfigError(f'sweep.{what}: {part!r} is not FIELD=VALUES; write e.g. '
                        f"'optimizer.learning_rate=1e-3,1e-2'")
    field, values = (s.strip() for s in part.split('=', 1))
    out.append((field, values))
  return out


def _literal(text: str, field: str):
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):
    raise ConfigError(f'sweep: {field}={text!r} is not a number')
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ConfigError(f'sweep: {field}={text!r} is not a number')
  return value


def _check_field(config: ml_collections.ConfigDict, field: str) -> None:
  config_lib.get_field(config, field)  # raises for a field that does not exist
  if field not in config_lib.HYPER_FIELDS:
    raise ConfigError(
        f'sweep field {field!r} cannot be traced as an array (it changes shapes or code); '
        f'sweep it as a structural sweep with launch/ (python -m launch.run); traceable fields: '
        f'{", ".join(config_lib.HYPER_FIELDS)}')


def _values(config, field: str, text: str) -> list:
  _check_field(config, field)
  values = [_literal(v, field) for v in text.split(',') if v.strip()]
  if not values:
    raise ConfigError(f'sweep: {field} has no values; give at least one')
  return values


def _sample(config, field: str, text: str, n: int, rng: np.random.Generator) -> list:
  _check_field(config, field)
  match = _RANDOM.match(text.replace(' ', ''))
  if not match:
    raise ConfigError(f'sweep.random: {field}={text!r} must be loguniform(low,high), '
                      f'uniform(low,high) or choice(v1,v2,...)')
  kind, args = match.group(1), [_literal(a, field) for a in match.group(2).split(',') if a]
  if kind == 'choice':
    if not args:
      raise ConfigError(f'sweep.random: {field}=choice() has no values')
    return [args[i] for i in rng.integers(0, len(args), n)]
  if len(args) != 2:
    raise ConfigError(f'sweep.random: {field}={kind}(...) takes two bounds, low and high')
  low, high = args
  if low > high:
    raise ConfigError(f'sweep.random: {field}={kind}({low},{high}) has low > high; swap them')
  if kind == 'loguniform':
    if low <= 0:
      raise ConfigError(f'sweep.random: {field}=loguniform({low},{high}) needs positive bounds '
                        f'on a log scale; use uniform(...) or a positive low')
    return list(np.exp(rng.uniform(math.log(low), math.log(high), n)))
  return list(rng.uniform(low, high, n))


def is_sweep(config: ml_collections.ConfigDict) -> bool:
  """Whether the config declares any swept field."""
  s = config.get('sweep')
  return bool(s and (s.get('grid') or s.get('zip') or s.get('random')))


def expand(config: ml_collections.ConfigDict) -> list[dict]:
  """The members of the declared sweep: one `{field: value}` per member, in a fixed order.

  Order: zip groups (fastest-varying last) × grid axes (product, in declaration order), then
  random samples — each random sample is combined with every grid/zip point.
  """
  s = config.sweep
  grid = [(f, _values(config, f, v)) for f, v in parse_axes(s.get('grid', ''), 'grid')]
  zipped = [(f, _values(config, f, v)) for f, v in parse_axes(s.get('zip', ''), 'zip')]
  lengths = {len(v) for _, v in zipped}
  if len(lengths) > 1:
    raise ConfigError(f'sweep.zip: every field needs the same number of values; got '
                      + ', '.join(f'{f}: {len(v)}' for f, v in zipped))
  seen = [f for f, _ in grid + zipped]
  points = [{}]
  if zipped:
    points = [dict(zip([f for f, _ in zipped], vals)) for vals in zip(*[v for _, v in zipped])]
  for field, values in grid:
    points = [{**p, field: v} for p in points for v in values]
  random_axes = parse_axes(s.get('random', ''), 'random')
  if random_axes:
    n = int(s.get('num_samples', 0))
    if n <= 0:
      raise ConfigError(f'sweep.num_samples={n}: a random sweep needs num_samples >= 1')
    rng = np.random.default_rng(int(s.get('seed', 0)))
    samples = {f: _sample(config, f, v, n, rng) for f, v in random_axes}
    seen += list(samples)
    points = [{**p, **{f: samples[f][i] for f in samples}} for i in range(n) for p in points]
  duplicates = {f for f in seen if seen.count(f) > 1}
  if duplicates:
    raise ConfigError(f'sweep: {", ".join(sorted(duplicates))} is swept twice; declare each '
                      f'field once')
  if not points or not points[0]:
    raise ConfigError('the sweep is empty: sweep.grid, sweep.zip and sweep.random name no field')
  limit = int(s.get('max_members', 4096))
  if len(points) > limit and not s.get('confirm', False):
    raise ConfigError(f'the sweep has {len(points)} members, more than sweep.max_members={limit}; '
                      f'set --config.sweep.confirm=True (or raise max_members) to run it')
  return points


def member_config(config: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
  """The base config with one member's values written in (the seed as an int)."""
  return config_lib.with_fields(config, {
      field: int(value) if field == 'seed' else float(value) for field, value in values.items()})


def member_bytes(spec: Spec, eval_chunk: int) -> int:
  """Rough device bytes one member needs while training and evaluating (float32).

  Parameters, gradients, updates and up to two optimizer slots (D·C each; L-BFGS: its
  memory), and the chunk's input copy of the parameters and slots that a deferred guard
  keeps for a rerun (`train.Tuning.guard`); the member's scores on a batch and an eval
  chunk; its own minibatch when members do not share one.
  """
  dc = spec.num_features * spec.num_classes
  per = 4 * (8 * dc + spec.batch_size * spec.num_classes * 4 + eval_chunk * spec.num_classes * 2)
  if not (spec.shared_data or spec.full_batch):
    per += 4 * spec.batch_size * spec.num_features * 2  # gathered batch, as float
  if spec.optimizer == 'lbfgs':  # its memory (past steps and gradients), the line search's
    per += 4 * (2 * spec.memory_size + 4) * dc  # point, gradient and direction
  return per


def device_budget_bytes(config) -> int:
  """Bytes a sweep may use on one device: `sweep.memory_budget_bytes`, else what it has free."""
  budget = int(config.sweep.get('memory_budget_bytes', 0) or 0)
  if budget:
    return budget
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(0.7 * (stats['bytes_limit'] - stats.get('bytes_in_use', 0)))
  try:  # CPU: the host's available memory, shared by the devices
    avail = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError):
    avail = 8 << 30
  return int(0.5 * avail / max(len(jax.local_devices()), 1))


def sweep_devices(config) -> list:
  """The devices the members are sharded over: the first `sweep.devices` (0: all, of every
  process of a multi-process run)."""
  devices = jax.devices()
  n = int(config.sweep.get('devices', 0) or 0)
  if n < 0 or n > len(devices):
    raise ConfigError(f'sweep.devices={n}: the run has {len(devices)} '
                      f'{jax.default_backend()} device(s); use 0 (all) to {len(devices)}')
  return devices[:n] if n else devices


def members_per_program(config, spec: Spec, eval_chunk: int, data_bytes: int, total: int,
                        n_dev: int, shards: int = 1) -> int:
  """How many members fit in one program (a multiple of the members axis when sharded).

  With `shards` devices on the data axis a device holds 1/`shards` of the splits and the
  members go over the other `n_dev // shards` devices.
  """
  forced = int(config.sweep.get('members_per_program', 0) or 0)
  if forced:
    return min(forced, total)
  member_devices = max(n_dev // shards, 1)
  # every process's smallest budget, less this device's share of the splits
  free = distributed.agreed_min(device_budget_bytes(config)) - -(-data_bytes // shards)
  fit = max(free // member_bytes(spec, eval_chunk), 1) * member_devices
  if fit >= total:
    return total
  return max(fit // member_devices * member_devices, 1)


def _row(values: dict, k: int, final: dict, diverged: bool, step: int,
         convergence: dict) -> dict:
  row = {'member': k, **values}
  for split in datasets.SPLITS:
    row[f'{split}_accuracy'] = final[split]['accuracy']
  row['final_loss'] = final['train']['loss']
  row['diverged'] = diverged
  row['diverged_step'] = step if diverged else None
  row.update(convergence)  # converged, steps, objective, grad_norm, window_decrease
  return row


def best_member(rows: list[dict]) -> int:
  """Index of the best member: highest validation accuracy, then lowest final loss."""
  def key(r):
    acc = r['val_accuracy'] if r['val_accuracy'] is not None and np.isfinite(r['val_accuracy']) else -1
    loss = r['final_loss'] if r['final_loss'] is not None and np.isfinite(r['final_loss']) else np.inf
    return (not r['diverged'], acc, -loss)
  return max(range(len(rows)), key=lambda i: key(rows[i]))


# What a second signal's and a disk error's line say comes next: a sweep keeps no checkpoint.
RESTART = 'rerun the same command to restart the sweep (a sweep keeps no checkpoint)'


def run(config: ml_collections.ConfigDict, workdir: str, log=print, overwrite: bool = False
        ) -> dict:
  """Trains every member of the declared sweep and writes sweep.csv/json and the best run.

  A sweep is not checkpointed: rerunning it retrains every member (a workdir holding another
  config is refused unless `overwrite`; one that another run holds is refused). In a
  multi-process run process 0 writes the workdir; the others write to a scratch folder.
  """
  wall_start = time.perf_counter()
  config_lib.validate(config)
  points = expand(config)
  if not distributed.is_writer():
    with tempfile.TemporaryDirectory(prefix='hinge_jax_scratch_') as scratch:
      return _locked_run(config, points, scratch, lambda *_: None, True, wall_start)
  return _locked_run(config, points, workdir, log, overwrite, wall_start)


def _locked_run(config, points: list[dict], workdir: str, log, overwrite: bool,
                wall_start: float) -> dict:
  results.prepare_workdir(workdir)
  # SIGINT/SIGTERM stop at the end of the current chunk (Interrupted); a second exits at once.
  # A full disk at any writer is one line (the outputs are written after training).
  with io_utils.WorkdirLock(workdir), experiment.StopSignals(RESTART) as signals, \
      results.disk_errors(workdir, RESTART):
    return _run(config, points, workdir, log, overwrite, wall_start, signals)


def _run(config, points: list[dict], workdir: str, log, overwrite: bool, wall_start: float,
         signals) -> dict:
  """run's body, run while this process holds the workdir's lock."""
  dataset = datasets.load(config.dataset)
  check_fits(config, dataset)
  results.check_previous_run(workdir, config, overwrite=overwrite, log=log)
  results.write_config(workdir, config)
  members = [member_config(config, p) for p in points]
  spec = Spec.create(config, dataset, config_lib.hyper_arrays(members))
  devices = sweep_devices(config)
  n_dev = len(devices)
  k_total = len(members)
  data_bytes = sum(dataset.x[s].nbytes + dataset.y[s].nbytes for s in datasets.SPLITS)
  eval_chunk = min(int(config.eval_batch_size), max(dataset.size(s) for s in datasets.SPLITS))
  shards = mesh.shards_for(config, devices, data_bytes, 0)
  per_program = members_per_program(config, spec, eval_chunk, data_bytes, k_total, n_dev,
                                    shards)
  member_devices = n_dev // shards
  if per_program > 1 and per_program % member_devices:  # pad so the members shard evenly
    per_program = -(-per_program // member_devices) * member_devices
  programs = -(-k_total // per_program)
  log(experiment.describe(config, dataset))
  log(f'sweep: {k_total} members, {programs} program(s) of {per_program} on {n_dev} '
      f'{jax.default_backend()} device(s); swept: {", ".join(points[0])}')
  padded = members + [members[-1]] * (programs * per_program - k_total)

  trainer = None
  rows, histories, params_of, finals_of = [], [[] for _ in range(k_total)], {}, {}
  compile_s = 0.0
  for p in range(programs):
    chunk_members = padded[p * per_program:(p + 1) * per_program]
    hp = config_lib.hyper_arrays(chunk_members)
    trainer = (Trainer.create(config, dataset, chunk_members, spec=spec, devices=devices)
               if trainer is None else trainer.with_hyper(hp))
    offset = p * per_program

    def on_eval(step, state, row, offset=offset):
      for j in range(per_program):
        if offset + j < k_total:
          histories[offset + j].append(results.member_row(row, j))
      best = np.nanmax(np.where(row['diverged'], np.nan, row['val_accuracy'])) if not np.all(
          row['diverged']) else float('nan')
      log(f'  program {p + 1}/{programs} step {step}/{config.num_steps}: best val_acc '
          f'{best:.4f}, diverged {int(np.sum(row["diverged"]))}/{per_program}')

    reached, stop = [0], [0]

    def on_chunk(step, state, pending):
      reached[0] = step
      stop[0] = distributed.agreed_max(signals.signum)  # any process's signal stops them all
      return not stop[0]  # a signal ends the sweep at this chunk's end

    state = trainer.fit(trainer.init(), on_eval=on_eval, on_chunk=on_chunk)
    if stop[0]:
      name = signal.Signals(stop[0]).name
      raise Interrupted(stop[0], reached[0],
                        f'{name} at step {reached[0]} of program {p + 1}/{programs}: the sweep '
                        f'was stopped (a sweep keeps no checkpoint); rerun the same command to '
                        f'restart it')
    finals = {split: trainer.evaluate(state.params, split) for split in datasets.SPLITS}
    diverged, dsteps = distributed.to_host((state.diverged, state.diverged_step))
    host_params = distributed.to_host(state.params)
    converged = final_fields(trainer.convergence_record, host_params,
                             config_lib.hyper_arrays(chunk_members, np.float64), dataset,
                             spec=spec, last_step=reached[0])
    for j in range(per_program):
      k = offset + j
      if k >= k_total:
        break
      final = {s: results.split_summary(finals[s], j, trainer.data.size(s))
               for s in datasets.SPLITS}
      finals_of[k] = final
      rows.append(_row(points[k], k, final, bool(diverged[j]), int(dsteps[j]), converged[j]))
      params_of[k] = jax.tree.map(lambda a, j=j: a[j], host_params)
    compile_s = trainer.compile_time_s

  best = best_member(rows)
  summary = {'members': rows, 'best_member': best, 'best': rows[best],
             'swept_fields': list(points[0]), 'train_examples': dataset.size('train'),
             'programs': programs,
             'members_per_program': per_program, 'devices': n_dev,
             'compile_time_s': compile_s, 'wall_time_s': time.perf_counter() - wall_start,
             'chunk_reruns': trainer.reruns,  # chunks rerun: a member diverged (train.Trainer)
             'metadata': metadata.run_metadata(), 'config': config.to_dict()}
  results.write_sweep(workdir, rows, summary)
  _write_best(config, workdir, dataset, members[best], best, rows[best], params_of[best],
              finals_of[best], histories[best], summary, log=log)
  plots.draw_sweep(workdir, rows, list(points[0]))
  log(f'sweep done in {summary["wall_time_s"]:.1f} s (compile {compile_s:.1f} s): best member '
      f'{best} ' + ' '.join(f'{f}={points[best][f]:g}' for f in points[best]) +
      f'  val_acc {rows[best]["val_accuracy"]:.4f}  test_acc {rows[best]["test_accuracy"]:.4f}; '
      f'{sum(r["diverged"] for r in rows)} diverged')
  if all(r['diverged'] for r in rows):
    raise DivergedError(-1, 'every member of the sweep diverged (loss NaN or infinite); lower '
                        f'the learning rates. Results are in {workdir}/sweep.csv')
  return summary


def _write_best(config, workdir, dataset, best_config, best, row, params, final, history,
                summary, log=print):
  """The best member as a normal run's outputs: results.json, params.npz, metrics.jsonl, and
  its pictures (loss, accuracy, weight templates, confusion) in plots/."""
  batched = jax.tree.map(lambda a: np.asarray(a)[None], params)
  results.save_params(os.path.join(workdir, 'params.npz'), batched)
  results.write_metrics(workdir, history)
  best_results = results.run_results(
      final, dataset, best_config,
      steps=row['diverged_step'] if row['diverged'] else row['steps'],
      seed=int(best_config.seed), diverged=row['diverged'],
      diverged_step=row['diverged_step'], sweep_member=best,
      convergence={f: row[f] for f in CONVERGENCE_FIELDS},
      compile_time_s=summary['compile_time_s'], wall_time_s=summary['wall_time_s'],
      metadata=summary['metadata'])
  results.write_results(workdir, best_results)
  results.draw_plots(workdir, best_results, batched, dataset, log=log, resume_hint=RESTART)
