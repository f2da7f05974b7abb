"""A full disk at any writer of a run, at any point (closing included): one `error:` line that
names the file and the fix, no half-written file, and the rerun ends as an uninterrupted run.

In-process: each writer's own write call raises OSError(ENOSPC) (the file's fsync, NumPy's
savez, matplotlib's savefig, tensorboardX's and orbax's methods); one subprocess test for
the command line's exit code and its single stderr line.
"""

import errno
import json
import os
import subprocess
import sys
import threading

import matplotlib.figure
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorboardX

from hinge_jax import experiment, plots, sweep
from hinge_jax.errors import UserError
from helpers import REPO, default_config, quiet, without_timings
from launch import collect as launch_collect, run as launch_run

# Three evaluations and checkpoints (steps 10, 20, 30), the last one the final save.
SMALL = {'num_steps': 30, 'eval_every_steps': 10, 'checkpoint_every_steps': 10,
         'sanity.enabled': False}


def _config(**overrides):
  return default_config(**{**SMALL, **overrides})


def _enospc(filename=None):
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


@pytest.fixture(scope='module')
def reference(reference_run):
  return reference_run(_config())


def _nth_call(n, fail):
  """A replacement that calls `fail(*args)` at its n-th call and `real` otherwise."""
  calls = [0]

  def wrap(real):
    def replacement(*args, **kwargs):
      calls[0] += 1
      if calls[0] == n:
        return fail(*args, **kwargs)
      return real(*args, **kwargs)
    return replacement
  return wrap


def _fail_fsync(monkeypatch, name, n=1):
  """From the n-th on, an fsync of a file whose name holds `name` fails (the data may be
  written: ENOSPC often shows only at fsync), in whichever thread; returns those threads."""
  real, count, threads = os.fsync, [0], []

  def fsync(fd):
    target = os.readlink(f'/proc/self/fd/{fd if isinstance(fd, int) else fd.fileno()}')
    if name in os.path.basename(target):
      count[0] += 1
      if count[0] >= n:
        threads.append(threading.current_thread())
        raise _enospc()
    real(fd)
  monkeypatch.setattr(os, 'fsync', fsync)
  return threads


def _half_written(path, *args, **kwargs):
  """Writes some bytes to `path`, then the disk is full."""
  del args, kwargs
  with open(path, 'wb') as f:
    f.write(b'half a file')
  raise _enospc()


def _enospc_raiser(*args, **kwargs):
  del args, kwargs
  raise _enospc()


def _raise_wrapped(*args, **kwargs):
  """orbax's way: its own error type, the OSError as the cause."""
  del args, kwargs
  raise RuntimeError('orbax: write failed') from _enospc()


def _second_failure(*args, **kwargs):
  del args, kwargs
  raise RuntimeError('a second failure while closing')


def _closed_then(close, fail):
  """A close method that closes, then fails as `fail` does (nothing is left open)."""
  def closing(self):
    close(self)
    fail()
  return closing


def _inject(monkeypatch, writer):
  """Makes `writer` fail; returns the text its error line must name."""
  if writer in ('config.json', 'metrics.jsonl', 'results.json'):
    _fail_fsync(monkeypatch, writer, n=2 if writer == 'metrics.jsonl' else 1)
    return writer
  if writer == 'tensorboard events (writer thread)':  # its thread flushes every 10 ms
    init = tensorboardX.SummaryWriter.__init__
    monkeypatch.setattr(tensorboardX.SummaryWriter, '__init__',
                        lambda self, **kwargs: init(self, **{**kwargs, 'flush_secs': 0.01}))
    failed_in = _fail_fsync(monkeypatch, 'events.out.tfevents')
    died = []
    monkeypatch.setattr(threading, 'excepthook', died.append)
    _THREADS.update(failed_in=failed_in, died=died)
    return 'tensorboard'
  if writer == 'tensorboard add_scalar':
    monkeypatch.setattr(tensorboardX.SummaryWriter, 'add_scalar', _nth_call(3, _enospc_raiser)(
        tensorboardX.SummaryWriter.add_scalar))
    return 'tensorboard'
  if writer == 'tensorboard close':
    monkeypatch.setattr(tensorboardX.SummaryWriter, 'close',
                        _closed_then(tensorboardX.SummaryWriter.close, _enospc_raiser))
    return 'tensorboard'
  if writer == 'checkpoint save':  # and everything closed after it fails too
    monkeypatch.setattr(ocp.CheckpointManager, 'save', _nth_call(2, _raise_wrapped)(
        ocp.CheckpointManager.save))
    for cls in (tensorboardX.SummaryWriter, ocp.CheckpointManager):
      monkeypatch.setattr(cls, 'close', _closed_then(cls.close, _second_failure))
    return 'the checkpoint of step 20'
  if writer == 'checkpoint close':
    monkeypatch.setattr(ocp.CheckpointManager, 'close',
                        _closed_then(ocp.CheckpointManager.close, _raise_wrapped))
    return 'checkpoints'
  if writer == 'params.npz':
    monkeypatch.setattr(np, 'savez', _half_written)
    return 'params.npz'
  if writer == 'plots':  # the second picture: the first one is whole
    monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', _nth_call(
        2, lambda fig, path, **kwargs: _half_written(path))(matplotlib.figure.Figure.savefig))
    return os.path.join('plots', 'accuracy.png')
  if writer == 'lock file':
    monkeypatch.setattr(os, 'pwrite', _enospc_raiser)
    return '.lock'
  raise AssertionError(writer)


