"""The persistent compilation cache: a second run of a config compiles much faster."""

import json
import os

from hinge_jax import compile_cache
from helpers import run_main


def test_second_run_reports_a_much_smaller_compile_time(tmp_path):
  env = {'HINGE_JAX_CACHE_DIR': str(tmp_path / 'cache')}
  times = []
  for name in ('first', 'second'):
    proc = run_main(f'--workdir={tmp_path / name}', '--config.num_steps=200',
                    '--config.eval_every_steps=100', env=env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / name / 'results.json').read_text())
    assert results['timing']['compilation_cache_dir'] == str(tmp_path / 'cache')
    times.append(results['compile_time_s'])
  assert os.listdir(tmp_path / 'cache')  # the compiled programs are on disk
  assert times[1] < 0.5 * times[0], times


def test_cache_dir_from_env_and_off(tmp_path, monkeypatch):
  monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / 'c'))
  assert compile_cache.default_dir() == str(tmp_path / 'c')
  monkeypatch.delenv(compile_cache.ENV_VAR)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert compile_cache.default_dir() == str(tmp_path / 'xdg' / 'hinge_jax' / 'jax_cache')
  assert compile_cache.enable('off') is None


def test_unusable_cache_dir_warns_and_runs(tmp_path):
  (tmp_path / 'file').write_text('x')
  proc = run_main(f'--workdir={tmp_path / "w"}', f'--jax_cache_dir={tmp_path / "file" / "c"}',
                  '--config.num_steps=20', '--config.eval_every_steps=10')
  assert proc.returncode == 0, proc.stderr
  assert 'warning: compilation cache' in proc.stderr and 'running without it' in proc.stderr
  assert json.loads((tmp_path / 'w' / 'results.json').read_text())['timing'][
      'compilation_cache_dir'] is None
