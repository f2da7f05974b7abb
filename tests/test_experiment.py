"""Reproducible, resumable runs: seeds, checkpoints, signals, torn files, refused workdirs."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hinge_jax import experiment, io_utils
from hinge_jax.errors import UserError
from helpers import REPO, default_config, run_main

# Short digits runs: a checkpoint every 50 steps, evaluations every 100 (so a checkpoint can
# fall inside an evaluation period), with the compilation cache shared by the subprocesses.
SMALL = ('--config.num_steps=300', '--config.eval_every_steps=100',
         '--config.checkpoint_every_steps=50')
TIMING_KEYS = ('compile_time_s', 'run_time_s', 'wall_time_s', 'timing')


@pytest.fixture(scope='module')
def cache_env(tmp_path_factory):
  return {'HINGE_JAX_CACHE_DIR': str(tmp_path_factory.mktemp('jax_cache'))}


def _small_config(**overrides):
  base = {'num_steps': 300, 'eval_every_steps': 100, 'checkpoint_every_steps': 50}
  return default_config(**{**base, **overrides})


def _outputs(workdir):
  """results.json without timings, metrics rows, and the final params."""
  results = json.loads((workdir / 'results.json').read_text())
  for key in TIMING_KEYS:
    results.pop(key)
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
def reference(tmp_path_factory, cache_env):
  """An uninterrupted run of the small config (subprocess), to compare others against."""
  workdir = tmp_path_factory.mktemp('reference')
  proc = run_main(f'--workdir={workdir}', *SMALL, env=cache_env)
  assert proc.returncode == 0, proc.stderr
  return workdir


def test_same_seed_gives_identical_results_and_params(tmp_path, reference, cache_env):
  proc = run_main(f'--workdir={tmp_path}', *SMALL, env=cache_env)
  assert proc.returncode == 0, proc.stderr
  _assert_same(_outputs(tmp_path), _outputs(reference))


def test_another_seed_gives_different_params_and_metrics(tmp_path, reference, cache_env):
  proc = run_main(f'--workdir={tmp_path}', *SMALL, '--config.seed=1', env=cache_env)
  assert proc.returncode == 0, proc.stderr
  results, rows, params = _outputs(tmp_path)
  ref_results, ref_rows, ref_params = _outputs(reference)
  assert results['seed'] == 1 and ref_results['seed'] == 0
  assert not np.array_equal(params['W'], ref_params['W'])
  assert [r['batch_loss'] for r in rows] != [r['batch_loss'] for r in ref_rows]


_KILLER = '''
import os, signal, sys
from hinge_jax import train
after, signum = int(os.environ['KILL_AT_STEP']), getattr(signal, os.environ['KILL_SIGNAL'])
original = train.Trainer.run_chunk
def run_chunk(self, state, start, length):
  if start >= after and not getattr(train, '_sent', False):
    train._sent = True
    os.kill(os.getpid(), signum)  # delivered while the chunk starting here runs
  return original(self, state, start, length)
train.Trainer.run_chunk = run_chunk
from hinge_jax import main
sys.argv = ['hinge_jax.main'] + sys.argv[1:]
main.run()
'''


def _run_killed(workdir, at_step, signame, env, *extra):
  full_env = dict(os.environ, KILL_AT_STEP=str(at_step), KILL_SIGNAL=signame, **env)
  full_env.pop('XLA_FLAGS', None)
  return subprocess.run([sys.executable, '-c', _KILLER, f'--workdir={workdir}', *SMALL, *extra],
                        cwd=REPO, capture_output=True, text=True, timeout=300, env=full_env)


@pytest.mark.parametrize('signame,at_step', [('SIGTERM', 150), ('SIGINT', 200)])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(tmp_path, reference,
                                                                  cache_env, signame, at_step):
  proc = _run_killed(tmp_path, at_step, signame, cache_env)
  signum = getattr(signal, signame)
  assert proc.returncode == 128 + signum, (proc.returncode, proc.stderr)
  stopped_at = at_step + 50  # the signal lands during the chunk [at_step, at_step + 50)
  assert f'{signame} at step {stopped_at} of 300' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'results.json').exists()
  assert max(int(d) for d in os.listdir(tmp_path / 'checkpoints')) == stopped_at
  rows = io_utils.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert [r['step'] for r in rows] == [s for s in (100, 200) if s <= stopped_at]

  proc = run_main(f'--workdir={tmp_path}', *SMALL, env=cache_env)
  assert proc.returncode == 0, proc.stderr
  assert f'resuming from the checkpoint of step {stopped_at}' in proc.stdout
  _assert_same(_outputs(tmp_path), _outputs(reference))
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['timing']['resumed_from_step'] == stopped_at


def test_external_sigint_during_a_long_chunk_saves_and_stops(tmp_path, cache_env):
  """A real signal from outside, while a compiled chunk runs: saved at the chunk's end."""
  env = dict(os.environ, **cache_env)
  env.pop('XLA_FLAGS', None)
  proc = subprocess.Popen(
      [sys.executable, '-m', 'hinge_jax.main', f'--workdir={tmp_path}',
       '--config.num_steps=10000000', '--config.eval_every_steps=2000',
       '--config.checkpoint_every_steps=2000', '--config.batch_size=20'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.read_text().count('\n') >= 1):
    assert time.time() < deadline and proc.poll() is None, proc.communicate()
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  assert 'SIGINT at step' in err and 'Traceback' not in err
  step = int(err.split('SIGINT at step ')[1].split()[0])
  assert step % 2000 == 0 and 2000 <= step < 10000000
  assert max(int(d) for d in os.listdir(tmp_path / 'checkpoints')) == step
  assert max(r['step'] for r in io_utils.read_jsonl(str(metrics))) == step


def test_torn_metrics_line_and_corrupt_latest_checkpoint(tmp_path, reference, cache_env):
  proc = _run_killed(tmp_path, 200, 'SIGTERM', cache_env)
  assert proc.returncode == 143, proc.stderr
  # A crash tore the last metrics line, and the newest checkpoint (250) lost its data.
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 300, "loss": 0.1')
  state_dir = tmp_path / 'checkpoints' / '250' / 'state'
  for root, _, files in os.walk(state_dir):
    for name in files:
      if name not in ('commit_success.txt',):
        with open(os.path.join(root, name), 'wb') as f:
          f.write(b'garbage')
  proc = run_main(f'--workdir={tmp_path}', *SMALL, env=cache_env)
  assert proc.returncode == 0, proc.stderr
  warning = [l for l in proc.stdout.splitlines() if l.startswith('warning: the checkpoint of step 250')]
  assert len(warning) == 1 and 'falling back to step 200' in warning[0], proc.stdout
  assert 'Traceback' not in proc.stderr, proc.stderr
  assert 'resuming from the checkpoint of step 200' in proc.stdout
  assert os.listdir(tmp_path / 'checkpoints-corrupt')  # set aside, not deleted
  _assert_same(_outputs(tmp_path), _outputs(reference))


def test_a_different_config_is_refused_in_one_line_unless_overwrite(tmp_path, reference,
                                                                    cache_env):
  shutil.copytree(reference, tmp_path, dirs_exist_ok=True)
  before = (tmp_path / 'results.json').read_text()
  proc = run_main(f'--workdir={tmp_path}', *SMALL, '--config.reg.strength=0.01',
                  '--config.optimizer.learning_rate=0.1', env=cache_env)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'Traceback' not in proc.stderr
  assert 'reg.strength: 0.001 → 0.01' in errors[0]
  assert 'optimizer.learning_rate: 0.05 → 0.1' in errors[0] and '--overwrite' in errors[0]
  assert (tmp_path / 'results.json').read_text() == before  # nothing touched

  proc = run_main(f'--workdir={tmp_path}', *SMALL, '--config.reg.strength=0.01',
                  '--config.optimizer.learning_rate=0.1', '--overwrite', env=cache_env)
  assert proc.returncode == 0, proc.stderr
  assert 'resuming' not in proc.stdout
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


def test_full_disk_stops_in_one_line_and_loses_nothing(tmp_path, monkeypatch):
  config = _small_config(**{'num_steps': 40, 'eval_every_steps': 10,
                            'checkpoint_every_steps': 10})
  workdir = str(tmp_path / 'w')
  calls = []
  real_append = io_utils.append_jsonl

  def append_until_full(path, row):
    calls.append(row['step'])
    if row['step'] == 30:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    real_append(path, row)

  monkeypatch.setattr(io_utils, 'append_jsonl', append_until_full)
  with pytest.raises(UserError, match='No space left on device.*rerun the same command'):
    experiment.train_and_evaluate(config, workdir, log=lambda line: None)
  assert [r['step'] for r in io_utils.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))] == [10, 20]
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  monkeypatch.setattr(io_utils, 'append_jsonl', real_append)
  lines = []
  resumed = experiment.train_and_evaluate(config, workdir, log=lines.append)
  assert 'resuming from the checkpoint of step 20' in lines
  fresh = experiment.train_and_evaluate(config, str(tmp_path / 'fresh'), log=lambda line: None)
  for key in ('train_accuracy', 'val_accuracy', 'test_accuracy', 'final_loss'):
    assert resumed[key] == fresh[key]
  assert (io_utils.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
          == io_utils.read_jsonl(str(tmp_path / 'fresh' / 'metrics.jsonl')))


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
