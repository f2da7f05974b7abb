"""Reproducible, resumable runs: seeds, checkpoints, signals, torn files, refused workdirs.

In-process, through `experiment.train_and_evaluate` (signals are sent to this process while
a chunk runs); a subprocess only for a signal from outside and the exit code it gives.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from hinge_jax import experiment, io_utils
from hinge_jax.errors import Interrupted, UserError
from hinge_jax.train import Trainer
from helpers import REPO, default_config, quiet, without_timings, xla_flags

# Short digits runs: a checkpoint every 50 steps, evaluations every 100 (so a checkpoint can
# fall inside an evaluation period).
SMALL = {'num_steps': 300, 'eval_every_steps': 100, 'checkpoint_every_steps': 50,
         'sanity.enabled': False}  # the sanity report has its own tests (test_sanity.py)


def _small_config(**overrides):
  return default_config(**{**SMALL, **overrides})


def _outputs(workdir):
  """results.json without timings, metrics rows, and the final params."""
  results = without_timings(workdir)
  rows = io_utils.read_jsonl(str(workdir / 'metrics.jsonl'))
  with np.load(workdir / 'params.npz') as f:
    params = {k: f[k] for k in f.files}
  return results, rows, params


def _assert_same(a, b):
  assert a[0] == b[0]
  assert a[1] == b[1]
  assert a[2].keys() == b[2].keys()
  for k in a[2]:
    np.testing.assert_array_equal(a[2][k], b[2][k])


@pytest.fixture(scope='module')
def reference(reference_run):
  """An uninterrupted run of the small config, to compare others against."""
  return reference_run(_small_config())


def test_same_seed_gives_identical_results_and_params(tmp_path, reference):
  experiment.train_and_evaluate(_small_config(), str(tmp_path), log=quiet)
  _assert_same(_outputs(tmp_path), _outputs(reference))


def test_another_seed_gives_different_params_and_metrics(tmp_path, reference):
  experiment.train_and_evaluate(_small_config(seed=1), str(tmp_path), log=quiet)
  results, rows, params = _outputs(tmp_path)
  ref_results, ref_rows, ref_params = _outputs(reference)
  assert results['seed'] == 1 and ref_results['seed'] == 0
  assert not np.array_equal(params['W'], ref_params['W'])
  assert [r['batch_loss'] for r in rows] != [r['batch_loss'] for r in ref_rows]


def _run_killed(workdir, at_step, signum):
  """A run that gets `signum` (a real signal, to this process) while the chunk at `at_step` runs.

  Returns the `Interrupted` it stops with.
  """
  assert threading.current_thread() is threading.main_thread()  # where handlers can be set
  original = Trainer.run_chunk
  sent = []

  def run_chunk(self, state, start, length):
    if start >= at_step and not sent:
      sent.append(start)
      os.kill(os.getpid(), signum)  # handled before the chunk starting here runs
    return original(self, state, start, length)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(Trainer, 'run_chunk', run_chunk)
    with pytest.raises(Interrupted) as err:
      experiment.train_and_evaluate(_small_config(), str(workdir), log=quiet)
  assert sent
  return err.value


@pytest.mark.parametrize('signame,at_step', [('SIGTERM', 150), ('SIGINT', 200)])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, reference,
                                                                  signame, at_step):
  signum = getattr(signal, signame)
  before = signal.getsignal(signum)
  stopped = _run_killed(tmp_path, at_step, signum)
  assert signal.getsignal(signum) == before  # the previous handler is back
  stopped_at = at_step + 50  # the signal lands during the chunk [at_step, at_step + 50)
  assert stopped.signum == signum and stopped.step == stopped_at
  assert f'{signame} at step {stopped_at} of 300' in str(stopped)
  assert not (tmp_path / 'results.json').exists()
  assert max(int(d) for d in os.listdir(tmp_path / 'checkpoints')) == stopped_at
  rows = io_utils.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert [r['step'] for r in rows] == [s for s in (100, 200) if s <= stopped_at]

  lines = []
  experiment.train_and_evaluate(_small_config(), str(tmp_path), log=lines.append)
  assert f'resuming from the checkpoint of step {stopped_at}' in lines
  _assert_same(_outputs(tmp_path), _outputs(reference))
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['timing']['resumed_from_step'] == stopped_at


@pytest.mark.parametrize('signame', ['SIGINT', 'SIGTERM'])
def test_external_signal_during_a_long_chunk_saves_and_exits_128_plus_signal(tmp_path, signame):
  """A real signal from outside, while a compiled chunk runs: saved at the chunk's end."""
  env = dict(os.environ, XLA_FLAGS=xla_flags())
  proc = subprocess.Popen(
      [sys.executable, '-m', 'hinge_jax.main', f'--workdir={tmp_path}',
       '--config.num_steps=10000000', '--config.eval_every_steps=2000',
       '--config.checkpoint_every_steps=2000', '--config.batch_size=20',
       '--config.sanity.enabled=False'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.read_text().count('\n') >= 1):
    assert time.time() < deadline and proc.poll() is None, proc.communicate()
    time.sleep(0.05)
  signum = getattr(signal, signame)
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 128 + signum, err
  assert f'stopped: {signame} at step' in err and 'Traceback' not in err
  step = int(err.split(f'{signame} at step ')[1].split()[0])
  assert step % 2000 == 0 and 2000 <= step < 10000000
  assert max(int(d) for d in os.listdir(tmp_path / 'checkpoints')) == step
  assert max(r['step'] for r in io_utils.read_jsonl(str(metrics))) == step


def test_torn_metrics_line_and_corrupt_latest_checkpoint(tmp_path, reference):
  _run_killed(tmp_path, 200, signal.SIGTERM)
  # A crash tore the last metrics line, and the newest checkpoint (250) lost its data.
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 300, "loss": 0.1')
  state_dir = tmp_path / 'checkpoints' / '250' / 'state'
  for root, _, files in os.walk(state_dir):
    for name in files:
      if name not in ('commit_success.txt',):
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'garbage')
  lines = []
  experiment.train_and_evaluate(_small_config(), str(tmp_path), log=lines.append)
  warning = [l for l in lines if l.startswith('warning: the checkpoint of step 250')]
  assert len(warning) == 1 and 'falling back to step 200' in warning[0], lines
  assert 'resuming from the checkpoint of step 200' in lines
  assert os.listdir(tmp_path / 'checkpoints-corrupt')  # set aside, not deleted
  _assert_same(_outputs(tmp_path), _outputs(reference))


