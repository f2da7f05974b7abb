"""One experiment from a config to a workdir: config.json, metrics.jsonl, results.json.

A run is resumable: checkpoints go to `workdir/checkpoints/` every `checkpoint_every_steps`
and at the end, and running the same command again continues from the latest one (a
finished run is only re-summarized). SIGINT/SIGTERM end the current compiled chunk, save a
checkpoint and stop. A workdir holding a run of another config is refused unless
`overwrite`. Besides the JSON files the run writes TensorBoard events
(`workdir/tensorboard/`) and pictures (`workdir/plots/`).
"""

import contextlib
import json
import os
import shutil
import signal
import threading
import time

import jax
import ml_collections
import numpy as np

from hinge_jax import config_lib, datasets, io_utils, metadata, sanity
from hinge_jax.checkpoint import Checkpointer, fingerprint, is_disk_error
from hinge_jax.errors import DivergedError, Interrupted, UserError
from hinge_jax.progress import Progress
from hinge_jax.train import Trainer, check_fits

# What a run writes into its workdir (what --overwrite removes; nothing else is touched).
OUTPUTS = ('config.json', 'metrics.jsonl', 'results.json', 'params.npz', 'checkpoints',
           'checkpoints-corrupt', 'plots', 'tensorboard', 'sanity.json', 'sweep.csv',
           'sweep.json')


def prepare_workdir(workdir: str) -> None:
  """Creates the workdir, or stops with one line when it cannot be used."""
  if not workdir:
    raise UserError('--workdir is empty; give a directory for the run\'s outputs')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'--workdir={workdir} is a file; give a directory')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise UserError(f'--workdir={workdir} cannot be created ({e.strerror}); choose another path')
  if not os.access(workdir, os.W_OK):
    raise UserError(f'--workdir={workdir} is not writable; choose another path')


def describe(config: ml_collections.ConfigDict, dataset) -> str:
  """One line: the data, the objective, the optimizer, the device."""
  return (f'{dataset.name}: {dataset.size("train")} train / {dataset.size("val")} val / '
          f'{dataset.size("test")} test, D={dataset.num_features}, C={dataset.num_classes}; '
          f'{config.loss.name} + {config.reg.strength:g}·{config.reg.name}, '
          f'{config.optimizer.name} lr={config.optimizer.learning_rate:g}, '
          f'{config.num_steps} steps of {config.batch_size} on {jax.default_backend()}')


def member_row(row: dict, k: int = 0) -> dict:
  """Member k's values of an evaluation row whose entries are `(K,)` arrays."""
  return {key: (v[k] if isinstance(v, np.ndarray) and v.ndim else v) for key, v in row.items()}


def split_summary(ev: dict, k: int, size: int) -> dict:
  """Member k's accuracy, loss, per-class accuracy and confusion from `Trainer.evaluate`."""
  conf = ev['confusion'][k]
  with np.errstate(invalid='ignore', divide='ignore'):
    per_class = np.diag(conf) / conf.sum(axis=1)
  return {'accuracy': ev['accuracy'][k], 'loss': ev['loss'][k], 'per_class_accuracy': per_class,
          'confusion_matrix': conf, 'size': size}


def summarize(trainer: Trainer, params, k: int = 0) -> dict:
  """Final metrics of member k on every split: accuracy, loss, per-class accuracy, confusion."""
  return {split: split_summary(trainer.evaluate(params, split), k, trainer.data.size(split))
          for split in datasets.SPLITS}


def save_params(path: str, params, k: int = 0) -> None:
  """Member k's parameters as an .npz (atomic)."""
  arrays = {name: np.asarray(value[k]) for name, value in params.items()}
  tmp = path + '.tmp.npz'
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _flat(tree: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def config_record(config: ml_collections.ConfigDict) -> dict:
  """The config as it reads back from config.json (JSON types: lists, None for NaN)."""
  return json.loads(json.dumps(io_utils.to_jsonable(config.to_dict()), sort_keys=True))


def check_previous_run(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool,
                       log=print) -> None:
  """Refuses a workdir whose config.json differs from `config`; `overwrite` clears it instead.

  The error names the differing fields (`old → new`). With `overwrite` the run's own
  outputs (`OUTPUTS`) are removed, so the run starts from step 0; other files stay.
  """
  path = os.path.join(workdir, 'config.json')
  previous = None
  if os.path.exists(path):
    try:
      with open(path) as f:
        previous = json.load(f)
    except (OSError, ValueError) as e:
      if not overwrite:
        raise UserError(f'{path} is unreadable ({type(e).__name__}); pass --overwrite to start '
                        f'this run afresh in {workdir}, or use another --workdir')
  if previous is not None and previous != config_record(config) and not overwrite:
    old, new = _flat(previous), _flat(config_record(config))
    diff = sorted(k for k in set(old) | set(new) if old.get(k, '<absent>') != new.get(k, '<absent>'))
    shown = ', '.join(f'{k}: {old.get(k, "<absent>")!r} → {new.get(k, "<absent>")!r}'
                      for k in diff[:4]) + (f' and {len(diff) - 4} more' if len(diff) > 4 else '')
    raise UserError(f'--workdir={workdir} holds a run with a different config ({shown}); '
                    f'use another --workdir, or pass --overwrite to replace that run')
  if overwrite:
    removed = [name for name in OUTPUTS if os.path.lexists(os.path.join(workdir, name))]
    for name in removed:
      target = os.path.join(workdir, name)
      if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)
      else:
        os.remove(target)
    if removed:
      log(f'--overwrite: removed the previous run\'s {", ".join(removed)} from {workdir}')


