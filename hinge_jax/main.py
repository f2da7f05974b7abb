"""Entry point: `python -m hinge_jax.main --config=configs/<name>.py --workdir=DIR`.

A config runs as one run, a vmapped sweep (`sweep.*`), or the linear-probe protocol (a config
with a `probe` block: `configs/probe.py`, `hinge_jax/probe.py`).

Every config field can be overridden from the command line (`--config.reg.strength=1e-3`).
Running the same command again resumes from the workdir's latest checkpoint; a workdir
holding a run of another config is refused unless `--overwrite`. JAX's persistent
compilation cache is on (`--jax_cache_dir`, or `$HINGE_JAX_CACHE_DIR`; `off` disables it).
Exit codes: 0 done, 2 bad input or a lost process (one line on stderr), 3 training diverged,
128 + signal (130 SIGINT, 143 SIGTERM) when stopped by a signal after saving a checkpoint, or
at once on a second signal. A run holds WORKDIR/.lock: a second run on that workdir exits 2.
Several processes run as one program with `--coordinator=host:port --num_processes=N
--process_id=i` (or under Slurm, from its environment): `hinge_jax/distributed.py`.
"""

import sys

import jax
from absl import flags
from absl import logging as absl_logging

from hinge_jax import cli_utils, compile_cache, distributed, experiment, probe, sweep
from hinge_jax.errors import DivergedError, Interrupted, UserError

_CONFIG = None  # defined in run(): importing this module defines no flag


def train(config, workdir: str, *, overwrite: bool = False) -> None:
  """One run, one vmapped sweep, or the linear-probe protocol, as the config declares."""
  if config.get('sweep', {}).get('structural'):
    raise UserError(f'sweep.structural={config.sweep.structural!r} declares separate runs; '
                    f'launch them with python -m launch.run --config=... --workdir=...')
  if probe.is_probe(config):  # a λ sweep, the choice by validation, the test (probe.py)
    probe.run(config, workdir, overwrite=overwrite)
  elif sweep.is_sweep(config):  # many members in one compiled program
    sweep.run(config, workdir, overwrite=overwrite)
  else:  # one member; over several processes its rows lie over all of them (mesh.data)
    experiment.train_and_evaluate(config, workdir, overwrite=overwrite)


def main(argv):
  del argv  # cli_utils.parse_flags refuses positional arguments
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file at INFO
  fl = flags.FLAGS
  settings = distributed.settings(
      fl.coordinator, fl.num_processes, fl.process_id, timeout_s=fl.distributed_timeout_s,
      heartbeat_s=fl.heartbeat_timeout_s, process_timeout_s=fl.process_timeout_s)
  distributed.initialize(settings)  # before JAX starts its backends
  with distributed.watchdog(settings):  # a process that dies stops the others in one line
    distributed.check_same_config(_CONFIG.value)
    compile_cache.enable(fl.jax_cache_dir, log=lambda line: print(line, file=sys.stderr))
    try:
      train(_CONFIG.value, fl.workdir or '', overwrite=fl.overwrite)
    except Interrupted as e:
      print(f'stopped: {e}', file=sys.stderr)
      sys.exit(128 + e.signum)
    except DivergedError as e:
      cli_utils.fail(str(e), code=3)


def run() -> None:
  """Defines the flags and runs main; bad input of any kind is one `error:` line, exit 2."""
  global _CONFIG
  flags.DEFINE_string('workdir', None, 'Directory for config.json, metrics.jsonl, results.json.')
  flags.DEFINE_bool('overwrite', False, 'Discard a previous run in --workdir (its outputs and '
                    'checkpoints) instead of resuming it.')
  flags.DEFINE_string('jax_cache_dir', None, 'JAX persistent compilation cache (default '
                      '$HINGE_JAX_CACHE_DIR or ~/.cache/hinge_jax/jax_cache; "off" disables it).')
  flags.mark_flag_as_required('workdir')
  distributed.define_flags()
  _CONFIG = cli_utils.config_flag()
  cli_utils.run(main)


if __name__ == '__main__':
  run()
