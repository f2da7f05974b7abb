"""What every command-line entry point shares: the --config flag and one-line errors.

`run(main)` is `app.run(main)` where bad input ends in one `error:` line on stderr and exit
code 2: an override of a field the config lacks (`--config.reg.strenght=1`, raised by
ml_collections while it parses the flags) and a `UserError` from `main`.
"""

import contextlib
import logging
import os
import re
import sys
from typing import Callable, NoReturn

from absl import app
from ml_collections import config_flags

from hinge_jax.errors import UserError

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'configs', 'default.py')


def config_flag(default: str | None = DEFAULT_CONFIG, *, lock_config: bool = True,
                help_text: str = 'Experiment config file (configs/*.py[:arg]).'):
  """Defines --config (configs/*.py[:arg], default configs/default.py); returns its holder.

  ml_collections applies the `--config.*` overrides while it defines the flag, so an
  override of a field the config lacks stops here, in one line.
  """
  with missing_field_errors():
    return config_flags.DEFINE_config_file('config', default, help_text,
                                           lock_config=lock_config)


def fail(message: str, code: int = 2) -> NoReturn:
  """Ends the process with `error: message` on stderr."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)


def missing_field_message(error: Exception, overrides: list[str]) -> str:
  """The one line for an override of a field the config lacks, with ml_collections' hint."""
  text = str(error).replace('\\', '')
  name = re.search(r"'(\w+)'", text)
  hint = re.search(r'Did you mean "(\w+)"', text)
  return (f'the config has no field {name.group(1) if name else text!r} (overrides given: '
          f'{", ".join(overrides)}); '
          + (f'did you mean {hint.group(1)!r}?' if hint else 'check the config file\'s fields'))


@contextlib.contextmanager
def missing_field_errors():
  """An override of a field the config lacks (AttributeError/KeyError) → one line, exit 2."""
  try:
    yield
  except (AttributeError, KeyError) as e:  # raised by ml_collections while parsing flags
    overrides = [a.split('=')[0] for a in sys.argv[1:] if a.startswith('--config.')]
    if not overrides:
      raise
    fail(missing_field_message(e, overrides))


def run(main: Callable) -> None:
  """app.run(main); a missing config field or a `UserError` is one line and exit code 2."""
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)  # no TPU-probe noise

  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      fail(str(e))
  with missing_field_errors():
    app.run(guarded)
