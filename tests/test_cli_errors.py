"""One rule for every command line: bad input is one `error:` line naming the fix, exit 2.

The parsing runs in-process on a fresh FlagValues (cli_utils.config_flag + parse_flags, what
`cli_utils.run` hands to absl); test_main runs one real process to prove the exit code.
"""

import errno
import os
import re

import pytest
from absl import app, flags

from hinge_jax import cli_utils
from hinge_jax.errors import UserError
from helpers import REPO

ENTRY_POINTS = ['hinge_jax/main.py', 'hinge_jax/prepare.py', 'hinge_jax/gradcheck.py',
                'hinge_jax/sanity.py', 'hinge_jax/landscape.py', 'hinge_jax/plot.py',
                'launch/run.py', 'launch/collect.py']


def _parse(argv, capsys):
  """Defines main.py's flags on a fresh FlagValues and parses `prog argv`: (config, stderr)."""
  argv = ['prog', *argv]
  fv = flags.FlagValues()
  flags.DEFINE_string('workdir', None, 'Directory for the run', flag_values=fv)
  flags.DEFINE_bool('overwrite', False, 'Discard a previous run', flag_values=fv)
  flags.mark_flag_as_required('workdir', flag_values=fv)
  holder = cli_utils.config_flag(flag_values=fv, argv=argv)
  cli_utils.parse_flags(argv, fv)
  return holder.value, capsys.readouterr().err


def _one_line(argv, capsys, *needles):
  """Parsing `argv` exits 2 with one `error:` line holding every needle."""
  with pytest.raises(SystemExit) as stop:
    _parse(argv, capsys)
  err = capsys.readouterr().err
  assert stop.value.code == 2, err
  assert len(err.splitlines()) == 1 and err.startswith('error: '), err
  for needle in needles:
    assert needle in err, err
  return err


@pytest.fixture(scope='module')
def bad_configs(tmp_path_factory):
  root = tmp_path_factory.mktemp('configs')
  (root / 'syntax.py').write_text('def get_config(:\n  return None\n')
  (root / 'no_get.py').write_text('import ml_collections\nCONFIG = 1\n')
  (root / 'raises.py').write_text('def get_config():\n  raise ValueError("boom")\n')
  (root / 'notes.txt').write_text('lr = 0.1\nnum_steps 1000\n')  # not Python
  return root


@pytest.mark.parametrize('name,needles', [
    ('missing.py', ('missing.py', 'not found', '--config=configs/default.py')),
    ('syntax.py', ('syntax.py line 1', 'invalid syntax', 'fix its Python syntax')),
    ('no_get.py', ('no_get.py defines no get_config()', 'returns a ConfigDict')),
    ('raises.py', ('raises.py failed to load', 'ValueError: boom', 'fix the file')),
    ('', ('is a directory', 'give an existing config file')),
    ('notes.txt', ('notes.txt line 2', 'invalid syntax')),
])
def test_config_file_that_cannot_be_loaded(bad_configs, capsys, name, needles):
  _one_line(['--workdir=w', f'--config={bad_configs / name}'], capsys, *needles)


@pytest.mark.parametrize('argv,needles', [
    (['--workdir=w', '--nope'], ('unknown flag --nope', '--help')),
    (['--workdir=w', '--overwrit'], ('unknown flag --overwrit (did you mean --overwrite?)',)),
    (['--workdir=w', '--overwrite=maybe'], ('--overwrite=maybe is not a boolean',
                                            '--overwrite=true', '--nooverwrite')),
    ([], ('--workdir is required (Directory for the run)', 'give --workdir=VALUE')),
    (['--workdir=w', 'stray'], ("unexpected argument 'stray'", 'flags take the form --name=value')),
    (['--workdir=w', '--overwrite', 'true'], ("unexpected argument 'true'",
                                             'a value for --overwrite? write --overwrite=VALUE')),
    (['--workdir=w', '--config.reg.strenght=1'], ("no field 'strenght'",
                                                  "did you mean 'strength'")),
    (['--workdir=w', '--config.num_steps=many'], ('--config.num_steps=many', 'int()', '--help')),
    (['--workdir=w', '--config='], ('--config is empty', '--config=configs/default.py')),
    (['--workdir=w', '--', 'x'], ("unexpected argument 'x'; flags take the form",)),
    (['--workdir=w', '--workdir'], ('Missing value for flag --workdir',)),
    (['--flagfile=/nonexistent/flags'], ('Unable to open flagfile', '/nonexistent/flags')),
])
def test_flag_errors(capsys, argv, needles):
  _one_line(argv, capsys, *needles)


def test_good_command_line_parses_with_its_overrides(capsys):
  config, err = _parse(['--workdir', 'w', '--config=configs/default.py', '--config.num_steps=7'],
                       capsys)
  assert config.num_steps == 7 and err == ''


@pytest.mark.parametrize('error', [UserError('bad data; fix it'), app.UsageError('bad; fix it')])
def test_run_turns_an_error_from_main_into_one_line(monkeypatch, capsys, error):
  def main(argv):
    raise error
  def app_run(main, flags_parser):
    assert flags_parser is cli_utils.parse_flags  # absl's own parser would exit 1
    main(['prog'])
  monkeypatch.setattr(cli_utils.app, 'run', app_run)
  with pytest.raises(SystemExit) as stop:
    cli_utils.run(main)
  assert stop.value.code == 2
  assert capsys.readouterr().err == f'error: {error}\n'


@pytest.mark.parametrize('code', ['ENOSPC', 'EROFS', 'EACCES'])
def test_run_turns_a_refused_write_into_one_line(monkeypatch, capsys, code):
  """A full or read-only disk in any command (gradcheck, landscape, ...) is one line, exit 2."""
  def main(argv):
    raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), '/d/out.png')
  monkeypatch.setattr(cli_utils.app, 'run', lambda main, flags_parser: main(['prog']))
  with pytest.raises(SystemExit) as stop:
    cli_utils.run(main)
  err = capsys.readouterr().err
  assert stop.value.code == 2
  assert err.startswith('error: cannot write /d/out.png (') and err.count('\n') == 1, err
  assert 'rerun' in err


def test_run_lets_other_os_errors_through(monkeypatch):
  """Only refused writes become the one line; another OSError (here EIO) keeps its traceback."""
  def main(argv):
    raise OSError(errno.EIO, 'I/O error')
  monkeypatch.setattr(cli_utils.app, 'run', lambda main, flags_parser: main(['prog']))
  with pytest.raises(OSError):
    cli_utils.run(main)


@pytest.mark.parametrize('path', ENTRY_POINTS)
def test_every_entry_point_parses_through_cli_utils(path):
  """Each command runs under cli_utils.run (the rule above), never a bare app.run."""
  with open(os.path.join(REPO, path)) as f:
    source = f.read()
  assert 'cli_utils.run(main)' in source
  assert not re.search(r'\bapp\.run\(', source)
