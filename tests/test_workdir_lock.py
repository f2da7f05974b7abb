"""A run owns its workdir: single runs, sweeps and launches refuse a workdir another holds.

In-process (the lock is an flock, so two descriptors in one process exclude each other); a
child process only where its death is the thing tested.
"""

import errno
import json
import os
import re
import socket
import subprocess
import sys

import pytest

from hinge_jax import experiment, io_utils, results, sweep
from hinge_jax.errors import UserError
from helpers import REPO, default_config
from launch import run as launch_run


def _in_use(workdir, pid):
  return (rf'^--workdir={re.escape(str(workdir))} is in use by pid {pid} on host '
          rf'{re.escape(socket.gethostname())} \(started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\); '
          rf'wait for it or choose another --workdir$')


def test_a_locked_workdir_is_refused_by_runs_sweeps_and_launches_and_overwrite_keeps_it(
    tmp_path):
  (tmp_path / 'config.json').write_text('{"other": "run"}\n')
  (tmp_path / 'metrics.jsonl').write_text('{"step": 100}\n')
  before = {p.name: p.read_text() for p in tmp_path.iterdir()}
  with io_utils.WorkdirLock(str(tmp_path)):
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
    with pytest.raises(UserError, match=_in_use(tmp_path, os.getpid())):
      experiment.train_and_evaluate(default_config(), str(tmp_path), overwrite=True)
    with pytest.raises(UserError, match=_in_use(tmp_path, os.getpid())):
      sweep.run(default_config(**{'sweep.grid': 'seed=0,1'}), str(tmp_path), overwrite=True)
    config = default_config(**{'sweep.structural': 'loss.name=multiclass_svm'})
    with pytest.raises(UserError, match=_in_use(tmp_path, os.getpid())):
      launch_run.launch(config, 'configs/default.py', str(tmp_path))
    # --overwrite removed nothing, and launch.json was not written
    assert {p.name: p.read_text() for p in tmp_path.iterdir() if p.name != '.lock'} == before
  assert not (tmp_path / '.lock').exists()  # a clean exit leaves no lock file
  assert io_utils.LOCK_NAME not in results.OUTPUTS  # never an output of a run


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from hinge_jax import io_utils; '
       'io_utils.WorkdirLock(sys.argv[1]).acquire(); print("locked", flush=True); time.sleep(60)',
       str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline() == 'locked\n'
    with pytest.raises(UserError, match=_in_use(tmp_path, holder.pid)):
      io_utils.WorkdirLock(str(tmp_path)).acquire()
  finally:
    holder.kill()
    holder.wait()
  # the killed process left its lock file behind; the kernel dropped its flock
  assert json.loads((tmp_path / '.lock').read_text())['pid'] == holder.pid
  with io_utils.WorkdirLock(str(tmp_path)):
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
  assert not (tmp_path / '.lock').exists()


def test_a_lock_file_removed_while_locking_is_locked_again(tmp_path, monkeypatch):
  """The holder removes its file as it exits: a contender that locked that file retries."""
  real_flock = io_utils.fcntl.flock
  calls = []

  def flock_after_the_holder_left(fd, op):
    calls.append(op)
    if len(calls) == 1:
      os.unlink(tmp_path / '.lock')  # the previous holder's clean exit, just before ours
    return real_flock(fd, op)
  monkeypatch.setattr(io_utils.fcntl, 'flock', flock_after_the_holder_left)
  with io_utils.WorkdirLock(str(tmp_path)):
    assert len(calls) == 2
    assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()


def test_a_file_system_without_locks_is_one_line(tmp_path, monkeypatch):
  def no_locks(fd, op):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
  monkeypatch.setattr(io_utils.fcntl, 'flock', no_locks)
  with pytest.raises(UserError, match=r'cannot be locked \(No locks available\); choose a '
                                      r'--workdir on a file system that supports flock$'):
    io_utils.WorkdirLock(str(tmp_path)).acquire()
