"""One experiment from a config to a workdir: config.json, metrics.jsonl, results.json.

A run is resumable: checkpoints go to `workdir/checkpoints/` every `checkpoint_every_steps`
and at the end, and running the same command again continues from the latest one (a
finished run is only re-summarized). SIGINT/SIGTERM end the current compiled chunk, save a
checkpoint and stop; a second signal ends the process at once. The run holds an exclusive
lock on its workdir (`io_utils.WorkdirLock`): a second run there stops in one line. A workdir
holding a run of another config is refused unless `overwrite`. Besides the JSON files the run writes TensorBoard events
(`workdir/tensorboard/`) and pictures (`workdir/plots/`); the files are written by
`hinge_jax.results`, as a sweep's are.

A run can span several processes (`hinge_jax/distributed.py`) when its rows lie over every
process's devices (`mesh.data`): process 0 takes the lock and writes the workdir, the others
write to a scratch folder, and all of them save and restore the checkpoints together, in the
workdir's `checkpoints/` (orbax writes each array's shards from the process that holds them).
"""

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from hinge_jax import config_lib, datasets, io_utils, metadata, results as outputs, sanity
from hinge_jax import distributed, initial, mesh, strategies
from hinge_jax.checkpoint import Checkpointer, fingerprint
from hinge_jax.convergence import Convergence, final_fields
from hinge_jax.errors import DivergedError, Interrupted, UserError
from hinge_jax.progress import Progress
from hinge_jax.summary import SummaryLog, flat_hparams
from hinge_jax.train import Trainer, check_fits

OUTPUTS = outputs.OUTPUTS  # what a run writes into its workdir (what --overwrite removes)
disk_errors = outputs.disk_errors


def describe(config: ml_collections.ConfigDict, dataset) -> str:
  """One line: the data, the objective, the optimizer, the steps, the device."""
  full_batch = (int(config.batch_size) == 0
                or strategies.get(config.get('strategy', 'sgd')).full_batch)
  stop = config.get('stop') or {}
  n = stop.get('max_steps') or config.num_steps
  steps = f'{n} full-batch steps' if full_batch else f'{n} steps of {config.batch_size}'
  if stop.get('tol') is not None or stop.get('grad_tol') is not None:
    steps = 'at most ' + steps
  return (f'{dataset.name}: {dataset.size("train")} train / {dataset.size("val")} val / '
          f'{dataset.size("test")} test, D={dataset.num_features}, C={dataset.num_classes}; '
          f'{config.loss.name} + {config.reg.strength:g}·{config.reg.name}, '
          f'{optimizer_text(config)}, {steps} on {jax.default_backend()}')


def optimizer_text(config: ml_collections.ConfigDict) -> str:
  """'momentum lr=0.05', or 'lbfgs (line search)': L-BFGS takes no learning rate."""
  name = config.optimizer.name
  if name == 'lbfgs':
    return f'lbfgs (line search, memory {config.optimizer.get("memory_size", 10)})'
  return f'{name} lr={config.optimizer.learning_rate:g}'


def summarize(trainer: Trainer, params, k: int = 0) -> dict:
  """Final metrics of member k on every split: accuracy, loss, per-class accuracy, confusion."""
  return {split: outputs.split_summary(trainer.evaluate(params, split), k,
                                       trainer.data.size(split))
          for split in datasets.SPLITS}


# What a run's second signal and disk error lines say comes next (a sweep says its own).
RESUMES = 'rerun the same command to resume from the last checkpoint'


def exit_now(signum: int, then: str = RESUMES) -> None:
  """A second signal: one line, then the process ends at once (no checkpoint, no cleanup)."""
  name = signal.Signals(signum).name
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os.write(2, f'stopped: second {name}, exiting at once; {then}\n'.encode())
  os._exit(128 + signum)  # the kernel releases the workdir's lock


