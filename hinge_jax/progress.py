"""Progress of a run: a bar with steps/s and ETA on a terminal, plain lines elsewhere."""

import sys
import time
from typing import Callable, Optional


def _clock(seconds: float) -> str:
  seconds = max(int(round(seconds)), 0)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


def eval_line(step: int, num_steps: int, row: dict) -> str:
  """`step 250/1000  loss 0.4321  train_acc 0.9100  val_acc 0.9000`."""
  return (f'step {step:>{len(str(num_steps))}}/{num_steps}  loss {row["loss"]:.4f}  '
          f'train_acc {row["train_accuracy"]:.4f}  val_acc {row["val_accuracy"]:.4f}')


def rate_text(rate: float) -> str:
  """`1,234 steps/s`, `2.5 steps/s`, or below one step a second `31.5 s/step`."""
  if rate <= 0:
    return 'no step yet'
  if rate < 1:
    return f'{1 / rate:,.1f} s/step'
  return f'{rate:,.1f} steps/s' if rate < 10 else f'{rate:,.0f} steps/s'


class Progress:
  """Reports training progress from `start` to `total` steps.

  On a terminal (`bar=True`) a tqdm bar shows steps/s and the ETA, with the latest
  evaluation as its postfix. Otherwise (CI, files) each evaluation is one plain line with
  the rate and ETA appended, through `log`.
  """

  def __init__(self, total: int, start: int = 0, *, log: Callable[[str], None] = print,
               bar: Optional[bool] = None):
    self.total, self.start, self._log = total, start, log
    self._t0 = time.perf_counter()
    self._bar = None
    if bar is None:
      bar = log is print and sys.stdout.isatty()
    if bar:
      from tqdm import tqdm  # lazy: only a terminal needs it
      self._bar = tqdm(total=total, initial=start, unit='step', dynamic_ncols=True,
                       file=sys.stdout, smoothing=0.1)

  def rate(self, step: int) -> float:
    """Steps per second in this process (compiling included)."""
    elapsed = time.perf_counter() - self._t0
    return (step - self.start) / elapsed if elapsed > 0 else 0.0

  def advance(self, step: int) -> None:
    """The run reached `step` (after a chunk)."""
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def evaluation(self, step: int, row: dict) -> None:
    """One evaluation: a bar postfix on a terminal, one line elsewhere."""
    if self._bar is not None:
      self._bar.set_postfix(loss=f'{row["loss"]:.4f}', val_acc=f'{row["val_accuracy"]:.4f}')
      self._bar.write(eval_line(step, self.total, row))
      return
    rate = self.rate(step)
    eta = _clock((self.total - step) / rate) if rate > 0 else '?'
    self._log(f'{eval_line(step, self.total, row)}  ({rate_text(rate)}, '
              f'{time.perf_counter() - self._t0:.1f} s, ETA {eta})')

  def message(self, text: str) -> None:
    """A line that must not tear the bar."""
    if self._bar is not None:
      self._bar.write(text)
    else:
      self._log(text)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
