"""One run as several cooperating processes: here (`local_multiprocess`) or as one Slurm job.

Every process runs the same `python -m hinge_jax.main` command with `--coordinator`,
`--num_processes` and `--process_id` added (hinge_jax/distributed.py). Here the coordinator
is a free port on localhost; in a submitit job (Slurm, or submitit's local executor) it is the
job's first host and a port derived from the job id, and each task passes its own rank.
A process that fails stops the others: the launcher ends them and names it in one line.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import zlib

from hinge_jax.errors import UserError

GRACE_S = 10  # a process told to stop (SIGTERM) is killed after this


def free_port() -> int:
  """A TCP port nobody listens on now (the OS's choice)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def with_process(command, coordinator: str, num_processes: int, process_id: int) -> list:
  """`command` (a hinge_jax.main command line) as process `process_id` of `num_processes`."""
  return [*command, f'--coordinator={coordinator}', f'--num_processes={num_processes}',
          f'--process_id={process_id}']


def _stop(procs: list) -> None:
  for p in procs:
    if p.poll() is None:
      p.send_signal(signal.SIGTERM)
  deadline = time.monotonic() + GRACE_S
  for p in procs:
    try:
      p.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()


def run_local(command, num_processes: int, log_dir: str, *, cwd: str, env=None,
              report=lambda line: print(line, file=sys.stderr)) -> int:
  """Runs `command` as `num_processes` processes on this machine; returns the run's exit code.

  Process i's output goes to `log_dir/process_<i>.log`. When one fails, the others are
  stopped and one line names it (its exit code and log).
  """
  if num_processes < 1:
    raise UserError(f'--num_processes={num_processes}: give 1 or more processes')
  os.makedirs(log_dir, exist_ok=True)
  address = f'localhost:{free_port()}'
  procs, logs = [], []
  for i in range(num_processes):
    logs.append(os.path.join(log_dir, f'process_{i}.log'))
    with open(logs[-1], 'w') as log:
      procs.append(subprocess.Popen(with_process(command, address, num_processes, i), cwd=cwd,
                                    env=env, stdout=log, stderr=subprocess.STDOUT))
  try:
    while True:
      codes = [p.poll() for p in procs]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i = failed[0]
        _stop(procs)
        report(f'error: process {i} of {num_processes} exited with code {codes[i]} (see '
               f'{logs[i]}); the others were stopped')
        return codes[i]
      if all(c == 0 for c in codes):
        return 0
      time.sleep(0.2)
  except BaseException:  # Ctrl-C or an error here: take the processes down too
    _stop(procs)
    raise


def job_coordinator(hostnames, job_id: str) -> str:
  """host:port of process 0 for a submitit job: its first host, a port from the job id."""
  return f'{hostnames[0]}:{20000 + zlib.crc32(str(job_id).encode()) % 20000}'


def run_task(command, cwd: str) -> int:
  """What each task of a submitit job runs: `command` as this task's process of the job.

  Under Slurm, hinge_jax.main reads the tasks from Slurm's environment (JAX finds the
  coordinator and this task's GPU); under submitit's local executor they are passed as flags.
  """
  import submitit  # lazy: only submitit jobs need it
  env = submitit.JobEnvironment()
  full = list(command)
  if env.name() != 'slurm':
    full = with_process(command, job_coordinator(env.hostnames, env.job_id), env.num_tasks,
                        env.global_rank)
  code = subprocess.run(full, cwd=cwd, check=False).returncode
  if code:
    raise RuntimeError(f'process {env.global_rank} of {env.num_tasks} exited with code {code}')
  return code


def slurm_parameters(*, nodes: int, gpus_per_node: int, cpus_per_task: int, timeout_min: int,
                     partition=None) -> dict:
  """submitit's parameters for one job of `nodes` × `gpus_per_node` tasks, one GPU each."""
  if nodes < 1 or gpus_per_node < 1:
    raise UserError(f'--nodes={nodes} --gpus_per_node={gpus_per_node}: a multi-node job needs '
                    f'at least one node and one GPU per node')
  params = dict(nodes=nodes, tasks_per_node=gpus_per_node, gpus_per_node=gpus_per_node,
                cpus_per_task=cpus_per_task, timeout_min=timeout_min, name='hinge_jax')
  if partition:
    params['slurm_partition'] = partition
  return params
