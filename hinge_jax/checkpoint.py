"""Checkpoints of a training state of any number of members, through orbax.

A checkpoint at step t holds two items: `state`, the `TrainState` pytree (params, the
strategy's state, divergence flags; every leaf with its leading members axis K), and
`meta`, a small JSON object: the step, the members' seeds and the PRNG implementation (the
keys of every random stream derive from them, `streams.stream_key`), a fingerprint of the
config, the shape of every leaf, the counts of processes and devices, and whatever the
caller adds (`extra`). Typed PRNG key leaves, if a state holds any, are stored as their raw
`key_data` and wrapped again on restore.

`Checkpointer.restore_latest` walks back from the newest step: a checkpoint that cannot be
read is set aside (moved to `<directory>-corrupt/<step>`) with one line saying so, and the one
before it is used. A checkpoint written for other shapes, seeds or another config stops
with one `UserError` line instead of being restored into the wrong run.

In a multi-process run every process saves and restores together into the same directory:
process 0 writes `meta` and finalizes each step, and every process writes the shards of the
arrays that its devices hold. A checkpoint is resumed by as many processes as wrote it.
"""

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from hinge_jax import distributed
from hinge_jax.errors import UserError

# Errors that mean "the disk cannot take it": reported as one line, the run can be resumed.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


_FAULT_CALLS: dict = {}


