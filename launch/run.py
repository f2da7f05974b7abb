"""Launches a structural sweep: `python -m launch.run --config=configs/x.py --workdir=BASE`.

Each combination of `sweep.structural` runs `python -m hinge_jax.main` in BASE/<name>, either
here (`--executor=local`, `--parallel` processes at a time), as a Slurm job array through
submitit (`--executor=slurm`), or through submitit's local executor (`--executor=submitit_local`,
the same code path as Slurm, for testing). `--dry_run` prints the commands and runs nothing.
A run that spans several processes (one JAX program, hinge_jax/distributed.py): Slurm with
`--nodes=N --gpus_per_node=G` submits one job of N×G tasks per run (`--dry_run` prints its
sbatch script); `--executor=local_multiprocess --num_processes=N` runs N processes here, and
`--executor=submitit_local --num_processes=N` N tasks of submitit's local executor.
Afterwards `python -m launch.collect --workdir=BASE` gathers every run's rows into one table.
`--config.*` overrides are applied to the expansion and passed to every run.
"""

import concurrent.futures
import json
import os
import subprocess
import sys

from absl import flags

from hinge_jax import cli_utils, io_utils
from hinge_jax.errors import UserError
from hinge_jax.results import disk_errors
from launch import multiprocess, structural

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXECUTORS = ('local', 'slurm', 'submitit_local', 'local_multiprocess')
RERUN = 'rerun the same command (finished runs are kept, the others resume)'

def run_command(command: list) -> int:
  """Runs one training command in the repository (what every executor calls)."""
  return subprocess.run(list(command), cwd=REPO, check=False).returncode


def _local(runs, parallel: int) -> list[int]:
  def one(run):
    os.makedirs(run.workdir, exist_ok=True)
    with open(os.path.join(run.workdir, 'launch.log'), 'w') as log:
      return subprocess.run(list(run.command), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            check=False).returncode
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(parallel, 1)) as pool:
    return list(pool.map(one, runs))


def _submitit(runs, base: str, cluster: str, *, parallel: int, timeout_min: int,
              partition, gpus_per_node: int, cpus_per_task: int) -> list:
  import submitit  # lazy: only the submitit executors need it
  executor = submitit.AutoExecutor(folder=os.path.join(base, 'submitit', '%j'), cluster=cluster)
  params = dict(timeout_min=timeout_min, name='hinge_jax', cpus_per_task=cpus_per_task)
  if cluster == 'slurm':
    params.update(slurm_array_parallelism=parallel)
    if partition:
      params['slurm_partition'] = partition
    if gpus_per_node:
      params['gpus_per_node'] = gpus_per_node
  executor.update_parameters(**params)
  jobs = executor.map_array(run_command, [list(r.command) for r in runs])
  print(f'submitted {len(jobs)} job(s): {", ".join(j.job_id for j in jobs)}')
  return jobs


def _submitit_multi(runs, base: str, cluster: str, params: dict, dry_run: bool) -> list:
  """One submitit job of several tasks per run; each task is one process of the run.

  A Slurm dry run prints each job's sbatch script (submitit's own text) and submits nothing.
  """
  import submitit  # lazy: only the submitit executors need it
  from submitit.slurm import slurm as submitit_slurm
  folder = os.path.join(base, 'submitit', '%j')
  if cluster == 'slurm' and dry_run:
    for run in runs:
      print(submitit_slurm._make_sbatch_string(  # noqa: SLF001 - the script sbatch would get
          command=run.shell(), folder=folder, **_slurm_names(params)))
    return []
  if cluster == 'slurm':
    try:
      executor = submitit.SlurmExecutor(folder=folder)
    except RuntimeError as e:  # no srun: not on a Slurm cluster
      raise UserError(f'--executor=slurm: {e}; submit from a Slurm login node, or see the '
                      f'job with --dry_run')
    executor.update_parameters(**_slurm_names(params))
  else:
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=params['timeout_min'],
                               tasks_per_node=params['tasks_per_node'])
  jobs = [executor.submit(multiprocess.run_task, list(r.command), REPO) for r in runs]
  print(f'submitted {len(jobs)} job(s): {", ".join(j.job_id for j in jobs)}')
  return jobs


def _job_code(job) -> int:
  """0 when every task of a multi-task job returned 0, else 1 (its log says why)."""
  try:
    return max(int(code or 0) for code in job.results())
  except Exception:  # noqa: BLE001 - submitit's FailedJobError / UncompletedJobError
    return 1


def _slurm_names(params: dict) -> dict:
  """AutoExecutor's parameter names → SlurmExecutor's."""
  names = {'tasks_per_node': 'ntasks_per_node', 'timeout_min': 'time', 'name': 'job_name',
           'slurm_partition': 'partition'}
  return {names.get(k, k): v for k, v in params.items()}


