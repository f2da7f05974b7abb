"""A run's outputs in its workdir, written the same way by single runs and sweeps.

config.json, metrics.jsonl, results.json, params.npz, sweep.csv/sweep.json and the pictures
in plots/; every file is written atomically. Also the workdir's guards: a workdir that
cannot be used, or that holds a run of another config, is refused in one line.
"""

import contextlib
import csv
import io
import json
import os
import shutil

import ml_collections
import numpy as np

from hinge_jax import io_utils, plots
from hinge_jax.checkpoint import fault_point, is_disk_error
from hinge_jax.errors import UserError

# What a run writes into its workdir (what --overwrite removes; nothing else is touched).
OUTPUTS = ('config.json', 'metrics.jsonl', 'results.json', 'params.npz', 'checkpoints',
           'checkpoints-corrupt', 'plots', 'tensorboard', 'sanity.json', 'sweep.csv',
           'sweep.json', 'probe.json', 'probe_params.npz')


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


@contextlib.contextmanager
def disk_errors(workdir: str, resume_hint: str):
  """A full or read-only disk → one UserError line; files already written stay as they are.

  Any exception with a disk error in its cause chain counts (orbax and tensorboardX wrap
  theirs); the line names the file the OSError names, else the workdir.
  """
  try:
    yield
  except Exception as e:  # noqa: BLE001 - only disk errors are rephrased; the rest re-raised
    disk = is_disk_error(e)
    if disk is None or isinstance(e, UserError):
      raise
    where = disk.filename or workdir
    raise UserError(f'cannot write {where} ({disk.strerror or disk}); free space or fix '
                    f'permissions, then {resume_hint}') from e


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


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """config.json: the run's config (what a rerun in this workdir is compared against)."""
  io_utils.write_json(os.path.join(workdir, 'config.json'), config.to_dict())


def resume_metrics(path: str, step: int, log=print, saved: list | None = None) -> list[dict]:
  """Keeps the metrics rows up to `step` and rewrites the file (a torn last line is dropped).

  `saved` (the rows the checkpoint of `step` holds) wins over the file: a row torn or lost
  after the checkpoint is restored, so the resumed file equals an uninterrupted run's.
  """
  try:
    rows = io_utils.read_jsonl(path)
  except ValueError as e:
    if saved is None:
      raise UserError(f'{path} is corrupt before its last line ({e}); pass --overwrite to '
                      f'start afresh')
    rows = []
  source = rows if saved is None else saved
  kept = [r for r in source if step and r.get('step', 0) <= step]
  text = ''
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  new_text = _jsonl(kept)
  if text != new_text and (text or kept):
    io_utils.write_atomic(path, new_text)
    log(f'metrics.jsonl: rewrote {len(kept)} rows up to step {step} '
        f'({"from the checkpoint" if saved is not None else "from the file"}; dropped the rows '
        f'written after the checkpoint and any torn line)')
  return kept


def append_row(path: str, row: dict) -> None:
  """One metrics row appended (fsynced); the `metrics` fault point tears it mid-line."""
  def half():
    with open(path, 'a') as f:
      line = json.dumps(io_utils.to_jsonable(row), sort_keys=True)
      f.write(line[:len(line) // 2])
      f.flush()
      os.fsync(f.fileno())
  fault_point('metrics', half)
  io_utils.append_jsonl(path, row)


def _jsonl(rows: list[dict]) -> str:
  return ''.join(json.dumps(io_utils.to_jsonable(r), sort_keys=True) + '\n' for r in rows)


def write_metrics(workdir: str, rows: list[dict]) -> None:
  """metrics.jsonl in one atomic write (a sweep's best member; a run appends row by row)."""
  io_utils.write_atomic(os.path.join(workdir, 'metrics.jsonl'), _jsonl(rows))


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


def save_params(path: str, params, k: int = 0) -> None:
  """Member k's parameters as an .npz (atomic)."""
  arrays = {name: np.asarray(value[k]) for name, value in params.items()}
  with io_utils.replacing(path, '.npz') as tmp:
    np.savez(tmp, **arrays)


def run_results(final: dict, dataset, config: ml_collections.ConfigDict, *, steps: int,
                seed: int, diverged: bool, diverged_step, **extra) -> dict:
  """The contents of results.json: final metrics of every split, the data, the config."""
  return {
      'train_accuracy': final['train']['accuracy'],
      'val_accuracy': final['val']['accuracy'],
      'test_accuracy': final['test']['accuracy'],
      'final_loss': final['train']['loss'],
      'steps': steps, 'seed': seed, 'diverged': diverged, 'diverged_step': diverged_step,
      'splits': final,
      'class_names': list(dataset.class_names),
      'image_shape': list(dataset.image_shape) if dataset.image_shape else None,
      **extra,
      'config': config.to_dict(),
  }


def write_results(workdir: str, results: dict) -> None:
  io_utils.write_json(os.path.join(workdir, 'results.json'), results)


def write_sweep(workdir: str, rows: list[dict], summary: dict) -> None:
  """sweep.csv (one row per member, columns in row order) and sweep.json (`summary`)."""
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
  writer.writeheader()
  for r in rows:
    writer.writerow(io_utils.to_jsonable(r))
  io_utils.write_atomic(os.path.join(workdir, 'sweep.csv'), buf.getvalue())
  io_utils.write_json(os.path.join(workdir, 'sweep.json'), summary)


def draw_plots(workdir: str, results: dict, params, dataset, *, log=print,
               resume_hint: str = '') -> None:
  """The run's pictures in `workdir/plots/`; a drawing problem is a warning, not a failure."""
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
