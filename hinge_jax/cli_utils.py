"""What every command-line entry point shares: the --config flag and one-line errors.

`run(main)` is `app.run(main)` under one rule: bad input (a missing or broken config file, an
override of a field the config lacks, absl's own flag errors, a stray positional argument, a
`UserError` from `main`) ends in one `error:` line on stderr and exit code 2.
"""

import contextlib
import errno
import logging
import os
import re
import sys
from typing import Callable, NoReturn, Optional

from absl import app, flags
from ml_collections import config_flags

from hinge_jax.errors import UserError

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'configs', 'default.py')
HELP = 'run with --help to list the flags'


def config_flag(default: str | None = DEFAULT_CONFIG, *, lock_config: bool = True,
                help_text: str = 'Experiment config file (configs/*.py[:arg]).',
                flag_values: flags.FlagValues = flags.FLAGS,
                argv: Optional[list[str]] = None):
  """Defines --config (configs/*.py[:arg], default configs/default.py); returns its holder.

  ml_collections applies the `--config.*` overrides (of `argv`, default sys.argv) while it
  defines the flag, so a bad override or config file stops here, in one line.
  """
  with config_errors(argv):
    return config_flags.DEFINE_config_file('config', default, help_text,
                                           lock_config=lock_config, flag_values=flag_values,
                                           sys_argv=argv)


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


def _config_arg(argv: list[str]) -> Optional[str]:
  """The last --config value on the command line (path[:arg]), None if none."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def config_error_message(error: Exception, argv: list[str]) -> str:
  """The one line for a config file that cannot be loaded, or an override it cannot take."""
  given = _config_arg(argv)
  if given == '':
    return '--config is empty; give a config file, e.g. --config=configs/default.py'
  path = (given or '').split(':', 1)[0] or DEFAULT_CONFIG
  text = str(error)
  if isinstance(error, SyntaxError):
    return (f'config file {path} line {error.lineno}: {error.msg}; fix its Python syntax')
  if 'get_config' in text:
    return (f'config file {path} defines no get_config(); a config file is a Python module '
            f'whose get_config() returns a ConfigDict (see configs/default.py)')
  if isinstance(error, OSError):
    reason = 'not found' if 'No such file' in text else (
        'is a directory' if 'Is a directory' in text else text.splitlines()[-1].strip())
    return (f'--config={given or path}: cannot read {path} ({reason}); give an existing '
            f'config file, e.g. --config=configs/default.py')
  overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
  if isinstance(error, (AttributeError, KeyError)) and overrides:
    return missing_field_message(error, overrides)
  line = ' '.join(text.split()) or type(error).__name__
  return f'config file {path} failed to load ({type(error).__name__}: {line}); fix the file'


def flag_error_message(error: flags.Error, flag_values: Optional[flags.FlagValues] = None) -> str:
  """The one line for absl's own flag errors: unknown flag, bad value, missing flag."""
  text = ' '.join(str(error).split()).removeprefix('ERROR:: ')
  if 'Error whilst parsing config file' in text:  # get_config raised; absl wraps its traceback
    path = re.match(r'flag --\w+=([^:]*)', text)
    last = str(error).strip().splitlines()[-1].strip()
    return (f'config file {path.group(1) if path else "?"} failed to load ({last}); '
            f'fix the file')
  required = re.match(r'flag --(\w+)=None: Flag --\1 must have a value other than None', text)
  if required:
    name = required.group(1)
    known = flag_values is not None and name in flag_values
    what = f' ({flag_values[name].help.rstrip(".")})' if known else ''
    return f'--{name} is required{what}; give --{name}=VALUE'
  unknown = re.match(r"Unknown command line flag '([\w.]+)'(.*)", text)
  if unknown:
    names = re.findall(r'[\w.]+', unknown.group(2).partition('Did you mean:')[2])
    hint = f' (did you mean {" or ".join("--" + n for n in names)}?)' if names else ''
    return f'unknown flag --{unknown.group(1)}{hint}; {HELP}'
  boolean = re.match(r"flag --(\w+)=(.*?): \('Non-boolean argument", text)
  if boolean:
    name, value = boolean.groups()
    return (f'--{name}={value} is not a boolean; write --{name}=true or --{name}=false '
            f'(or --{name} / --no{name})')
  return f'{text}; {HELP}'


@contextlib.contextmanager
def config_errors(argv: Optional[list[str]] = None):
  """A config file or override that cannot be loaded (raised by ml_collections) → one line."""
  try:
    yield
  except flags.Error as e:  # --flagfile is read while the config flag is defined
    fail(flag_error_message(e))
  except Exception as e:  # pylint: disable=broad-except  # anything the user's file raises
    fail(config_error_message(e, list(sys.argv if argv is None else argv)))


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """Parses argv into flag_values (absl's flags_parser); bad input → one line, exit 2.

  Loads --config here (ml_collections loads a given file lazily), so a missing file fails
  now and not deep inside `main`. No entry point takes positional arguments.
  """
  with config_errors(argv):
    try:
      rest = flag_values(argv)
    except flags.Error as e:
      fail(flag_error_message(e, flag_values))
    config = flag_values['config'].value if 'config' in flag_values else None
    if config is not None and hasattr(config, '_error'):  # ml_collections' _ErrorConfig
      config._ReportError()  # pylint: disable=protected-access  # raises the load's error
  if len(rest) > 1:
    before = argv[argv.index(rest[1]) - 1] if rest[1] in argv else ''
    hint = (f' (a value for {before}? write {before}=VALUE)' if before.startswith('--')
            and before != '--' and '=' not in before else '')
    fail(f'unexpected argument {rest[1]!r}{hint}; flags take the form --name=value, {HELP}')
  return rest


# A full, read-only or over-quota disk, or a file the user may not write: the user's to fix.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})


def disk_error_message(error: OSError) -> str:
  """The one line for a write the disk refused, naming the file."""
  where = f' {error.filename}' if error.filename else ''
  return (f'cannot write{where} ({error.strerror or error}); free space or fix permissions, '
          f'then rerun the same command')


def run(main: Callable) -> None:
  """app.run(main) where bad input (flags, config, a `UserError`) is one line and exit 2."""
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)  # no TPU-probe noise

  def guarded(argv):
    try:
      return main(argv)
    except (UserError, app.UsageError) as e:
      fail(str(e))
    except OSError as e:
      if e.errno not in DISK_ERRNOS:
        raise
      fail(disk_error_message(e))
  app.run(guarded, flags_parser=parse_flags)