def resume_metrics(path: str, step: int, log=print) -> list[dict]:
  """Keeps the metrics rows up to `step` (a torn last line is dropped); rewrites the file."""
  try:
    rows = io_utils.read_jsonl(path)
  except ValueError as e:
    raise UserError(f'{path} is corrupt before its last line ({e}); pass --overwrite to '
                    f'start afresh')
  kept = [r for r in rows if step and r.get('step', 0) <= step]
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    new_text = ''.join(json.dumps(r, sort_keys=True) + '\n' for r in kept)
    if text != new_text:
      io_utils.write_atomic(path, new_text)
      if len(rows) > len(kept) or text.count('\n') != len(rows):
        log(f'metrics.jsonl: kept {len(kept)} rows up to step {step} (dropped the rows '
            f'written after the checkpoint, and any torn last line)')
  return kept


class StopSignals:
  """SIGINT/SIGTERM set `signum` instead of killing the process (main thread only).

  The handler only records the signal: a compiled chunk cannot be interrupted, so the loop
  checks `signum` at the next chunk boundary, saves a checkpoint and stops. A second signal
  acts at once (the previous handlers are back).
  """

  SIGNALS = (signal.SIGINT, signal.SIGTERM)

  def __init__(self):
    self.signum = 0
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signum = self.signum or signum
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def __enter__(self) -> 'StopSignals':
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.getsignal(sig)
        signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


