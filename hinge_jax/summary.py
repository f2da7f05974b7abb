"""TensorBoard event files through tensorboardX (no TensorFlow): scalars and hyperparameters.

`tensorboard --logdir=WORKDIR` shows a run. A resumed run opens its writer with
`purge_step` = the step it resumed from, so TensorBoard drops the events an interrupted
session wrote after its last checkpoint, and the curves match an uninterrupted run.
"""

import math
from typing import Optional

import ml_collections

# metrics.jsonl key → TensorBoard tag
SCALARS = {'loss': 'train/loss', 'batch_loss': 'train/batch_loss',
           'train_accuracy': 'train/accuracy', 'val_loss': 'val/loss',
           'val_accuracy': 'val/accuracy', 'learning_rate': 'learning_rate'}


def flat_hparams(config: ml_collections.ConfigDict | dict) -> dict:
  """The config's scalar fields by dotted name (`{'optimizer.learning_rate': 0.05, ...}`)."""
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      name = f'{prefix}{key}'
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(value, name + '.')
      elif isinstance(value, (bool, int, float, str)):
        out[name] = value
  walk(config.to_dict() if hasattr(config, 'to_dict') else config, '')
  return out


class _Recording:
  """tensorboardX's event file writer (used by its writer thread and by flush/close), where a
  failing write is recorded instead of raised: the thread never dies with a traceback (and
  never leaves `add_scalar` blocked on a full queue); the first error is raised once, in the
  main thread, by `SummaryLog`. After a failure later events are dropped."""

  def __init__(self, inner):
    self._inner = inner
    self.error: Optional[Exception] = None

  def _call(self, name: str, *args) -> bool:
    if self.error is not None and name != 'close':
      return True
    try:
      getattr(self._inner, name)(*args)
    except Exception as e:  # noqa: BLE001 - any write failure, reported by SummaryLog
      if self.error is None:
        self.error = e
    return True

  def write_event(self, event) -> bool:
    return self._call('write_event', event)

  def flush(self) -> bool:
    return self._call('flush')

  def close(self) -> bool:
    return self._call('close')


class SummaryLog:
  """Scalars per evaluation and the run's hyperparameters, in `logdir`'s event files.

  A write that fails (a full disk), in the writer's thread or at a flush, is raised by the
  next call here (`scalars`, `final`, `close`), so the run stops with that one error.
  """

  def __init__(self, logdir: str, *, hparams: dict, metrics: tuple = ('test_accuracy',
               'val_accuracy'), purge_step: Optional[int] = None):
    from tensorboardX import SummaryWriter  # lazy: a plain import of hinge_jax stays light
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.summary import hparams as hparams_summary
    self._writer = SummaryWriter(logdir=logdir, flush_secs=30)
    # tensorboardX's EventFileWriter: its events writer, shared by its thread, is wrapped
    # before any event is queued (so before the thread writes anything)
    events = self._writer.file_writer.event_writer
    self._events = _Recording(events._ev_writer)
    events._ev_writer = events._worker._record_writer = self._events
    self._raised = False
    if purge_step is not None:  # what SummaryWriter(purge_step=...) writes first
      self._writer.file_writer.add_event(Event(step=purge_step, file_version='brain.Event:2'))
      self._writer.file_writer.add_event(Event(
          step=purge_step, session_log=SessionLog(status=SessionLog.START)))
    exp, start, self._end = hparams_summary(hparams, {f'final/{m}': 0.0 for m in metrics})
    self._writer.file_writer.add_summary(exp)
    self._writer.file_writer.add_summary(start)

  def _check(self) -> None:
    """Raises the first failed write (once)."""
    if self._events.error is not None and not self._raised:
      self._raised = True
      raise self._events.error

  def scalars(self, step: int, row: dict) -> None:
    self._check()
    for key, tag in SCALARS.items():
      value = row.get(key)
      if value is not None and math.isfinite(float(value)):
        self._writer.add_scalar(tag, float(value), step)

  def final(self, step: int, metrics: dict) -> None:
    """The final metrics (`final/test_accuracy`, ...) and the end of the hparams session."""
    self._check()
    for key, value in metrics.items():
      if value is not None and math.isfinite(float(value)):
        self._writer.add_scalar(f'final/{key}', float(value), step)
    self._writer.file_writer.add_summary(self._end)

  def close(self, *, quiet: bool = False) -> None:
    """Flushes and closes the event files, then raises a write that failed; `quiet` (closing
    after another error) never raises, so a full disk shows the first error's one line, not
    a second traceback."""
    try:
      self._writer.flush()
      self._writer.close()
      self._check()
    except Exception:  # noqa: BLE001 - any writer failure; the first error is the one to show
      if not quiet:
        raise
