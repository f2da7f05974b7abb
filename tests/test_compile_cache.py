"""The persistent compilation cache: a second run of a config compiles much faster."""

import json
import os

import jax

from hinge_jax import compile_cache
from helpers import run_main

RUN = ('--config.num_steps=20', '--config.eval_every_steps=10', '--config.sanity.enabled=False')


def test_second_run_reports_a_much_smaller_compile_time(tmp_path):
  """The first run finds the cache through $HINGE_JAX_CACHE_DIR, the second through the flag."""
  cache = str(tmp_path / 'cache')
  first = run_main(f'--workdir={tmp_path / "first"}', *RUN, env={compile_cache.ENV_VAR: cache})
  second = run_main(f'--workdir={tmp_path / "second"}', *RUN, f'--jax_cache_dir={cache}',
                    env={compile_cache.ENV_VAR: str(tmp_path / 'elsewhere')})
  times = []
  for name, proc in (('first', first), ('second', second)):
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / name / 'results.json').read_text())
    assert results['timing']['compilation_cache_dir'] == cache
    times.append(results['compile_time_s'])
  assert os.listdir(cache)  # the compiled programs are on disk
  assert not os.path.exists(tmp_path / 'elsewhere')  # the flag wins over the variable
  assert times[1] < 0.5 * times[0], times


def test_cache_dir_from_env_and_off(tmp_path, monkeypatch):
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / 'c'))
  assert compile_cache.default_dir() == str(tmp_path / 'c')
  monkeypatch.delenv(compile_cache.ENV_VAR)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache.default_dir() == str(tmp_path / 'xdg' / 'hinge_jax' / 'jax_cache')
  assert compile_cache.enable('off') is None


def test_unusable_cache_dir_warns_and_is_not_used(tmp_path):
  """The run goes on without it (a run's results then report `compilation_cache_dir` None).

  main's warning line on stderr: test_main.py's exit-code test.
  """
  (tmp_path / 'file').write_text('x')
  before = jax.config.jax_compilation_cache_dir
  lines = []
  assert compile_cache.enable(str(tmp_path / 'file' / 'c'), log=lines.append) is None
  assert len(lines) == 1 and lines[0].startswith('warning: compilation cache')
  assert 'running without it' in lines[0]
  assert jax.config.jax_compilation_cache_dir == before  # nothing was pointed at it