@contextlib.contextmanager
def disk_errors(workdir: str, resume_hint: str):
  """A full or read-only disk → one UserError line; files already written stay as they are."""
  try:
    yield
  except OSError as e:
    disk = is_disk_error(e)
    if disk is None:
      raise
    where = getattr(e, 'filename', None) or workdir
    raise UserError(f'cannot write {where} ({disk.strerror or disk}); free space or fix '
                    f'permissions, then {resume_hint}') from e


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       log=print, *, overwrite: bool = False) -> dict:
  """Trains the configured linear classifier and writes its outputs to `workdir`.

  Resumes from the latest checkpoint in `workdir` when it holds a run of the same config
  (`overwrite` starts afresh instead). Returns the results dict (also in `results.json`).
  Raises `UserError` for bad input (before training), `Interrupted` after saving a
  checkpoint when SIGINT/SIGTERM arrived, and `DivergedError` after writing results when
  the loss became NaN/inf.
  """
  wall_start = time.perf_counter()
  config_lib.validate(config)
  prepare_workdir(workdir)
  dataset = datasets.load(config.dataset)
  check_fits(config, dataset)
  check_previous_run(workdir, config, overwrite=overwrite, log=log)
  rerun = 'rerun the same command to resume from the last checkpoint'
  with disk_errors(workdir, rerun):
    io_utils.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  trainer = Trainer.create(config, dataset, [config])
  log(describe(config, dataset))

  sanity.at_start(config, dataset, workdir, log=log)  # the lecture's checks; sanity.json
  num_steps, every = int(config.num_steps), int(config.checkpoint_every_steps)
  config_id = fingerprint(config_record(config))
  seeds = np.asarray(trainer.hp['seed'])
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), keep=int(config.checkpoint_keep),
                      log=log)
  state = trainer.init()
  restored = ckpt.restore_latest(state, seeds=seeds, config_fingerprint=config_id)
  start_step, pending, done = 0, None, False
  if restored is not None:
    state, start_step = restored.state, restored.step
    pending = restored.meta['extra'].get('pending')
    done = bool(restored.meta['extra'].get('done'))
    log(f'resuming from the checkpoint of step {start_step}' + (' (finished run)' if done else ''))
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  with disk_errors(workdir, rerun):
    resume_metrics(metrics_path, start_step, log=log)

  from hinge_jax.summary import SummaryLog, flat_hparams  # tensorboardX loads on demand
  tb = SummaryLog(os.path.join(workdir, 'tensorboard'), hparams=flat_hparams(config),
                  purge_step=None if done else start_step)
  progress = Progress(num_steps, start_step, log=log)
  train_start = time.perf_counter()
  compile_before = trainer.compile_time_s
  stopped = {'signum': 0, 'step': start_step}

  def save(step, state, **extra):
    with disk_errors(workdir, rerun):
      ckpt.save(step, state, seeds=seeds, config_fingerprint=config_id, extra=extra)

  def on_eval(step, state, row):
    row = member_row(row)
    with disk_errors(workdir, rerun):
      io_utils.append_jsonl(metrics_path, row)
    tb.scalars(step, row)
    progress.evaluation(step, row)

  def on_chunk(step, state, pending):
    progress.advance(step)
    stopped['step'] = step
    if step >= num_steps:
      return True  # the final checkpoint follows
    if signals.signum:
      save(step, state, pending=pending)
      stopped['signum'] = signals.signum
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
        save(stopped['step'], state, pending=None, done=True)
  except BaseException:
    tb.close()  # flush what this session logged; a resumed run purges past its checkpoint
    raise
  finally:
    progress.close()
    ckpt.close()
  train_time = time.perf_counter() - train_start
  compile_in_loop = trainer.compile_time_s - compile_before

  diverged = bool(np.asarray(state.diverged)[0])
  diverged_step = int(np.asarray(state.diverged_step)[0])
  final = summarize(trainer, state.params)
  with disk_errors(workdir, rerun):
    save_params(os.path.join(workdir, 'params.npz'), state.params)
  saves = ckpt.save_seconds
  results = {
      'train_accuracy': final['train']['accuracy'],
      'val_accuracy': final['val']['accuracy'],
      'test_accuracy': final['test']['accuracy'],
      'final_loss': final['train']['loss'],
      'steps': diverged_step if diverged else int(config.num_steps),
      'seed': int(config.seed),
      'diverged': diverged,
      'diverged_step': diverged_step if diverged else None,
      'splits': final,
      'class_names': list(dataset.class_names),
      'image_shape': list(dataset.image_shape) if dataset.image_shape else None,
      'compile_time_s': trainer.compile_time_s,
      'run_time_s': max(train_time - compile_in_loop, 0.0),
      'wall_time_s': time.perf_counter() - wall_start,
      'timing': {  # this process only: a resumed run reports its last session
          'resumed_from_step': start_step,
          'checkpoint_saves': len(saves),
          'checkpoint_save_s_mean': float(np.mean(saves)) if saves else None,
          'checkpoint_save_s_total': float(np.sum(saves)),
          # chunks run again under a per-step guard: a member diverged in them (train.Trainer)
          'chunk_reruns': trainer.reruns,
          'compilation_cache_dir': jax.config.jax_compilation_cache_dir or None,
      },
      'metadata': {**metadata.run_metadata(), 'seed': int(config.seed),
                   'prng_impl': str(jax.config.jax_default_prng_impl)},
      'config': config.to_dict(),
  }
  with disk_errors(workdir, rerun):
    io_utils.write_json(os.path.join(workdir, 'results.json'), results)
  tb.final(results['steps'], {k: results[k] for k in ('train_accuracy', 'val_accuracy',
                                                      'test_accuracy', 'final_loss')})
  tb.close()
  draw_plots(workdir, results, state.params, dataset, log=log, resume_hint=rerun)
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
  return results


def draw_plots(workdir: str, results: dict, params, dataset, *, log=print,
               resume_hint: str = '') -> None:
  """The run's pictures in `workdir/plots/`; a drawing problem is a warning, not a failure."""
  from hinge_jax import plots  # matplotlib loads on demand
  member = {name: np.asarray(value[0]) for name, value in params.items()}
  try:
    with disk_errors(workdir, resume_hint):
      plots.draw(workdir, rows=io_utils.read_jsonl(os.path.join(workdir, 'metrics.jsonl')),
                 results=io_utils.to_jsonable(results), params=member,
                 image_shape=dataset.image_shape, bias_column=dataset.bias_trick)
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001 - results are written; a plot must not fail the run
    log(f'warning: plots not drawn ({type(e).__name__}: {e}); redraw with '
        f'python -m hinge_jax.plot --workdir={workdir}')
