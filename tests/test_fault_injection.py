"""Nothing lost: a torn or missing metrics row comes back from the checkpoint, and a run
killed (SIGKILL) at any moment reruns to the uninterrupted run's bytes. A full disk at each
writer: tests/test_disk_full.py.

In-process, through `experiment.train_and_evaluate` on short digits runs; the killed runs are
subprocesses.
"""

import json
import os
import random
import signal
import subprocess
import sys

import pytest

from hinge_jax import experiment
from hinge_jax.checkpoint import Checkpointer
from helpers import REPO, default_config

# A checkpoint every 100 steps, an evaluation every 100: the checkpoint's row is the last line.
SMALL = {'num_steps': 300, 'eval_every_steps': 100, 'checkpoint_every_steps': 100,
         'sanity.enabled': False}


def _config():
  return default_config(**SMALL)


def _quiet(line):
  del line


class _Stop(Exception):
  """Stands for a process stopped right after a checkpoint."""


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  experiment.train_and_evaluate(_config(), str(workdir), log=_quiet)
  return workdir


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
      experiment.train_and_evaluate(_config(), str(tmp_path), log=_quiet)
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


# SIGKILL trials (a seeded schedule, so a failure reproduces): at the n-th call of a fault
# point (HINGE_JAX_FAULT=<site>:<n>: `metrics` tears the n-th row mid-line, `checkpoint`
# kills while the n-th save is in flight; a run has 3 of each), or from outside after a seeded delay. The killed
# run is a subprocess; the rerun is in-process and must equal the uninterrupted run.
_RNG = random.Random(22)
TRIALS = ([('metrics', n) for n in range(1, 4)] + [('checkpoint', n) for n in range(1, 4)]
          + [('time', round(_RNG.uniform(0.6, 2.2), 2)) for _ in range(14)])
TIMING_KEYS = ('compile_time_s', 'run_time_s', 'wall_time_s', 'timing')


def _results(workdir):
  results = json.loads((workdir / 'results.json').read_text())
  return {k: v for k, v in results.items() if k not in TIMING_KEYS}


@pytest.mark.parametrize('site,n', TRIALS, ids=[f'{s}:{n}' for s, n in TRIALS])
def test_sigkill_then_rerun_equals_the_uninterrupted_run(tmp_path, reference, site, n):
  args = [sys.executable, '-m', 'hinge_jax.main', f'--workdir={tmp_path}',
          *(f'--config.{k}={v}' for k, v in SMALL.items())]
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  if site != 'time':
    env['HINGE_JAX_FAULT'] = f'{site}:{n}'
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  try:
    _, err = proc.communicate(timeout=n if site == 'time' else 120)
  except subprocess.TimeoutExpired:
    proc.kill()
    _, err = proc.communicate()
  if site != 'time':
    assert proc.returncode == -signal.SIGKILL, err
  experiment.train_and_evaluate(_config(), str(tmp_path), log=_quiet)
  assert (tmp_path / 'metrics.jsonl').read_bytes() == (reference / 'metrics.jsonl').read_bytes()
  assert (tmp_path / 'params.npz').read_bytes() == (reference / 'params.npz').read_bytes()
  assert _results(tmp_path) == _results(reference)
