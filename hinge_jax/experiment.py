"""One experiment from a config to a workdir: config.json, metrics.jsonl, results.json."""

import os
import time

import jax
import ml_collections
import numpy as np

from hinge_jax import config_lib, datasets, io_utils, metadata, sanity
from hinge_jax.errors import DivergedError, UserError
from hinge_jax.train import Trainer, check_fits


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


def _progress_line(step: int, num_steps: int, row: dict, elapsed: float) -> str:
  return (f'step {step:>{len(str(num_steps))}}/{num_steps}  loss {row["loss"]:.4f}  '
          f'train_acc {row["train_accuracy"]:.4f}  val_acc {row["val_accuracy"]:.4f}  '
          f'({elapsed:.1f} s)')


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       log=print) -> dict:
  """Trains the configured linear classifier and writes its outputs to `workdir`.

  Returns the results dict (also in `results.json`). Raises `UserError` for bad input
  (before training) and `DivergedError` after writing results when the loss became NaN/inf.
  """
  wall_start = time.perf_counter()
  config_lib.validate(config)
  prepare_workdir(workdir)
  dataset = datasets.load(config.dataset)
  check_fits(config, dataset)
  io_utils.write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  trainer = Trainer.create(config, dataset, [config])
  log(describe(config, dataset))

  sanity.at_start(config, dataset, workdir, log=log)  # the lecture's checks; sanity.json
  metrics_path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(metrics_path):
    os.remove(metrics_path)
  state = trainer.init()
  train_start = time.perf_counter()

  def on_eval(step, state, row):
    row = member_row(row)
    io_utils.append_jsonl(metrics_path, row)
    log(_progress_line(step, config.num_steps, row, time.perf_counter() - train_start))

  state = trainer.fit(state, on_eval=on_eval)
  diverged = bool(np.asarray(state.diverged)[0])
  diverged_step = int(np.asarray(state.diverged_step)[0])
  final = summarize(trainer, state.params)
  save_params(os.path.join(workdir, 'params.npz'), state.params)
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
      'compile_time_s': trainer.compile_time_s,
      'wall_time_s': time.perf_counter() - wall_start,
      'metadata': metadata.run_metadata(),
      'config': config.to_dict(),
  }
  io_utils.write_json(os.path.join(workdir, 'results.json'), results)
  if diverged:
    raise DivergedError(
        diverged_step,
        f'training diverged at step {diverged_step}: the loss became NaN or infinite; '
        f'lower optimizer.learning_rate (now {config.optimizer.learning_rate:g}). '
        f'Results (diverged: true) are in {workdir}/results.json')
  log(f'done in {results["wall_time_s"]:.1f} s (compile {trainer.compile_time_s:.1f} s): '
      f'train_acc {results["train_accuracy"]:.4f}  val_acc {results["val_accuracy"]:.4f}  '
      f'test_acc {results["test_accuracy"]:.4f}  final_loss {results["final_loss"]:.4f}')
  return results