def test_a_different_config_is_refused_in_one_line_unless_overwrite(tmp_path, reference):
  shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
  before = (tmp_path / 'results.json').read_text()
  other = _small_config(**{'reg.strength': 0.01, 'optimizer.learning_rate': 0.1})
  with pytest.raises(UserError) as err:
    experiment.train_and_evaluate(other, str(tmp_path), log=quiet)
  error = str(err.value)
  assert '\n' not in error
  assert 'reg.strength: 0.001 → 0.01' in error
  assert 'optimizer.learning_rate: 0.05 → 0.1' in error and '--overwrite' in error
  assert (tmp_path / 'results.json').read_text() == before  # nothing touched

  lines = []
  experiment.train_and_evaluate(other, str(tmp_path), log=lines.append, overwrite=True)
  assert not any('resuming' in line for line in lines)
  assert any(line.startswith('--overwrite: removed the previous run') for line in lines)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['config']['reg']['strength'] == 0.01
  assert results['timing']['resumed_from_step'] == 0


def test_checkpoint_of_another_shape_is_refused(tmp_path):
  """Same config, different data (an npz file replaced): one line, nothing overwritten."""
  rng = np.random.default_rng(0)
  path = tmp_path / 'd.npz'
  np.savez(path, x_train=rng.normal(size=(60, 4)), y_train=np.arange(60) % 3)
  config = _small_config(**{'dataset.name': 'npz', 'dataset.path': str(path),
                            'batch_size': 10, 'num_steps': 20, 'eval_every_steps': 10,
                            'checkpoint_every_steps': 10})
  workdir = str(tmp_path / 'w')
  experiment.train_and_evaluate(config, workdir, log=lambda line: None)
  np.savez(path, x_train=rng.normal(size=(60, 5)), y_train=np.arange(60) % 3)
  with pytest.raises(UserError, match=r'holds params/W of shape \[1, 3, 4\] but this run needs '
                                      r'\[1, 3, 5\].*--overwrite'):
    experiment.train_and_evaluate(config, workdir, log=lambda line: None)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '20']