class StopSignals:
  """SIGINT/SIGTERM set `signum` instead of killing the process (main thread only).

  The handler only records the signal: a compiled chunk cannot be interrupted, so the loop
  checks `signum` at the next chunk boundary, saves a checkpoint and stops. A second signal
  (while the first is handled, e.g. during the save) ends the process at once (`exit_now`).
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self, then: str = RESUMES):
    self.signum = 0
    self._then = then  # the second signal's line: what the user does next
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum:
      exit_now(signum, self._then)
    self.signum = signum

  def __enter__(self) -> 'StopSignals':
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.getsignal(sig)
        signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       log=print, *, overwrite: bool = False) -> dict:
  """Trains the configured linear classifier and writes its outputs to `workdir`.

  Resumes from the latest checkpoint in `workdir` when it holds a run of the same config
  (`overwrite` starts afresh instead). Returns the results dict (also in `results.json`).
  Raises `UserError` for bad input (before training) and for a full or read-only disk at any
  writer (one line; rerunning resumes), `Interrupted` after saving a checkpoint when
  SIGINT/SIGTERM arrived, and `DivergedError` after writing results when the loss became
  NaN/inf. In a multi-process run every process calls it; process 0 writes `workdir`.
  """
  wall_start = time.perf_counter()
  config_lib.validate(config)
  checkpoints = os.path.join(workdir, 'checkpoints') if workdir else ''
  if not distributed.is_writer():  # outputs to a scratch folder; the checkpoints are shared
    with tempfile.TemporaryDirectory(prefix='hinge_jax_scratch_') as scratch:
      return _locked(config, scratch, lambda *_: None, True, wall_start,
                     os.path.abspath(checkpoints))
  return _locked(config, workdir, log, overwrite, wall_start, checkpoints)


def in_every_process(fn: Callable[[], Any]) -> Any:
  """`fn()`, set-up that may stop some processes only (process 0's workdir lock, its previous
  run): when any process raises `UserError` there, every process stops in one line instead of
  waiting for it at the next collective. All processes must call it together."""
  error, failed = None, 0
  try:
    out = fn()
  except UserError as e:
    error, failed = e, jax.process_index() + 1
  first = distributed.agreed_max(failed)
  if error is not None:
    raise error
  if first:
    raise UserError(f'process {first - 1} stopped before training (its error line says why); '
                    f'fix that and start every process again')
  return out


def _locked(config, workdir: str, log, overwrite: bool, wall_start: float,
            checkpoints: str) -> dict:
  """train_and_evaluate under the workdir's lock, its writers closed quietly on an error."""
  # A second run on this workdir stops at the lock, in one line. The outer StopSignals keeps
  # the handlers until everything is written: a late first signal lets the writing finish, a
  # second one exits at once (the training loop nests its own, which stops at a chunk's end).
  closers = []  # the open writers' close(quiet=True): run when the run ends in an error
  with contextlib.ExitStack() as stack:
    def lock():
      outputs.prepare_workdir(workdir)
      stack.enter_context(io_utils.WorkdirLock(workdir))
    in_every_process(lock)
    stack.enter_context(StopSignals())
    try:
      with disk_errors(workdir, RESUMES):
        return _train(config, workdir, log, overwrite, wall_start, closers, checkpoints)
    except BaseException:
      for close in reversed(closers):  # quiet: a second failure must not replace the first line
        close(quiet=True)
      raise


def check_spans_processes(config: ml_collections.ConfigDict, dataset) -> None:
  """A single run over several processes must have devices of each: its one member lies on
  the data axis alone, so `mesh.data` must reach into every process's devices."""
  if jax.process_count() == 1:
    return
  split_bytes = sum(dataset.x[s].nbytes + dataset.y[s].nbytes for s in dataset.x)
  layout = mesh.layout_for(config, None, 1, split_bytes, 0)
  used = (layout.mesh.devices.flat if layout.mesh is not None else jax.devices()[:1])
  owners = sorted({d.process_index for d in used})
  if len(owners) < jax.process_count():
    n = len(jax.devices())
    requested = (config.get('mesh') or {}).get('data', 1)
    raise UserError(
        f'a single run over {jax.process_count()} processes must use devices of every one, but '
        f'mesh.data={requested} lays it on {layout.data_shards} device(s) of process(es) '
        f'{", ".join(map(str, owners))}; set --config.mesh.data={n} (its rows over all {n} '
        f'devices), or run one process')


