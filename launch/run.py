"""Launches a structural sweep: `python -m launch.run --config=configs/x.py --workdir=BASE`.

Each combination of `sweep.structural` runs `python -m hinge_jax.main` in BASE/<name>, either
here (`--executor=local`, `--parallel` processes at a time), as a Slurm job array through
submitit (`--executor=slurm`), or through submitit's local executor (`--executor=submitit_local`,
the same code path as Slurm, for testing). `--dry_run` prints the commands and runs nothing.
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
from launch import structural

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXECUTORS = ('local', 'slurm', 'submitit_local')
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


def launch(config, config_arg: str, base: str, overrides=(), *, executor: str = 'local',
           parallel: int = 1, dry_run: bool = False, wait: bool = True, timeout_min: int = 60,
           partition=None, gpus_per_node: int = 0, cpus_per_task: int = 2) -> list:
  """Expands, records `BASE/launch.json`, and starts the runs with the chosen executor.

  Returns the runs' exit codes (none for a dry run, or for submitit jobs not waited for).
  """
  runs = structural.expand(config, config_arg, base, tuple(overrides))
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
        'runs': [{'name': r.name, 'values': r.values, 'workdir': r.workdir,
                  'command': list(r.command)} for r in runs]})
    if executor == 'local':
      codes = _local(runs, parallel)
    else:
      jobs = _submitit(runs, base, 'slurm' if executor == 'slurm' else 'local', parallel=parallel,
                       timeout_min=timeout_min, partition=partition, gpus_per_node=gpus_per_node,
                       cpus_per_task=cpus_per_task)
      if not wait:
        return []
      codes = [job.result() for job in jobs]
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
                 gpus_per_node=fl.gpus_per_node, cpus_per_task=fl.cpus_per_task)
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
  flags.DEFINE_integer('gpus_per_node', 0, 'GPUs per Slurm job.')
  flags.DEFINE_integer('cpus_per_task', 2, 'CPUs per Slurm job.')
  _CONFIG = cli_utils.config_flag(None, lock_config=False,
                                  help_text='The config whose sweep.structural to launch.')
  cli_utils.run(main)


if __name__ == '__main__':
  cli()