def test_unwritable_workdir(tmp_path):
  (tmp_path / 'f').write_text('x')
  with pytest.raises(UserError, match='is a file'):
    experiment.train_and_evaluate(_small_config(), str(tmp_path / 'f'), log=lambda line: None)
  if os.geteuid() != 0:  # root may write anywhere
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(UserError, match='not writable'):
      experiment.train_and_evaluate(_small_config(), str(ro), log=lambda line: None)


class _Exited(BaseException):
  """What os._exit raises in the test below (the test process must live on)."""


def test_a_second_signal_during_the_checkpoint_save_exits_at_once(tmp_path, monkeypatch, capfd):
  """SIGINT during a chunk, then SIGINT again while its checkpoint is saved: one line, 130.

  The run holds its workdir meanwhile: another run on it is refused.
  """
  def fake_exit(code):
    raise _Exited(code)
  monkeypatch.setattr(os, '_exit', fake_exit)
  real_save = experiment.Checkpointer.save
  saves = []

  def save_with_a_second_signal(self, step, *args, **kwargs):
    saves.append(step)
    with pytest.raises(UserError, match='is in use by pid'):
      experiment.train_and_evaluate(_small_config(), str(tmp_path), log=quiet)
    os.kill(os.getpid(), signal.SIGINT)  # the second one, while the first is being handled
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(experiment.Checkpointer, 'save', save_with_a_second_signal)
  before = signal.getsignal(signal.SIGINT)
  original = Trainer.run_chunk

  def run_chunk(self, state, start, length):
    if start == 0:
      os.kill(os.getpid(), signal.SIGINT)
    return original(self, state, start, length)
  monkeypatch.setattr(Trainer, 'run_chunk', run_chunk)
  with pytest.raises(_Exited) as exited:
    experiment.train_and_evaluate(_small_config(), str(tmp_path), log=quiet)
  assert exited.value.args == (128 + signal.SIGINT,)
  assert saves == [50]  # the first signal's save, cut short
  assert capfd.readouterr().err == ('stopped: second SIGINT, exiting at once; rerun the same '
                                    'command to resume from the last checkpoint\n')
  assert signal.getsignal(signal.SIGINT) == before


@pytest.mark.parametrize('count', [1, 2])
def test_a_signal_after_training_finishes_writing_or_exits_at_once(tmp_path, monkeypatch,
                                                                   capfd, count):
  """SIGINT while the plots are drawn: one lets the run finish, a second exits at once."""
  def fake_exit(code):
    raise _Exited(code)
  monkeypatch.setattr(os, '_exit', fake_exit)
  real_draw = experiment.outputs.draw_plots

  def draw_with_signals(*args, **kwargs):
    for _ in range(count):
      os.kill(os.getpid(), signal.SIGINT)
    return real_draw(*args, **kwargs)
  monkeypatch.setattr(experiment.outputs, 'draw_plots', draw_with_signals)
  before = signal.getsignal(signal.SIGINT)
  config = _small_config(num_steps=100)
  if count == 1:
    results = experiment.train_and_evaluate(config, str(tmp_path), log=quiet)
    assert json.loads((tmp_path / 'results.json').read_text())['steps'] == results['steps']
    assert capfd.readouterr().err == ''
  else:
    with pytest.raises(_Exited) as exited:
      experiment.train_and_evaluate(config, str(tmp_path), log=quiet)
    assert exited.value.args == (128 + signal.SIGINT,)
    assert capfd.readouterr().err == ('stopped: second SIGINT, exiting at once; rerun the same '
                                      'command to resume from the last checkpoint\n')
  assert signal.getsignal(signal.SIGINT) == before
