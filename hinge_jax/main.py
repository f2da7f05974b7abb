"""Entry point: `python -m hinge_jax.main --config=configs/<name>.py --workdir=DIR`.

Every config field can be overridden from the command line (`--config.reg.strength=1e-3`).
Running the same command again resumes from the workdir's latest checkpoint; a workdir
holding a run of another config is refused unless `--overwrite`. JAX's persistent
compilation cache is on (`--jax_cache_dir`, or `$HINGE_JAX_CACHE_DIR`; `off` disables it).
Exit codes: 0 done, 2 bad input (one line on stderr), 3 training diverged, 128 + signal
(130 SIGINT, 143 SIGTERM) when stopped by a signal after saving a checkpoint.
"""

import logging
import os
import re
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               'configs', 'default.py')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for config.json, metrics.jsonl, '
                               'results.json.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Discard a previous run in --workdir (its '
                               'outputs and checkpoints) instead of resuming it.')
_CACHE_DIR = flags.DEFINE_string('jax_cache_dir', None, 'JAX persistent compilation cache '
                                 '(default $HINGE_JAX_CACHE_DIR or ~/.cache/hinge_jax/jax_cache; '
                                 '"off" disables it).')
_CONFIG = None  # defined in run(): ml_collections reads --config.* overrides as it is defined


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)  # no TPU-probe noise
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file at INFO
  from hinge_jax import compile_cache, experiment, sweep  # imports jax: after flags are parsed
  from hinge_jax.errors import DivergedError, Interrupted, UserError
  compile_cache.enable(_CACHE_DIR.value, log=lambda line: print(line, file=sys.stderr))
  config, workdir = _CONFIG.value, _WORKDIR.value or ''
  try:
    if config.get('sweep', {}).get('structural'):
      raise UserError(f'sweep.structural={config.sweep.structural!r} declares separate runs; '
                      f'launch them with python -m launch.run --config=... --workdir=...')
    if sweep.is_sweep(config):  # many members in one compiled program
      sweep.run(config, workdir, overwrite=_OVERWRITE.value)
    else:
      experiment.train_and_evaluate(config, workdir, overwrite=_OVERWRITE.value)
  except Interrupted as e:
    print(f'stopped: {e}', file=sys.stderr)
    sys.exit(128 + e.signum)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except DivergedError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)


def run() -> None:
  """app.run, with an override of a field the config lacks reported in one line."""
  global _CONFIG
  flags.mark_flag_as_required('workdir')
  try:
    _CONFIG = config_flags.DEFINE_config_file(
        'config', _DEFAULT_CONFIG, 'Experiment config file (configs/*.py[:arg]).',
        lock_config=True)
    app.run(main)
  except (AttributeError, KeyError) as e:  # raised by ml_collections while parsing flags
    overrides = [a.split('=')[0] for a in sys.argv[1:] if a.startswith('--config.')]
    if not overrides:
      raise
    text = str(e).replace('\\', '')
    name = re.search(r"'(\w+)'", text)
    hint = re.search(r'Did you mean "(\w+)"', text)
    print(f'error: the config has no field {name.group(1) if name else text!r} (overrides given: '
          f'{", ".join(overrides)}); '
          + (f'did you mean {hint.group(1)!r}?' if hint else 'check the config file\'s fields'),
          file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  run()