def _train(config, workdir: str, log, overwrite: bool, wall_start: float, closers: list,
           checkpoints: str) -> dict:
  """train_and_evaluate's body, run while this process holds the workdir's lock. Every write
  is under `disk_errors` (one line naming the file); `closers` gets each writer it opens.
  `checkpoints`: the checkpoint directory (process 0's workdir's, for every process)."""
  dataset = datasets.load(config.dataset)
  check_fits(config, dataset)
  check_spans_processes(config, dataset)

  def previous_run():  # process 0's --overwrite clears the checkpoints before anyone reads them
    with disk_errors(workdir, RESUMES):
      outputs.check_previous_run(workdir, config, overwrite=overwrite, log=log)
      outputs.write_config(workdir, config)
  in_every_process(previous_run)
  trainer = Trainer.create(config, dataset, [config])
  log(describe(config, dataset))

  sanity.at_start(config, dataset, workdir, log=log)  # the lecture's checks; sanity.json
  num_steps, every = trainer.spec.last_step, int(config.checkpoint_every_steps)
  config_id = fingerprint(outputs.config_record(config))
  seeds = np.asarray(trainer.hp['seed'])
  with disk_errors(checkpoints, RESUMES):
    ckpt = Checkpointer(checkpoints, keep=int(config.checkpoint_keep), log=log)
  closers.append(ckpt.close)
  state = trainer.init()
  if initial.path_of(config):  # W0 from a file (the demo's export) instead of init_scale·randn
    state = state.replace(params=initial.load(initial.path_of(config), state.params))
  restored = ckpt.restore_latest(state, seeds=seeds, config_fingerprint=config_id)
  start_step, pending, done, saved_rows, saved_record = 0, None, False, None, None
  if restored is not None:
    state, start_step = restored.state, restored.step
    pending = restored.meta['extra'].get('pending')
    done = bool(restored.meta['extra'].get('done'))
    saved_rows = restored.meta['extra'].get('rows')  # None: a checkpoint from before rows
    saved_record = restored.meta['extra'].get('convergence')  # a finished run's
    log(f'resuming from the checkpoint of step {start_step}' + (' (finished run)' if done else ''))
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  with disk_errors(workdir, RESUMES):
    rows = outputs.resume_metrics(metrics_path, start_step, log=log, saved=saved_rows)
  rows = [io_utils.to_jsonable(r) for r in rows]  # every row so far: each checkpoint holds them

  tb_dir = os.path.join(workdir, 'tensorboard')
  with disk_errors(tb_dir, RESUMES):
    tb = SummaryLog(tb_dir, hparams=flat_hparams(config),
                    purge_step=None if done else start_step)
  # On an error, closing flushes what this session logged; a resumed run purges past its
  # checkpoint.
  closers.append(tb.close)
  progress = Progress(num_steps, start_step, log=log)
  train_start = time.perf_counter()
  compile_before = trainer.compile_time_s
  stopped = {'signum': 0, 'step': start_step}

  def save(step, state, **extra):
    with disk_errors(workdir, RESUMES):
      ckpt.save(step, state, seeds=seeds, config_fingerprint=config_id,
                extra={**extra, 'rows': rows})

  def on_eval(step, state, row):
    row = outputs.member_row(row)
    rows.append(io_utils.to_jsonable(row))
    with disk_errors(workdir, RESUMES):
      outputs.append_row(metrics_path, row)
    with disk_errors(tb_dir, RESUMES):
      tb.scalars(step, row)
    progress.evaluation(step, row)

  def on_chunk(step, state, pending):
    progress.advance(step)
    stopped['step'] = step
    if step >= num_steps:
      return True  # the final checkpoint follows
    signum = distributed.agreed_max(signals.signum)  # any process's signal stops them all
    if signum:
      save(step, state, pending=pending)
      stopped['signum'] = signum
      return False
    if every and step % every == 0:
      save(step, state, pending=pending)
    return True

  try:
    with StopSignals() as signals:
      if not done:
        state = trainer.fit(state, start_step=start_step, on_eval=on_eval, chunk_every=every,
                            on_chunk=on_chunk, pending=pending)
      if stopped['signum']:
        name = signal.Signals(stopped['signum']).name
        raise Interrupted(stopped['signum'], stopped['step'],
                          f'{name} at step {stopped["step"]} of {num_steps}: saved a checkpoint '
                          f'in {ckpt.directory}; rerun the same command to resume')
      if not done:
        save(stopped['step'], state, pending=None, done=True,
             convergence=trainer.convergence_record.to_json())
  finally:
    progress.close()
  closers.remove(ckpt.close)
  ckpt.close()  # raises a one-line UserError when the disk failed a write
  train_time = time.perf_counter() - train_start
  compile_in_loop = trainer.compile_time_s - compile_before
  flag, at, params = distributed.to_host((state.diverged, state.diverged_step, state.params))
  diverged, diverged_step = bool(flag[0]), int(at[0])
  final = summarize(trainer, state.params)
  record = trainer.convergence_record if not done else (
      Convergence.from_json(trainer.stop, saved_record) if saved_record else None)
  convergence = final_fields(record, params, config_lib.hyper_arrays([config], np.float64),
                             dataset, spec=trainer.spec,
                             last_step=stopped['step'])[0]
  with disk_errors(workdir, RESUMES):
    outputs.save_params(os.path.join(workdir, 'params.npz'), params)
  saves = ckpt.save_seconds
  results = outputs.run_results(
      final, dataset, config, steps=diverged_step if diverged else stopped['step'],
      convergence=convergence,
      seed=int(config.seed), diverged=diverged, diverged_step=diverged_step if diverged else None,
      compile_time_s=trainer.compile_time_s,
      run_time_s=max(train_time - compile_in_loop, 0.0),
      wall_time_s=time.perf_counter() - wall_start,
      timing={  # this process only: a resumed run reports its last session
          'resumed_from_step': start_step,
          'checkpoint_saves': len(saves),
          'checkpoint_save_s_mean': float(np.mean(saves)) if saves else None,
          'checkpoint_save_s_total': float(np.sum(saves)),
          # chunks run again under a per-step guard: a member diverged in them (train.Trainer)
          'chunk_reruns': trainer.reruns,
          'compilation_cache_dir': jax.config.jax_compilation_cache_dir or None,
      },
      metadata={**metadata.run_metadata(), 'seed': int(config.seed),
                'prng_impl': str(jax.config.jax_default_prng_impl)})
  with disk_errors(workdir, RESUMES):
    outputs.write_results(workdir, results)
  with disk_errors(tb_dir, RESUMES):
    tb.final(results['steps'], {k: results[k] for k in ('train_accuracy', 'val_accuracy',
                                                        'test_accuracy', 'final_loss')})
    closers.remove(tb.close)
    tb.close()
  if distributed.is_writer():  # another process's pictures would go to its scratch folder
    outputs.draw_plots(workdir, results, params, dataset, log=log, resume_hint=RESUMES)
  if diverged:
    raise DivergedError(
        diverged_step,
        f'training diverged at step {diverged_step}: the loss became NaN or infinite; '
        f'lower optimizer.learning_rate (now {config.optimizer.learning_rate:g}). '
        f'Results (diverged: true) are in {workdir}/results.json')
  log(f'done in {results["wall_time_s"]:.1f} s (compile {trainer.compile_time_s:.1f} s, '
      f'train {results["run_time_s"]:.1f} s): '
      f'train_acc {results["train_accuracy"]:.4f}  val_acc {results["val_accuracy"]:.4f}  '
      f'test_acc {results["test_accuracy"]:.4f}  final_loss {results["final_loss"]:.4f}')
  log(convergence_line(convergence))
  return results


def convergence_line(c: dict) -> str:
  """One line: converged or not, the float64 objective, its gradient norm, the last window."""
  number = lambda v: 'n/a' if v is None else f'{v:.3g}'
  state = f'converged at step {c["steps"]}' if c['converged'] else (
      f'not converged (stopped at step {c["steps"]})')
  return (f'convergence: {state}; objective {number(c["objective"])} (float64), '
          f'gradient norm {number(c["grad_norm"])}, decrease over the last window '
          f'{number(c["window_decrease"])}')