def launch(config, config_arg: str, base: str, overrides=(), *, executor: str = 'local',
           parallel: int = 1, dry_run: bool = False, wait: bool = True, timeout_min: int = 60,
           partition=None, gpus_per_node: int = 0, cpus_per_task: int = 2,
           nodes: int = 0, num_processes: int = 1) -> list:
  """Expands, records `BASE/launch.json`, and starts the runs with the chosen executor.

  Each run is one process, or `num_processes` (local_multiprocess, submitit_local) or
  `nodes` × `gpus_per_node` (slurm with `nodes`) processes of one JAX program.
  Returns the runs' exit codes (none for a dry run, or for submitit jobs not waited for).
  """
  runs = structural.expand(config, config_arg, base, tuple(overrides))
  multi = None
  if executor == 'slurm' and nodes:
    multi = ('slurm', multiprocess.slurm_parameters(
        nodes=nodes, gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task,
        timeout_min=timeout_min, partition=partition))
  elif executor == 'submitit_local' and num_processes > 1:
    multi = ('local', {'timeout_min': timeout_min, 'tasks_per_node': num_processes})
  elif nodes or (num_processes > 1 and executor != 'local_multiprocess'):
    raise UserError(f'--nodes applies to --executor=slurm and --num_processes to '
                    f'local_multiprocess or submitit_local, not to --executor={executor}')
  if multi and multi[0] == 'slurm' and dry_run:
    return _submitit_multi(runs, base, *multi, dry_run=True)
  if dry_run and executor == 'local_multiprocess':
    for run in runs:
      for i in range(num_processes):
        print(' '.join(multiprocess.with_process(
            [run.shell()], 'localhost:PORT', num_processes, i)))
    return []
  if dry_run:
    for run in runs:
      print(run.shell())
    return []
  try:
    os.makedirs(base, exist_ok=True)
  except OSError as e:
    raise UserError(f'--workdir={base} cannot be created ({e.strerror}); choose another path')
  # One launch per base workdir (its runs lock their own); a full disk is one line.
  with io_utils.WorkdirLock(base), disk_errors(base, RERUN):
    io_utils.write_json(os.path.join(base, 'launch.json'), {
        'config': config_arg, 'executor': executor, 'overrides': list(overrides),
        'nodes': nodes, 'num_processes': num_processes,
        'runs': [{'name': r.name, 'values': r.values, 'workdir': r.workdir,
                  'command': list(r.command)} for r in runs]})
    if executor == 'local':
      codes = _local(runs, parallel)
    elif executor == 'local_multiprocess':
      codes = [multiprocess.run_local(run.command, num_processes, run.workdir, cwd=REPO)
               for run in runs]
    else:
      jobs = (_submitit_multi(runs, base, *multi, dry_run=False) if multi else
              _submitit(runs, base, 'slurm' if executor == 'slurm' else 'local',
                        parallel=parallel, timeout_min=timeout_min, partition=partition,
                        gpus_per_node=gpus_per_node, cpus_per_task=cpus_per_task))
      if not wait:
        return []
      codes = [_job_code(job) if multi else job.result() for job in jobs]
    for run, code in zip(runs, codes):
      print(f'{"ok  " if code == 0 else f"rc={code}"}  {run.name}  ({run.workdir})')
    return codes


def _raw_flags(argv: list) -> tuple[str, list]:
  """The `--config=` value and the `--config.*` overrides exactly as typed (for the runs)."""
  config_arg, overrides = '', []
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      config_arg = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      config_arg = argv[i + 1]
    elif arg.startswith('--config.') and not arg.startswith('--config.sweep.structural'):
      overrides.append(arg)  # the structural declaration itself is expanded, not passed on
  return config_arg, overrides


def main(argv):
  del argv  # cli_utils.parse_flags refuses positional arguments
  config_arg, overrides = _raw_flags(sys.argv[1:])
  fl = flags.FLAGS
  if not fl.workdir:
    raise UserError('--workdir is required: the base directory for the runs')
  if _CONFIG.value is None:
    raise UserError('--config is required: the config whose sweep.structural to launch')
  codes = launch(_CONFIG.value, config_arg, fl.workdir, overrides, executor=fl.executor,
                 parallel=fl.parallel, dry_run=fl.dry_run, wait=fl.wait,
                 timeout_min=fl.timeout_min, partition=fl.slurm_partition,
                 gpus_per_node=fl.gpus_per_node, cpus_per_task=fl.cpus_per_task,
                 nodes=fl.nodes, num_processes=fl.num_processes)
  if any(codes):
    cli_utils.fail(f'{sum(1 for c in codes if c)} of {len(codes)} run(s) failed; see their '
                   f'launch.log / submitit logs', code=1)


_CONFIG = None


def cli() -> None:
  """`python -m launch.run`: the flags are defined here, so importing this module defines none."""
  global _CONFIG
  flags.DEFINE_string('workdir', None, 'Base directory; each run gets a subdirectory.')
  flags.DEFINE_enum('executor', 'local', EXECUTORS, 'Where the runs execute.')
  flags.DEFINE_integer('parallel', 1, 'Runs at a time (local; Slurm array parallelism).')
  flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
  flags.DEFINE_bool('wait', True, 'Wait for submitit jobs to finish (slurm/submitit_local).')
  flags.DEFINE_integer('timeout_min', 60, 'Slurm time limit per run, minutes.')
  flags.DEFINE_string('slurm_partition', None, 'Slurm partition.')
  flags.DEFINE_integer('gpus_per_node', 0, 'GPUs per Slurm job (with --nodes: per node, one '
                       'process each).')
  flags.DEFINE_integer('nodes', 0, 'Slurm: each run is one job of this many nodes, one JAX '
                       'program (0: one single-process job per run).')
  flags.DEFINE_integer('num_processes', 1, 'local_multiprocess / submitit_local: processes '
                       'per run, one JAX program.')
  flags.DEFINE_integer('cpus_per_task', 2, 'CPUs per Slurm job.')
  _CONFIG = cli_utils.config_flag(None, lock_config=False,
                                  help_text='The config whose sweep.structural to launch.')
  cli_utils.run(main)


if __name__ == '__main__':
  cli()
