"""Several processes as one JAX program (hinge_jax/distributed.py): settings and bad input.

The processes are real (`python -m hinge_jax.main` with `--coordinator`, CPU collectives over
gloo, 4 simulated devices each); every multi-process test starts its processes once.
"""

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import probe as probe_config
from hinge_jax import config_lib, distributed, experiment, io_utils, main, sweep
from hinge_jax.errors import UserError
from helpers import (REPO, TIMING_KEYS, default_config, quiet, run_main, write_embeddings,
                     xla_flags)
from launch import multiprocess, run as launch_run

SLURM = {'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4', 'SLURM_PROCID': '2'}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(args_of: list, devices: int = 4) -> list:
  """Starts one `hinge_jax.main` per argument list, `devices` CPU devices each."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices))
  return [subprocess.Popen([sys.executable, '-m', 'hinge_jax.main', *args], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for args in args_of]


def _errors(proc, timeout=120) -> list[str]:
  _, err = proc.communicate(timeout=timeout)
  return [l for l in err.splitlines() if l.startswith('error:')]


def test_no_flags_and_no_slurm_is_one_process():
  assert distributed.settings(None, None, None, environ={}) is None
  assert distributed.settings(None, None, None, environ={**SLURM, 'SLURM_NTASKS': '1'}) is None


def test_flags_give_the_settings():
  s = distributed.settings('node0:1234', 2, 1, timeout_s=5, environ={})
  assert (s.coordinator, s.num_processes, s.process_id, s.timeout_s, s.slurm) == (
      'node0:1234', 2, 1, 5, False)


def test_slurm_environment_gives_the_settings():
  s = distributed.settings(None, None, None, environ=SLURM)
  assert (s.coordinator, s.num_processes, s.process_id, s.slurm) == (None, 4, 2, True)
  assert distributed.settings(None, 4, 2, environ=SLURM).num_processes == 4  # agreeing flags


@pytest.mark.parametrize('args, environ, words', [
    ((None, 2, None), SLURM, '--num_processes=2 but Slurm started SLURM_NTASKS=4'),
    ((None, None, 0), SLURM, '--process_id=0 but this is Slurm task SLURM_PROCID=2'),
    ((None, 2, 0), {}, '--coordinator missing'),
    (('h:1', None, None), {}, '--num_processes, --process_id missing'),
    (('h:1', 2, 2), {}, '--process_id=2 must be in 0..1'),
    (('h', 2, 0), {}, "--coordinator='h' is not host:port"),
])
def test_inconsistent_settings_are_refused(args, environ, words):
  with pytest.raises(UserError, match=words.replace('.', r'\.')):
    distributed.settings(*args, environ=environ)


def test_fingerprint_follows_the_config():
  a, b = default_config(), default_config(seed=1)
  assert distributed.fingerprint(a) == distributed.fingerprint(default_config())
  assert distributed.fingerprint(a) != distributed.fingerprint(b)


def test_unreachable_coordinator_is_one_line_after_the_timeout(tmp_path):
  t0 = time.monotonic()
  proc = run_main(f'--workdir={tmp_path}', f'--coordinator=localhost:{_free_port()}',
                  '--num_processes=2', '--process_id=1', '--distributed_timeout_s=1')
  assert proc.returncode == 2
  assert proc.stderr.startswith('error: cannot reach the coordinator localhost:'), proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1
  assert time.monotonic() - t0 < 60  # no hang
  assert not os.listdir(tmp_path)


def test_processes_with_different_configs_stop_in_one_line(tmp_path):
  port = _free_port()
  common = ['--num_processes=2', f'--coordinator=localhost:{port}', '--distributed_timeout_s=60']
  procs = _start([[f'--workdir={tmp_path}', '--process_id=0', *common],
                  [f'--workdir={tmp_path}', '--process_id=1', *common, '--config.seed=1']])
  for proc in procs:
    assert _errors(proc) == ['error: process(es) 1 run a different config than process 0 '
                             '(config fingerprints differ); start every process with the same '
                             '--config and overrides']
    assert proc.returncode == 2
  assert not os.listdir(tmp_path)  # nothing written


def test_a_process_that_dies_stops_the_others_in_one_line(tmp_path, capsys):
  sleeper = [sys.executable, '-c', 'import sys, time; i = int(sys.argv[-1].split("=")[1]); '
             'time.sleep(60) if i == 0 else sys.exit(3)']
  t0 = time.monotonic()
  code = multiprocess.run_local(sleeper, 2, str(tmp_path), cwd=REPO)
  assert code == 3 and time.monotonic() - t0 < 30  # process 0 was stopped, not waited for
  assert capsys.readouterr().err == (
      f'error: process 1 of 2 exited with code 3 (see {tmp_path}/process_1.log); the others '
      f'were stopped\n')



REDUCER = r'''
import json, sys
import jax
import numpy as np
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
port, pid = sys.argv[1], int(sys.argv[2])
jax.distributed.initialize(f'localhost:{port}', 2, pid, initialization_timeout=60)
from hinge_jax import distributed
big = np.iinfo(np.int64).max - pid  # beyond int32: must cross as int64
fine = 1.0 + pid * 2.0 ** -40  # beyond float32: must cross as float64
stacked = distributed.gathered(np.asarray([[big, -pid]], np.int64))
added = distributed.summed({'f': np.asarray([fine, -3.5 * pid]), 'n': np.int64(big // 4)})
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, *_, **__: compiles.append(event) if 'backend_compile' in event else None)
for _ in range(3):  # a gather of the same shape again: no new program
  distributed.agreed_max(pid)
print('RESULT ' + json.dumps({
    'gathered': stacked.tolist(), 'gathered_dtype': str(stacked.dtype),
    'summed_f': [float.hex(float(v)) for v in added['f']], 'summed_n': int(added['n']),
    'min': distributed.agreed_min((5 - pid) << 30), 'max': distributed.agreed_max(pid + 7),
    'compiles': len(compiles)}))
'''


def test_gathered_and_summed_over_two_processes_keep_order_and_dtype():
  """The reductions between processes (gloo): stacked in process order, int64 and float64
  values that 32 bits would round cross exactly, the agreed minimum and maximum; a gather of
  a shape seen before compiles nothing."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
  procs = [subprocess.Popen([sys.executable, '-c', REDUCER, str(port), str(i)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  big = np.iinfo(np.int64).max
  for p in procs:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    got = json.loads([l for l in out.splitlines() if l.startswith('RESULT ')][0][7:])
    assert got['gathered'] == [[[big, 0]], [[big - 1, -1]]] and got['gathered_dtype'] == 'int64'
    assert got['summed_f'] == [float.hex(2.0 + 2.0 ** -40), float.hex(-3.5)]
    assert got['summed_n'] == big // 4 + (big - 1) // 4
    assert (got['min'], got['max']) == (4 << 30, 8)
    assert got['compiles'] == 0  # summed's int64 gather was compiled; reused since

SWEEP = {'sweep.grid': 'optimizer.learning_rate=0.01,0.1; reg.strength=1e-3,3e-3,1e-2,3e-2',
         'num_steps': 10, 'eval_every_steps': 5, 'sanity.enabled': False}
# Two members, full batch, the rows over all 8 devices: the data axis spans both processes
# (gradients and evaluation sums psum'd over gloo).
DATA_SHARDED = {'sweep.grid': 'reg.strength=1e-3,1e-2', 'batch_size': 0, 'mesh.data': 8,
                'num_steps': 5, 'eval_every_steps': 5, 'sanity.enabled': False}


@pytest.fixture(scope='module', params=[SWEEP, DATA_SHARDED], ids=['sweep', 'data_sharded'])
def runs(request, tmp_path_factory):
  """The same run as 2 processes × 4 devices (one JAX program, through submitit's local
  executor) and, meanwhile, in this process on its 8 devices: their workdirs."""
  fields = request.param
  base = tmp_path_factory.mktemp('runs')
  overrides = [f'--config.{k}={v}' for k, v in fields.items()]
  assert len(jax.devices()) == 8  # this process's backend starts before XLA_FLAGS changes
  mp = pytest.MonkeyPatch()
  mp.setenv('XLA_FLAGS', xla_flags(4))  # read by the processes
  try:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      codes = pool.submit(launch_run.launch, default_config(**fields), 'configs/default.py',
                          str(base / 'two'), overrides, executor='submitit_local',
                          num_processes=2)
      sweep.run(default_config(**fields), str(base / 'one'), log=lambda *_: None)
      assert codes.result() == [0]
  finally:
    mp.undo()
  return base / 'one', base / 'two' / 'run'


def _untimed(path):
  data = json.loads(path.read_text())
  for key in ('compile_time_s', 'wall_time_s', 'metadata'):  # metadata: git state, time
    data.pop(key, None)
  return data


def _close(a, b, rtol):
  """Equal structure and non-float values; floats equal to `rtol` (0: exactly)."""
  if isinstance(a, dict):
    return a.keys() == b.keys() and all(_close(a[k], b[k], rtol) for k in a)
  if isinstance(a, list):
    return len(a) == len(b) and all(_close(x, y, rtol) for x, y in zip(a, b))
  if isinstance(a, float) and isinstance(b, float):
    return a == b or abs(a - b) <= rtol * max(abs(a), abs(b))
  return a == b


def test_two_processes_give_the_results_and_params_of_one(runs, request):
  one, two = runs
  # members over processes: bit for bit. Rows over processes: the all-reduce between processes
  # (gloo) may add in another order than within one, so float32 rounding apart.
  rtol = 0 if 'sweep]' in request.node.name else 1e-5
  summary = json.loads((two / 'sweep.json').read_text())
  assert summary['devices'] == 8  # both processes' devices
  for name in ('sweep.json', 'results.json'):
    assert _close(_untimed(one / name), _untimed(two / name), rtol)
  if not rtol:
    assert (one / 'sweep.csv').read_text() == (two / 'sweep.csv').read_text()
  rows = [json.loads((d / 'sweep.json').read_text())['members'] for d in (one, two)]
  assert [[r[k] for k in r if 'accuracy' in k] for r in rows[0]] == [
      [r[k] for k in r if 'accuracy' in k] for r in rows[1]]  # accuracies exactly
  p1, p2 = np.load(one / 'params.npz'), np.load(two / 'params.npz')
  assert sorted(p1) == sorted(p2)
  for k in p1:
    np.testing.assert_allclose(p2[k], p1[k], rtol=rtol, atol=1e-7 if rtol else 0)


def test_a_single_run_on_the_devices_of_one_process_is_refused_in_one_line(tmp_path, capsys):
  env = dict(os.environ, XLA_FLAGS=xla_flags(4))
  code = multiprocess.run_local(
      [sys.executable, '-m', 'hinge_jax.main', f'--workdir={tmp_path / "run"}'], 2,
      str(tmp_path / 'logs'), cwd=REPO, env=env)
  assert code == 2
  assert capsys.readouterr().err.startswith('error: process ')
  log = (tmp_path / 'logs' / 'process_0.log').read_text().splitlines()
  assert [l for l in log if l.startswith('error:')] == [
      'error: a single run over 2 processes must use devices of every one, but mesh.data=1 '
      'lays it on 1 device(s) of process(es) 0; set --config.mesh.data=8 (its rows over all 8 '
      'devices), or run one process']


def test_a_signal_to_one_process_stops_every_process_at_the_same_chunk(tmp_path):
  port = _free_port()
  common = ['--num_processes=2', f'--coordinator=localhost:{port}', '--config.num_steps=100000',
            '--config.eval_every_steps=50', '--config.sanity.enabled=False',
            '--config.sweep.grid=reg.strength=1e-3,1e-2,1e-1,1']
  logs = [tmp_path / f'process_{i}.out' for i in range(2)]
  env = dict(os.environ, XLA_FLAGS=xla_flags(4))
  procs = []
  for i in range(2):
    with open(logs[i], 'w') as out:
      procs.append(subprocess.Popen(
          [sys.executable, '-m', 'hinge_jax.main', f'--workdir={tmp_path / "run"}',
           f'--process_id={i}', *common], cwd=REPO, env=env, stdout=out,
          stderr=subprocess.STDOUT))
  deadline = time.monotonic() + 240
  while 'step 50/' not in logs[0].read_text():  # process 0 logs the sweep's progress
    assert time.monotonic() < deadline and procs[0].poll() is None, logs[0].read_text()
    time.sleep(0.2)
  procs[1].send_signal(signal.SIGTERM)  # process 0 gets none
  codes = [p.wait(timeout=120) for p in procs]
  assert codes == [143, 143], [l.read_text()[-2000:] for l in logs]
  stopped = [l for l in logs[0].read_text().splitlines() if l.startswith('stopped:')]
  assert len(stopped) == 1 and stopped[0].startswith('stopped: SIGTERM at step ')


# One member, full batch, its rows over all 8 devices (both processes'); a checkpoint every 5
# steps. A single run over processes: process 0 writes, every process saves the checkpoints.
SINGLE = {'batch_size': 0, 'mesh.data': 8, 'num_steps': 15, 'eval_every_steps': 5,
          'checkpoint_every_steps': 5, 'sanity.enabled': False}


def _single_run(workdir, faults=('', '')) -> list:
  """Starts SINGLE as 2 processes × 4 devices (process i with HINGE_JAX_FAULT=faults[i]);
  returns their Popen objects (output in workdir's sibling process_i.out)."""
  port = _free_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, XLA_FLAGS=xla_flags(4),
               HINGE_JAX_FAULT=faults[i])
    with open(f'{workdir}.process_{i}.out', 'w') as out:
      procs.append(subprocess.Popen(
          [sys.executable, '-m', 'hinge_jax.main', f'--workdir={workdir}', f'--process_id={i}',
           '--num_processes=2', f'--coordinator=localhost:{port}',
           *[f'--config.{k}={v}' for k, v in SINGLE.items()]],
          cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT))
  return procs


def _codes(procs, workdir) -> list:
  codes = [p.wait(timeout=240) for p in procs]
  return codes, [open(f'{workdir}.process_{i}.out').read() for i in range(2)]


@pytest.fixture(scope='module')
def single(tmp_path_factory):
  """SINGLE as 2 processes × 4 devices and, meanwhile, in this process on its 8 devices:
  their workdirs."""
  base = tmp_path_factory.mktemp('single')
  procs = _single_run(base / 'two')
  experiment.train_and_evaluate(default_config(**SINGLE), str(base / 'one'), log=quiet)
  codes, outs = _codes(procs, base / 'two')
  assert codes == [0, 0], outs
  return base / 'one', base / 'two'


def _same_run(one, two):
  """Equal results.json (timings apart; floats to float32 rounding, accuracies exactly) and
  params.npz to float32 rounding: the all-reduce between processes may add in another order."""
  a, b = (_untimed(d / 'results.json') for d in (one, two))
  for data in (a, b):
    for key in TIMING_KEYS:
      data.pop(key, None)
  assert _close(a, b, 1e-5)
  assert [a[k] for k in a if 'accuracy' in k] == [b[k] for k in b if 'accuracy' in k]
  p1, p2 = np.load(one / 'params.npz'), np.load(two / 'params.npz')
  assert sorted(p1) == sorted(p2)
  for k in p1:
    np.testing.assert_allclose(p2[k], p1[k], rtol=1e-5, atol=1e-7)


def test_a_single_run_over_two_processes_gives_the_results_and_params_of_one(single):
  one, two = single
  _same_run(one, two)
  # process 0 alone wrote the workdir: the same files, one TensorBoard log, each row once
  assert sorted(os.listdir(two)) == sorted(os.listdir(one))
  assert len(os.listdir(two / 'tensorboard')) == len(os.listdir(one / 'tensorboard')) == 1
  rows = [json.loads(l) for l in (two / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [5, 10, 15]
  assert sorted(os.listdir(two / 'checkpoints')) == ['10', '15', '5']


def test_an_interrupted_two_process_run_resumes_to_the_results_of_one(single, tmp_path):
  one, _ = single
  run = tmp_path / 'run'
  # process 1 gets a SIGTERM at its first checkpoint (step 5): both stop at the next chunk
  codes, outs = _codes(_single_run(run, faults=('', 'checkpoint:1:term')), run)
  assert codes == [143, 143], outs
  for out in outs:
    assert [l for l in out.splitlines() if l.startswith('stopped:')] == [
        f'stopped: SIGTERM at step 10 of 15: saved a checkpoint in {run}/checkpoints; rerun '
        f'the same command to resume']
  assert sorted(os.listdir(run / 'checkpoints')) == ['10', '5']
  codes, outs = _codes(_single_run(run), run)
  assert codes == [0, 0], outs
  assert 'resuming from the checkpoint of step 10' in outs[0]
  _same_run(one, run)
  assert [json.loads(l)['step'] for l in (run / 'metrics.jsonl').read_text().splitlines()] == [
      5, 10, 15]


def test_a_workdir_in_use_stops_every_process_in_one_line(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  with io_utils.WorkdirLock(str(run)):  # another run holds it: process 0 cannot start
    codes, outs = _codes(_single_run(run), run)
  assert codes == [2, 2], outs
  errors = [[l for l in out.splitlines() if l.startswith('error:')] for out in outs]
  assert errors[0][0].startswith(f'error: --workdir={run} is in use by pid {os.getpid()} ')
  assert errors == [errors[0][:1], ['error: process 0 stopped before training (its error line '
                                    'says why); fix that and start every process again']]
  assert os.listdir(run) == []  # nothing written (the holder removed its lock)


def test_resuming_with_another_process_count_is_refused_in_one_line(single, tmp_path):
  _, two = single
  run = tmp_path / 'run'
  shutil.copytree(two, run)
  with pytest.raises(UserError) as e:  # this process: 1 process, the same 8 devices
    experiment.train_and_evaluate(default_config(**SINGLE), str(run), log=quiet)
  assert str(e.value) == (
      f'the checkpoint of step 15 in {run}/checkpoints was written by 2 process(es), this run '
      f'has 1; rerun with 2 process(es) to resume it, or pass --overwrite to start this run '
      f'afresh')
  assert (run / 'results.json').read_text() == (two / 'results.json').read_text()


def test_the_probe_over_two_processes_chooses_and_refits_as_one(tmp_path):
  """The probe protocol (λ sweep, choice, refit on train + val, whose rows lie over both
  processes) over 2 processes × 4 devices, and in this process on its 8 devices."""
  folder = tmp_path / 'emb'
  write_embeddings(folder, seed=0, n=(240, 120, 120), d=16, c=3)
  fields = {'dataset.path': str(folder), 'probe.lambdas': '1e-3,1e-2,1e-1,1.0'}
  config = config_lib.with_fields(probe_config.get_config('refit'), fields)
  env = dict(os.environ, XLA_FLAGS=xla_flags(4))
  command = [sys.executable, '-m', 'hinge_jax.main', '--config=configs/probe.py:refit',
             f'--workdir={tmp_path / "two"}', *[f'--config.{k}={v}' for k, v in fields.items()]]
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    code = pool.submit(multiprocess.run_local, command, 2, str(tmp_path / 'logs'), cwd=REPO,
                       env=env)
    main.train(config, str(tmp_path / 'one'))
    assert code.result() == 0
  one, two = (json.loads((tmp_path / d / 'probe.json').read_text()) for d in ('one', 'two'))
  for key in ('chosen_lambda', 'val_accuracy', 'train_accuracy', 'test_accuracy_train_only',
              'test_accuracy', 'train_examples'):
    assert one[key] == two[key], key
  assert two['refit']['train_examples'] == 360 and two['refit']['test_accuracy'] == one[
      'refit']['test_accuracy']
  c1, c2 = one['refit']['convergence'], two['refit']['convergence']
  assert (c1['converged'], c1['steps']) == (c2['converged'], c2['steps'])
  assert c2['objective'] == pytest.approx(c1['objective'], rel=1e-6)
  assert max(c1['grad_norm'], c2['grad_norm']) < 1e-5  # both at the optimum, to float32 noise
  p1, p2 = np.load(tmp_path / 'one' / 'probe_params.npz'), np.load(tmp_path / 'two' /
                                                                   'probe_params.npz')
  for k in p1:
    np.testing.assert_allclose(p2[k], p1[k], rtol=1e-4, atol=1e-5)