_THREADS = {}  # the writer-thread case: where fsync failed, which threads died

WRITERS = ['config.json', 'metrics.jsonl', 'tensorboard events (writer thread)',
           'tensorboard add_scalar', 'checkpoint save', 'checkpoint close', 'params.npz',
           'results.json', 'plots', 'tensorboard close', 'lock file']


def _no_half_written_files(workdir):
  """No temporary file is left, and every JSON file there parses whole."""
  for root, dirs, files in os.walk(workdir):
    dirs[:] = [d for d in dirs if d != 'checkpoints']  # orbax's own temporary directories
    for name in files:
      assert '.tmp' not in name and not (name.startswith('.') and name != '.lock'), (root, name)
      path = os.path.join(root, name)
      if name.endswith('.json'):
        json.loads(open(path).read())
      if name.endswith('.jsonl'):
        text = open(path).read()
        assert not text or text.endswith('\n'), text
        for line in text.splitlines():
          json.loads(line)


@pytest.mark.parametrize('writer', WRITERS)
def test_a_full_disk_at_any_writer_is_one_line_then_the_rerun_recovers(tmp_path, monkeypatch,
                                                                       reference, writer):
  config = _config()
  with monkeypatch.context() as m:
    names = _inject(m, writer)
    with pytest.raises(UserError) as err:
      experiment.train_and_evaluate(config, str(tmp_path), log=quiet)
  message = str(err.value)
  assert '\n' not in message and 'No space left on device' in message, message
  assert names in message and 'free space' in message, message
  assert 'rerun the same command' in message or writer == 'lock file', message
  _no_half_written_files(tmp_path)
  assert not (tmp_path / '.lock').exists()  # released: the rerun is not refused
  if writer == 'metrics.jsonl':  # the torn second row was cut off: the first one stays whole
    first = (reference / 'metrics.jsonl').read_text().splitlines(keepends=True)[0]
    assert (tmp_path / 'metrics.jsonl').read_text() == first
  if writer == 'checkpoint save':  # the failed step is not a checkpoint; the earlier one is
    assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10']
  if writer == 'params.npz':  # written before results.json
    assert not (tmp_path / 'params.npz').exists() and not (tmp_path / 'results.json').exists()
  if writer == 'tensorboard events (writer thread)':  # failed there, raised here, none died
    assert any(t is not threading.main_thread() for t in _THREADS['failed_in'])
    assert _THREADS['died'] == []
  if writer == 'plots':  # drawn after results.json, one picture after another
    assert (tmp_path / 'plots' / 'loss.png').read_bytes().startswith(b'\x89PNG')
    assert not (tmp_path / 'plots' / 'accuracy.png').exists()
    assert json.loads((tmp_path / 'results.json').read_text())['steps'] == 30

  drawn = []
  if writer != 'plots':  # drawing is most of a short run's time: drawn for real where tested
    monkeypatch.setattr(plots, 'draw', lambda workdir, **kwargs: drawn.append(workdir))
  experiment.train_and_evaluate(config, str(tmp_path), log=quiet)
  assert (tmp_path / 'metrics.jsonl').read_bytes() == (reference / 'metrics.jsonl').read_bytes()
  assert (tmp_path / 'params.npz').read_bytes() == (reference / 'params.npz').read_bytes()
  assert without_timings(tmp_path) == without_timings(reference)
  if writer == 'plots':
    assert sorted(os.listdir(tmp_path / 'plots')) == sorted(os.listdir(reference / 'plots'))
  else:
    assert drawn == [str(tmp_path)]
  _no_half_written_files(tmp_path)


