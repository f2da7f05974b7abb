"""Progress: plain lines with rate and ETA when not a terminal; a tqdm bar on one."""

import re

from hinge_jax.progress import Progress

ROW = {'loss': 0.5, 'train_accuracy': 0.9, 'val_accuracy': 0.8}


def test_plain_lines_have_rate_and_eta():
  lines = []
  progress = Progress(1000, 200, log=lines.append)
  assert progress._bar is None  # a custom log is never a terminal
  progress.advance(500)
  progress.evaluation(500, ROW)
  progress.close()
  assert len(lines) == 1
  assert lines[0].startswith('step  500/1000  loss 0.5000  train_acc 0.9000  val_acc 0.8000')
  assert re.search(r'\([\d,]+ steps/s, [\d.]+ s, ETA \d+:\d\d:\d\d\)$', lines[0]), lines[0]


def test_bar_on_a_terminal_counts_from_the_resumed_step(capsys):
  progress = Progress(1000, 200, bar=True)
  progress.advance(600)
  progress.evaluation(600, ROW)
  progress.advance(1000)
  progress.close()
  out = capsys.readouterr().out
  assert '200/1000' in out and '1000/1000' in out and 'step/s' in out
  assert 'step  600/1000  loss 0.5000' in out and 'val_acc=0.8000' in out
