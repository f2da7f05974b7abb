"""Progress: plain lines with rate and ETA when not a terminal; a tqdm bar on one."""

import re

import pytest

from hinge_jax import experiment
from hinge_jax.progress import Progress, rate_text
from helpers import default_config

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
  assert re.search(r'\([\d,.]+ steps/s, [\d.]+ s, ETA \d+:\d\d:\d\d\)$', lines[0]), lines[0]


def test_bar_on_a_terminal_counts_from_the_resumed_step(capsys):
  progress = Progress(1000, 200, bar=True)
  progress.advance(600)
  progress.evaluation(600, ROW)
  progress.advance(1000)
  progress.close()
  out = capsys.readouterr().out
  assert '200/1000' in out and '1000/1000' in out and 'step/s' in out
  assert 'step  600/1000  loss 0.5000' in out and 'val_acc=0.8000' in out


def test_slow_runs_show_seconds_per_step():
  """Below one step a second the line says `31.5 s/step`, not `0 steps/s`."""
  lines = []
  progress = Progress(5000, 0, log=lines.append)
  progress._t0 -= 63.0  # two steps took 63 s
  progress.evaluation(2, ROW)
  assert re.search(r'\(31\.5 s/step, 63\.\d s, ETA 4[34]:\d\d:\d\d\)$', lines[0]), lines[0]
  assert [rate_text(r) for r in (0.0, 0.5, 2.54, 1234.4)] == [
      'no step yet', '2.0 s/step', '2.5 steps/s', '1,234 steps/s']


def test_no_step_yet_has_no_eta():
  lines = []
  Progress(100, 40, log=lines.append).evaluation(40, ROW)
  assert re.search(r'\(no step yet, [\d.]+ s, ETA \?\)$', lines[0]), lines[0]


@pytest.mark.parametrize('fields,steps', [
    ({'batch_size': 0}, '1000 full-batch steps on '),
    ({'strategy': 'gradient_descent'}, '1000 full-batch steps on '),
    ({}, '1000 steps of 200 on '),
])
def test_start_up_line_names_full_batch_steps(digits, fields, steps):
  line = experiment.describe(default_config(num_steps=1000, **fields), digits)
  assert steps in line and 'steps of 0' not in line, line