# The case, through the command line: the checkpoint's save fails, then the TensorBoard
# events cannot be flushed and closing the checkpoint manager and the writer fails again.
_CLI = '''
import errno, os, sys
import orbax.checkpoint as ocp, tensorboardX
def enospc(*a, **k):
  raise RuntimeError('orbax: write failed') from OSError(errno.ENOSPC, 'No space left on device')
real_save, real_fsync, saves = ocp.CheckpointManager.save, os.fsync, []
def save(self, *a, **k):
  saves.append(1)
  return enospc() if len(saves) == 2 else real_save(self, *a, **k)
def fsync(fd):
  if 'tfevents' in os.readlink(f'/proc/self/fd/{fd}'):
    raise OSError(errno.ENOSPC, 'No space left on device')
  real_fsync(fd)
ocp.CheckpointManager.save, ocp.CheckpointManager.close, os.fsync = save, enospc, fsync
tensorboardX.SummaryWriter.close = enospc
sys.argv = ['main'] + sys.argv[1:]
from hinge_jax import main
main.run()
'''


def test_the_command_line_prints_one_error_line_and_exits_2(tmp_path):
  """(The rerun after this failure is test_a_full_disk_at_any_writer_...[checkpoint save].)"""
  env = dict(os.environ)  # with this process's XLA_FLAGS: its compiled programs are reused
  proc = subprocess.run([sys.executable, '-c', _CLI, f'--workdir={tmp_path}',
                         *(f'--config.{k}={v}' for k, v in SMALL.items())],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 2, proc.stderr
  assert len(lines) == 1 and lines[0].startswith('error: cannot write the checkpoint of step 20 '
                                                 f'to {tmp_path}/checkpoints'), proc.stderr
  assert 'Traceback' not in proc.stderr and 'Exception' not in proc.stderr
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10']  # the earlier one is kept
  assert not (tmp_path / '.lock').exists()


@pytest.mark.parametrize('name', ['sweep.csv', 'results.json'])
def test_a_full_disk_during_a_sweep_is_one_line(tmp_path, monkeypatch, name):
  """A sweep writes its outputs after training; a full disk there says to rerun (restart)."""
  config = default_config(**{'num_steps': 40, 'eval_every_steps': 20, 'sanity.enabled': False,
                             'sweep.grid': 'optimizer.learning_rate=0.02,0.2',
                             'sweep.devices': 1})  # test_sweep's signal tests' sweep
  _fail_fsync(monkeypatch, name)
  with pytest.raises(UserError) as err:
    sweep.run(config, str(tmp_path), log=quiet)
  message = str(err.value)
  assert '\n' not in message and name in message and 'No space left on device' in message
  assert 'rerun the same command to restart the sweep' in message
  assert not (tmp_path / name).exists() and not (tmp_path / '.lock').exists()
  _no_half_written_files(tmp_path)


def test_a_full_disk_while_launching_or_collecting_is_one_line(tmp_path, monkeypatch):
  """launch.run's launch.json (before any run starts) and launch.collect's collected.csv."""
  config = default_config(**{'sweep.structural': 'loss.name=multiclass_svm,softmax_cross_entropy'})
  with monkeypatch.context() as m:
    _fail_fsync(m, 'launch.json')
    with pytest.raises(UserError) as err:
      launch_run.launch(config, 'configs/default.py', str(tmp_path))
  assert 'launch.json (No space left on device)' in str(err.value)
  assert 'rerun the same command' in str(err.value) and '\n' not in str(err.value)
  assert sorted(os.listdir(tmp_path)) == []  # no run started, no temporary file, no lock
  (tmp_path / 'launch.json').write_text(json.dumps({'runs': [
      {'name': 'a', 'values': {}, 'workdir': str(tmp_path / 'a'), 'command': []}]}))
  _fail_fsync(monkeypatch, 'collected.csv')
  with pytest.raises(UserError, match=r'collected\.csv \(No space left on device\).*rerun '
                                      r'python -m launch\.collect$'):
    launch_collect.collect(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ['launch.json']
