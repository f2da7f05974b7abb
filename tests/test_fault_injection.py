"""Nothing lost: a torn or missing metrics row comes back from the checkpoint, and a run
killed (SIGKILL) at any moment reruns to the uninterrupted run's bytes. A full disk at each
writer: tests/test_disk_full.py.

In-process, through `experiment.train_and_evaluate` on short runs of synthetic data; the
killed runs are subprocesses.
"""

import json
import os
import random
import signal
import subprocess
import sys

import pytest

from hinge_jax import experiment, plots
from hinge_jax.checkpoint import Checkpointer
from helpers import REPO, default_config, quiet, without_timings

# A checkpoint every 100 steps, an evaluation every 100: the checkpoint's row is the last line.
# Synthetic data (digits' size and classes): its loader needs no scikit-learn, whose import
# would be half of each killed run's start-up.
SMALL = {'num_steps': 300, 'eval_every_steps': 100, 'checkpoint_every_steps': 100,
         'sanity.enabled': False, 'dataset.name': 'synthetic', 'dataset.num_examples': 1800,
         'dataset.num_features': 64, 'dataset.num_classes': 10}


def _config():
  return default_config(**SMALL)


class _Stop(Exception):
  """Stands for a process stopped right after a checkpoint."""


@pytest.fixture(scope='module')
def reference(reference_run):
  return reference_run(_config())


def _stop_after_checkpoint(monkeypatch, at_step):
  save = Checkpointer.save

  def stopping(self, step, *args, **kwargs):
    seconds = save(self, step, *args, **kwargs)
    if step == at_step:
      raise _Stop()
    return seconds
  monkeypatch.setattr(Checkpointer, 'save', stopping)


@pytest.mark.parametrize('damage', ['torn', 'missing'])
def test_a_torn_or_missing_row_is_restored_from_the_checkpoint(tmp_path, monkeypatch,
                                                               reference, damage):
  with monkeypatch.context() as m:
    _stop_after_checkpoint(m, 200)
    with pytest.raises(_Stop):
      experiment.train_and_evaluate(_config(), str(tmp_path), log=quiet)
  path = tmp_path / 'metrics.jsonl'
  text = path.read_text()
  last = text[:-1].rfind('\n') + 1
  assert '"step": 200' in text[last:]  # the checkpoint's row is the last line
  path.write_text(text[:last] + (text[last:last + 25] if damage == 'torn' else ''))
  lines = []
  experiment.train_and_evaluate(_config(), str(tmp_path), log=lines.append)
  assert any('from the checkpoint' in line for line in lines), lines
  assert path.read_bytes() == (reference / 'metrics.jsonl').read_bytes()
  assert (tmp_path / 'params.npz').read_bytes() == (reference / 'params.npz').read_bytes()


# SIGKILL trials (a seeded schedule, so a failure reproduces), keyed on the run's progress
# through the fault points (HINGE_JAX_FAULT, `checkpoint.fault_point`): `metrics:n` tears the
# n-th metrics row mid-line and dies, `checkpoint:n` dies while the n-th save is in flight (a
# run has 3 of each), and `metrics:n:ms` dies `ms` milliseconds after the n-th row began,
# wherever the run is by then (the next checkpoint's save, a compiled chunk, an evaluation,
# the next row): moments late enough to always fall before results.json is written. The killed
# run is a subprocess; the rerun is in-process and must equal the uninterrupted run.


def _timed(seed=22, stratum=20):
  """Seeded `metrics:n:ms` kills, one in each `stratum` ms of the windows (after row 1 within
  80 ms, after row 2 within 40): evenly spread moments, each drawn at random in its stratum."""
  rng = random.Random(seed)
  return [f'metrics:{n}:{start + rng.randrange(stratum)}'
          for n, window in ((1, 80), (2, 40)) for start in range(0, window, stratum)]


TRIALS = ([f'metrics:{n}' for n in range(1, 4)] + [f'checkpoint:{n}' for n in range(1, 4)]
          + _timed())


def _rows_before_the_kill(trial):
  """The metrics rows a killed run must have written whole: (at least, at most)."""
  site, n, *delay = trial.split(':')
  n = int(n)
  if site == 'checkpoint':  # the n-th evaluation's row precedes the n-th checkpoint
    return n, n
  return n - 1, (3 if delay else n - 1)  # a timed kill falls anywhere after the n-th row began


@pytest.mark.parametrize('trial', TRIALS)
def test_sigkill_then_rerun_equals_the_uninterrupted_run(tmp_path, monkeypatch, reference, trial):
  args = [sys.executable, '-m', 'hinge_jax.main', f'--workdir={tmp_path}',
          *(f'--config.{k}={v}' for k, v in SMALL.items())]
  # With this process's XLA_FLAGS: the programs compiled for the reference run are reused.
  env = dict(os.environ, HINGE_JAX_FAULT=trial)
  proc = subprocess.run(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, text=True, timeout=300)
  # The kill landed where the schedule says: during training, before results.json.
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  assert not (tmp_path / 'results.json').exists()
  text = (tmp_path / 'metrics.jsonl').read_text() if (tmp_path / 'metrics.jsonl').exists() else ''
  whole = [json.loads(line)['step'] for line in text.splitlines(keepends=True)
           if line.endswith('\n')]
  least, most = _rows_before_the_kill(trial)
  assert least <= len(whole) <= most and whole == [100, 200, 300][:len(whole)], text
  if trial.count(':') == 1 and trial.startswith('metrics'):
    assert text and not text.endswith('\n')  # the torn n-th row
  # Pictures are not compared here, and drawing them is most of a rerun's time.
  monkeypatch.setattr(plots, 'draw', lambda *args, **kwargs: {})
  experiment.train_and_evaluate(_config(), str(tmp_path), log=quiet)
  assert (tmp_path / 'metrics.jsonl').read_bytes() == (reference / 'metrics.jsonl').read_bytes()
  assert (tmp_path / 'params.npz').read_bytes() == (reference / 'params.npz').read_bytes()
  assert without_timings(tmp_path) == without_timings(reference)