def fault_point(site: str, before=None) -> None:
  """Fault injection for tests: HINGE_JAX_FAULT=<site>:<n> SIGKILLs this process at the n-th
  call of `site` (after `before()`, e.g. half a line written); <site>:<n>:<ms> instead starts
  a timer there that SIGKILLs it <ms> milliseconds later, wherever the run is by then (a
  moment keyed on the run's progress, not on its start-up); <site>:<n>:term sends it a SIGTERM
  there instead, which the run handles (a stop at the next chunk). Unset, it does nothing."""
  spec = os.environ.get('HINGE_JAX_FAULT', '')
  if not spec.startswith(site + ':'):
    return
  _FAULT_CALLS[site] = _FAULT_CALLS.get(site, 0) + 1
  parts = spec.split(':')
  if _FAULT_CALLS[site] != int(parts[1]):
    return
  if parts[2:] == ['term']:
    os.kill(os.getpid(), signal.SIGTERM)
    return
  if len(parts) > 2:
    timer = threading.Timer(int(parts[2]) / 1000, os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
    return
  if before is not None:
    before()
  os.kill(os.getpid(), signal.SIGKILL)


def fingerprint(tree: Any) -> str:
  """A short stable hash of a JSON-able tree (a config dict): equal trees, equal strings."""
  text = json.dumps(tree, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_key(leaf) -> bool:
  return jax.dtypes.issubdtype(getattr(leaf, 'dtype', None), jax.dtypes.prng_key)


def _encode(tree):
  """Typed PRNG keys → their uint32 key data (orbax stores plain arrays)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _decode(restored, like):
  """Wraps key data back into typed keys wherever `like` has a key leaf.

  orbax returns arrays committed to a device; where `like`'s leaf is uncommitted (a fresh
  `init`), the restored one is made uncommitted too, so the compiled step sees the same
  input signature as a fresh run and the persistent compilation cache is hit on resume.
  """
  def one(r, ref):
    if not getattr(ref, 'committed', True) and getattr(r, 'committed', False):
      r = jax.device_put(np.asarray(r))
    return jax.random.wrap_key_data(r, impl=jax.random.key_impl(ref)) if _is_key(ref) else r
  return jax.tree.map(one, restored, like)


def shapes(tree) -> dict:
  """`{'params/W': [K, C, D], ...}`: the shape of every leaf, by its path."""
  flat = jax.tree_util.tree_flatten_with_path(_encode(tree))[0]
  return {jax.tree_util.keystr(path, simple=True, separator='/'): list(np.shape(leaf))
          for path, leaf in flat}


def is_disk_error(exc: BaseException) -> Optional[OSError]:
  """The OSError behind `exc` (its cause chain included) when it is a disk problem."""
  seen = 0
  while exc is not None and seen < 10:
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
      return exc
    if 'No space left on device' in str(exc):
      return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    exc, seen = exc.__cause__ or exc.__context__, seen + 1
  return None



def _disk_user_error(error: Exception, what: str) -> Optional[UserError]:
  """The one line for a checkpoint write the disk refused (`cannot <what> (...)`), or None."""
  disk = is_disk_error(error)
  if disk is None:
    return None
  return UserError(f'cannot {what} ({disk.strerror or disk}); free space or fix permissions, '
                   f'then rerun the same command to resume from the last checkpoint')

class _DropClosedLoopTracebacks(io.TextIOBase):
  """A stderr that holds back tracebacks ending in 'Event loop is closed'.

  When one array of a corrupt checkpoint fails to load, orbax closes its event loop while
  tensorstore still completes the other reads; their callbacks then print such tracebacks
  from other threads. They say nothing the one-line warning does not, so they are dropped.
  """

  def __init__(self, stream):
    super().__init__()
    self._stream = stream
    self._partial = ''  # an incomplete last line
    self._block: list[str] = []  # the lines of a traceback being printed

  def write(self, text: str) -> int:
    *lines, self._partial = (self._partial + text).split('\n')
    for line in lines:
      self._line(line + '\n')
    return len(text)

  def _line(self, line: str) -> None:
    if not self._block and not line.startswith('Traceback (most recent call last):'):
      self._stream.write(line)
      return
    self._block.append(line)
    if re.match(r'\w[\w.]*(Error|Exception)\b', line):  # a traceback's last line
      block, self._block = ''.join(self._block), []
      if 'Event loop is closed' not in line:
        self._stream.write(block)

  def flush(self) -> None:
    self._stream.flush()

  def release(self) -> None:
    self._stream.write(''.join(self._block) + self._partial)
    self._block, self._partial = [], ''


@contextlib.contextmanager
def _quiet_closed_loop_errors(failed: Callable[[], bool], settle_s: float = 0.3):
  """Filters stderr while restoring; after a failed read, waits for the late callbacks."""
  stream = _DropClosedLoopTracebacks(sys.stderr)
  previous, sys.stderr = sys.stderr, stream
  try:
    yield
  finally:
    if failed():
      time.sleep(settle_s)
    sys.stderr = previous
    stream.release()


@dataclasses.dataclass
class Restored:
  """A checkpoint read back: its step, the state (like the template given) and its meta."""
  step: int
  state: Any
  meta: dict


class Checkpointer:
  """Saves and restores `(step, state, meta)` under one directory, keeping the last `keep`.

  Attributes:
    directory: where the step directories live (`<directory>/<step>/{state,meta}`).
    save_seconds: seconds spent in each `save` (the checkpoint overhead, for the report).
  """

  def __init__(self, directory: str, *, keep: int = 3, log: Callable[[str], None] = print):
    self.directory = os.path.abspath(directory)
    self._log = log
    self.save_seconds: list[float] = []
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max(int(keep), 1), create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=False,  # a save is on disk when save() returns
        # every process calls save and restore; process 0 writes meta and finalizes a step
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0))
    self._manager = ocp.CheckpointManager(self.directory, item_names=('state', 'meta'),
                                          options=options)

  def steps(self) -> list[int]:
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, *, seeds, config_fingerprint: str = '',
           extra: Optional[dict] = None) -> float:
    """Writes the checkpoint of `step` (replacing one already there); returns its seconds.

    Raises `UserError` (one line) when the disk refuses it; earlier checkpoints stay intact.
    """
    t0 = time.perf_counter()
    meta = {'step': int(step), 'seeds': [int(s) for s in np.asarray(seeds).ravel()],
            'prng_impl': str(jax.config.jax_default_prng_impl),
            'config_fingerprint': config_fingerprint, 'shapes': shapes(state),
            'processes': jax.process_count(), 'devices': jax.device_count(),
            'extra': extra or {}}
    try:
      if step in self._manager.all_steps():
        self._manager.delete(step)
      self._manager.save(int(step), force=True, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_encode(state)), meta=ocp.args.JsonSave(meta)))
      fault_point('checkpoint')  # tests: SIGKILL while the save is in flight
      self._manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 - orbax wraps disk errors in several types
      error = _disk_user_error(e, f'write the checkpoint of step {step} to {self.directory}')
      if error is None:
        raise
      raise error from e
    seconds = time.perf_counter() - t0
    self.save_seconds.append(seconds)
    return seconds

  def _read_meta(self, step: int) -> dict:
    return self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def _check(self, step: int, meta: dict, like, seeds, config_fingerprint: str) -> None:
    """Refuses a checkpoint written for another config, other seeds or other shapes."""
    where = f'the checkpoint of step {step} in {self.directory}'
    fix = 'use another --workdir, or pass --overwrite to start this run afresh'
    if config_fingerprint and meta.get('config_fingerprint') not in ('', config_fingerprint):
      raise UserError(f'{where} was written by a different config; {fix}')
    written = int(meta.get('processes', 1))  # a checkpoint from before the count: one process
    if written != jax.process_count():
      raise UserError(f'{where} was written by {written} process(es), this run has '
                      f'{jax.process_count()}; rerun with {written} process(es) to resume it, '
                      f'or pass --overwrite to start this run afresh')
    want, got = shapes(like), meta.get('shapes', {})
    if want != got:
      name = next(k for k in [*want, *got] if want.get(k) != got.get(k))  # params first
      raise UserError(f'{where} holds {name} of shape {got.get(name)} but this run needs '
                      f'{want.get(name)} (a different config or dataset); {fix}')
    want_seeds = [int(s) for s in np.asarray(seeds).ravel()]
    if meta.get('seeds') != want_seeds or meta.get('prng_impl') != str(
        jax.config.jax_default_prng_impl):
      raise UserError(f'{where} was written with seeds {meta.get("seeds")} '
                      f'({meta.get("prng_impl")}), this run has {want_seeds} '
                      f'({jax.config.jax_default_prng_impl}); {fix}')

  def _set_aside(self, step: int) -> str:
    """Moves an unreadable step out of orbax's sight (kept for inspection, not deleted); in a
    multi-process run process 0 moves it and the others wait for the move."""
    target_dir = self.directory + '-corrupt'
    stamp = time.strftime('%Y%m%d-%H%M%S')
    target = os.path.join(target_dir, f'{step}-{stamp}')
    if distributed.is_writer():
      os.makedirs(target_dir, exist_ok=True)
      n = 1
      while os.path.lexists(target):
        n += 1
        target = os.path.join(target_dir, f'{step}-{stamp}-{n}')
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'hinge_jax checkpoint set aside {step}')
    self._manager.reload()
    return target

  def restore_latest(self, like, *, seeds, config_fingerprint: str = '') -> Optional[Restored]:
    """The newest readable checkpoint restored like `like` (a state of the right shapes).

    Returns None when there is no checkpoint. An unreadable newest checkpoint is set aside
    and the previous one used (one line says so); a checkpoint of another config, other
    seeds or shapes raises `UserError`.
    """
    self._failures = 0
    with _quiet_closed_loop_errors(lambda: self._failures > 0):
      return self._restore_latest(like, seeds=seeds, config_fingerprint=config_fingerprint)

  def _restore_latest(self, like, *, seeds, config_fingerprint: str) -> Optional[Restored]:
    steps = self.steps()
    for i, step in enumerate(reversed(steps)):
      try:
        meta = self._read_meta(step)
      except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is handled alike
        self._fall_back(step, steps[:len(steps) - 1 - i], e)
        continue
      self._check(step, meta, like, seeds, config_fingerprint)
      error = None
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_encode(like))))['state']
        jax.block_until_ready(restored)
      except Exception as e:  # noqa: BLE001
        error = e
      # a process may fail to read its own shards only: every process falls back together
      if distributed.agreed_max(int(error is not None)):
        self._fall_back(step, steps[:len(steps) - 1 - i],
                        error or OSError('another process could not read its shards'))
        continue
      return Restored(step=step, state=_decode(restored, like), meta=meta)
    return None

  def _fall_back(self, step: int, earlier: list, error: Exception) -> None:
    self._failures += 1
    reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else ''
    moved = self._set_aside(step)
    then = f'falling back to step {earlier[-1]}' if earlier else 'no earlier checkpoint; starting from step 0'
    self._log(f'warning: the checkpoint of step {step} is unreadable ({type(error).__name__}: '
              f'{reason}); moved it to {moved}; {then}')

  def close(self, *, quiet: bool = False) -> None:
    """Waits for a save in flight and closes the manager. `quiet` (closing after another
    error) never raises, so that error stays the one line the user reads."""
    try:
      self._manager.wait_until_finished()
      self._manager.close()
    except Exception as e:  # noqa: BLE001 - orbax wraps disk errors in several types
      if quiet:
        return
      error = _disk_user_error(e, f'finish writing the checkpoints in {self.directory}')
      if error is None:
        raise
      raise error from e
