"""A process that dies or hangs stops the others in one line (hinge_jax/distributed.py Watchdog).

The watchdog's rules run here against JAX's real coordination service (its key-value store,
in this process) on a fake clock; the process boundary itself (SIGKILL, SIGSTOP, exit codes,
what stderr holds) runs as real `hinge_jax.main` processes, 2 × 4 CPU devices.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from jax._src.lib import _jax

from hinge_jax import distributed
from hinge_jax.errors import UserError
from helpers import REPO, xla_flags

TIMEOUT_S = 5  # --process_timeout_s of the process tests
ABORT_WORDS = ('Check failure', 'Terminating process', 'Fatal Python error', 'Traceback')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('process_timeout_s', [0, -1, 50, 80])
def test_process_timeout_must_be_positive_and_below_half_the_heartbeat(process_timeout_s):
  with pytest.raises(UserError, match=rf'--process_timeout_s={process_timeout_s} must be '
                     r'positive and below half of --heartbeat_timeout_s=100 \(seconds\)'):
    distributed.settings('h:1', 2, 0, heartbeat_s=100, process_timeout_s=process_timeout_s,
                         environ={})
  s = distributed.settings('h:1', 2, 0, heartbeat_s=100, process_timeout_s=49, environ={})
  assert s.process_timeout_s == 49


def test_process_timeout_flag_is_refused_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'hinge_jax.main', f'--workdir={tmp_path}',
                         '--coordinator=localhost:1', '--num_processes=2', '--process_id=1',
                         '--process_timeout_s=0'], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.startswith('error: --process_timeout_s=0 must be positive'), proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture
def clients():
  """Three connected clients of a real coordination service (in this process)."""
  port = _free_port()
  service = _jax.get_distributed_runtime_service(f'[::]:{port}', 3, heartbeat_timeout=100)
  out = [_jax.get_distributed_runtime_client(f'localhost:{port}', i, init_timeout=20,
                                             heartbeat_timeout=100) for i in range(3)]
  threads = [threading.Thread(target=c.connect) for c in out]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  yield out
  threads = [threading.Thread(target=c.shutdown) for c in out]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  service.shutdown()


class Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now

  def sleep(self, seconds: float) -> None:
    self.now += seconds


def _dogs(clients, clock, ends):
  return [distributed.Watchdog(c, i, len(clients), TIMEOUT_S, clock=clock, sleep=clock.sleep,
                               end=ends.append) for i, c in enumerate(clients)]


def test_a_process_whose_counter_stands_still_is_named_after_the_timeout(clients):
  clock, ends = Clock(), []
  dogs = _dogs(clients, clock, ends)
  for _ in range(3):
    for dog in dogs:
      dog.beat()
    clock.now += TIMEOUT_S / 2
  assert [dog.verdict() for dog in dogs] == [None] * 3
  for _ in range(2):  # process 2 stops beating
    for dog in dogs[:2]:
      dog.beat()
    clock.now += TIMEOUT_S / 2
  assert [dogs[0].verdict(), dogs[1].verdict()] == [None, None]  # exactly the timeout: not yet
  clock.now += 0.1
  dogs[0].beat()
  line = ('process 2 of 3 stopped responding (no heartbeat for 5 s); stopping the others - '
          'see its log')
  assert dogs[0].verdict() == line
  assert ends == []


def test_two_silent_processes_are_both_named(clients):
  clock, ends = Clock(), []
  dog = _dogs(clients, clock, ends)[0]
  clock.now += TIMEOUT_S + 1
  dog.beat()
  assert dog.verdict() == ('processes 1, 2 of 3 stopped responding (no heartbeat for 5 s); '
                           'stopping the others - see their logs')


def test_a_process_that_finished_is_never_waited_for(clients):
  clock, ends = Clock(), []
  dogs = _dogs(clients, clock, ends)
  for dog in [*dogs, dogs[0]]:  # process 0 has seen everyone's first beat
    dog.beat()
  dogs[1].stop(done=True)  # ends first; process 0 keeps writing (plots, say)
  dogs[2].stop(done=False)  # failed alone: the others must not wait for it
  clock.now += 10 * TIMEOUT_S
  dogs[0].beat()
  assert dogs[0].verdict() == ('process 2 of 3 stopped responding (no heartbeat for 5 s); '
                               'stopping the others - see its log')


def test_an_unanswering_coordinator_is_lost(clients):
  clock, ends = Clock(), []
  dogs = _dogs(clients, clock, ends)
  for dog in dogs:
    dog.beat()
  clock.now += TIMEOUT_S + 0.1  # nobody's store round answered meanwhile
  assert dogs[1].verdict() == ('lost the coordinator (process 0): no answer for 5 s; stopping '
                               '- see its log')
  assert dogs[0].verdict().startswith('processes 1, 2 of 3 stopped responding')


def test_the_first_verdict_is_every_process_line(clients, capfd):
  clock, ends = Clock(), []
  dogs = _dogs(clients, clock, ends)
  for dog in dogs:
    dog.beat()
  for _ in range(3):  # process 2 stops beating
    for dog in dogs[:2]:
      dog.beat()
    clock.now += TIMEOUT_S / 2
  dogs[1].beat()
  line = dogs[1].verdict()
  assert line.startswith('process 2 of 3 stopped responding')
  dogs[1]._halt(line, store=True)  # process 1 sees it first
  assert ends == [2]
  assert capfd.readouterr().err == f'error: {line}\n'
  entries = dict(clients[0].key_value_dir_get('hinge_jax/alive/'))
  assert entries['hinge_jax/alive/process_1'] == 'stopped'
  dogs[0].beat()
  assert dogs[0].verdict() == line  # read from the store
  dogs[0]._halt(line, store=True)
  assert ends == [2, 2]
  assert capfd.readouterr().err == f'error: {line}\n'
  assert dict(clients[0].key_value_dir_get('hinge_jax/alive/'))['hinge_jax/alive/verdict'] == line


def test_a_store_that_fails_loses_the_coordinator(capfd):
  class Gone:
    def key_value_set(self, *args, **kwargs):
      raise RuntimeError('UNAVAILABLE: Failed to send RPC to coordination service.\nmore')

  def end(code):
    ends.append(code)
    raise SystemExit(code)  # ends the loop, as os._exit ends the process

  ends = []
  dog = distributed.Watchdog(Gone(), 1, 2, TIMEOUT_S, end=end)
  with pytest.raises(SystemExit):
    dog._beating()
  assert ends == [2]
  assert capfd.readouterr().err == (
      'error: lost the coordinator (process 0): UNAVAILABLE: Failed to send RPC to coordination '
      'service.; stopping - see its log\n')


# The process tests: a sweep long enough to be killed while it trains.
SWEEP = ['--config.num_steps=100000', '--config.eval_every_steps=50',
         '--config.sanity.enabled=False', '--config.sweep.grid=reg.strength=1e-3,1e-2,1e-1,1']
DATA_SHARDED = ['--config.num_steps=100000', '--config.eval_every_steps=50',
                '--config.sanity.enabled=False', '--config.sweep.grid=reg.strength=1e-3,1e-2',
                '--config.batch_size=0', '--config.mesh.data=8']


def _start(tmp_path, overrides, timeout_s=TIMEOUT_S) -> tuple[list, list]:
  """Two `hinge_jax.main` processes, 4 CPU devices each; their stdout+stderr files."""
  common = ['--num_processes=2', f'--coordinator=localhost:{_free_port()}',
            f'--process_timeout_s={timeout_s}', f'--workdir={tmp_path / "run"}', *overrides]
  env = dict(os.environ, XLA_FLAGS=xla_flags(4))
  logs = [tmp_path / f'process_{i}.out' for i in range(2)]
  procs = []
  for i in range(2):
    with open(logs[i], 'w') as out:
      procs.append(subprocess.Popen(
          [sys.executable, '-m', 'hinge_jax.main', f'--process_id={i}', *common], cwd=REPO,
          env=env, stdout=out, stderr=subprocess.STDOUT))
  return procs, logs


def _await_training(procs, logs) -> None:
  deadline = time.monotonic() + 240
  while 'step 50/' not in logs[0].read_text():  # process 0 logs the sweep's progress
    assert time.monotonic() < deadline and all(p.poll() is None for p in procs), (
        logs[0].read_text()[-2000:])
    time.sleep(0.2)


def _ended(proc, log, within_s: float) -> tuple[int, list[str], str]:
  """(exit code, `error:` lines, output) of `proc`, which must end within `within_s`."""
  t0 = time.monotonic()
  try:
    code = proc.wait(timeout=within_s)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    pytest.fail(f'still running {within_s} s on: {log.read_text()[-2000:]}')
  assert time.monotonic() - t0 < within_s
  text = log.read_text()
  return code, [l for l in text.splitlines() if l.startswith('error:')], text


def _signal_one(tmp_path, overrides, *, victim: int, sig) -> tuple:
  """Two processes training; `sig` to process `victim` once both train: the other's exit
  code, `error:` lines and output (JAX's own abort would come after 50-100 s)."""
  procs, logs = _start(tmp_path, overrides)
  other = 1 - victim
  try:
    _await_training(procs, logs)
    procs[victim].send_signal(sig)
    return _ended(procs[other], logs[other], TIMEOUT_S + 15)
  finally:
    for p in procs:
      p.kill()
      p.wait()


@pytest.mark.parametrize('overrides, sig', [(SWEEP, signal.SIGKILL),
                                             (DATA_SHARDED, signal.SIGSTOP)],
                         ids=['killed', 'hung_in_an_all_reduce'])
def test_a_dead_or_hung_process_stops_the_other_in_one_line(tmp_path, overrides, sig):
  # Members over processes: process 0 waits in a gather. Rows over processes, process 1
  # stopped: process 0 waits inside the compiled step's all-reduce. (A SIGKILL there can make
  # gloo itself end process 0 at once, `terminate called after throwing gloo::EnforceNotMet`:
  # docs/multihost.md.)
  code, errors, text = _signal_one(tmp_path, overrides, victim=1, sig=sig)
  assert code == 2, text[-3000:]
  assert errors == ['error: process 1 of 2 stopped responding (no heartbeat for 5 s); stopping '
                    'the others - see its log']
  assert not [w for w in ABORT_WORDS if w in text], text[-3000:]


def test_a_hung_coordinator_stops_the_other_in_one_line(tmp_path):
  # SIGSTOP: alive, but neither training nor serving
  code, errors, text = _signal_one(tmp_path, SWEEP, victim=0, sig=signal.SIGSTOP)
  assert code == 2, text[-3000:]
  assert errors == ['error: lost the coordinator (process 0): no answer for 5 s; stopping - '
                    'see its log']
  assert not [w for w in ABORT_WORDS if w in text], text[-3000:]


LINGER = """
import sys, time
from hinge_jax import distributed
port, process_id, num_processes, timeout_s, linger = map(int, sys.argv[1:])
s = distributed.settings(f'localhost:{port}', num_processes, process_id,
                         process_timeout_s=timeout_s)
distributed.initialize(s)
with distributed.watchdog(s):
  print('watching', flush=True)
  time.sleep(linger)  # the run's own work
"""


def _lingering(lingers: list[int], timeout_s: int) -> list:
  port = _free_port()
  return [subprocess.Popen([sys.executable, '-c', LINGER, str(port), str(i), str(len(lingers)),
                            str(timeout_s), str(linger)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
          for i, linger in enumerate(lingers)]


@pytest.mark.parametrize('late', [0, 1])
def test_a_process_that_finishes_first_stops_nobody(late):
  procs = _lingering([4 if i == late else 0 for i in range(2)], timeout_s=1)
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  assert [out.strip() for out in outs] == ['watching', 'watching']  # no error line


def test_every_survivor_says_the_same_line_and_process_0_ends_last():
  procs = _lingering([60, 60, 60], timeout_s=2)
  try:
    assert [p.stdout.readline() for p in procs] == ['watching\n'] * 3  # all joined
    procs[2].send_signal(signal.SIGKILL)
    outs = [p.communicate(timeout=30)[0] for p in procs[:2]]
  finally:
    for p in procs:
      p.kill()
      p.wait()
  line = ('error: process 2 of 3 stopped responding (no heartbeat for 2 s); stopping the others '
          '- see its log')
  assert [p.returncode for p in procs[:2]] == [2, 2], outs
  assert [out.strip() for out in outs] == [line, line]  # process 1 was not aborted by JAX
