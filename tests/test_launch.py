"""launch/: structural sweeps expanded into runs, run locally and through submitit, collected.

`launch.run.launch` and `launch.collect.collect` are called in-process; the runs they start
are processes (that is the launcher's job), and the two commands' flag parsing and exit codes
run as `python -m launch.run` / `python -m launch.collect`.
"""

import csv
import json
import os

import pytest

from hinge_jax.errors import ConfigError, UserError
from helpers import default_config, run_main
from launch import collect, run as launch_run, structural

STRUCTURAL = '--config.sweep.structural=loss.name=multiclass_svm,softmax_cross_entropy'
TINY = ('--config.num_steps=30', '--config.eval_every_steps=30')


def test_dry_run_prints_one_command_per_combination(tmp_path):
  proc = run_main('--config=configs/default.py', f'--workdir={tmp_path}', '--dry_run', *TINY,
                  STRUCTURAL, '--config.sweep.structural=loss.name=multiclass_svm,one_vs_all; '
                  'batch_size=50,100', module='launch.run')
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 4  # the last declaration wins: 2 losses × 2 batch sizes
  assert all('-m hinge_jax.main --config=configs/default.py' in l for l in lines)
  assert all('--config.num_steps=30' in l and '--config.sweep.structural= ' in l for l in lines)
  assert any('--config.loss.name=one_vs_all --config.batch_size=100' in l for l in lines)
  assert not os.listdir(tmp_path)  # nothing written


def _launch(tmp_path, monkeypatch, structural_text, executor):
  monkeypatch.delenv('XLA_FLAGS', raising=False)  # the runs see this host's devices
  monkeypatch.chdir(launch_run.REPO)
  grid = '--config.sweep.grid=optimizer.learning_rate=0.01,0.1'
  config = default_config(**{'num_steps': 30, 'eval_every_steps': 30, 'sanity.enabled': False,
                             'sweep.structural': structural_text,
                             'sweep.grid': grid.split('=', 1)[1]})
  overrides = [*TINY, '--config.sanity.enabled=False', grid]
  return launch_run.launch(config, 'configs/default.py', str(tmp_path), overrides,
                           executor=executor, parallel=2)


def test_two_run_structural_sweep_runs_and_is_collected(tmp_path, monkeypatch):
  codes = _launch(tmp_path, monkeypatch, STRUCTURAL.split('=', 1)[1], 'local')
  assert codes == [0, 0]
  manifest = json.loads((tmp_path / 'launch.json').read_text())
  assert [r['values'] for r in manifest['runs']] == [{'loss.name': 'multiclass_svm'},
                                                     {'loss.name': 'softmax_cross_entropy'}]
  for run in manifest['runs']:
    results = json.loads((tmp_path / run['name'] / 'results.json').read_text())
    assert results['config']['loss']['name'] == run['values']['loss.name']
    assert (tmp_path / run['name'] / 'launch.log').exists()
  returned = collect.collect(str(tmp_path))
  with open(tmp_path / 'collected.csv') as f:
    rows = list(csv.DictReader(f))
  assert rows == returned and json.loads((tmp_path / 'collected.json').read_text()) == rows
  assert len(rows) == 4  # 2 runs × 2 vmapped members
  assert {r['loss.name'] for r in rows} == {'multiclass_svm', 'softmax_cross_entropy'}
  accs = [float(r['val_accuracy']) for r in rows]
  assert accs == sorted(accs, reverse=True) and min(accs) > 0.5


def test_submitit_runs_a_structural_sweep_as_a_job_array(tmp_path, monkeypatch):
  """submitit's local executor: the code path of Slurm (one run here; two are tested above)."""
  codes = _launch(tmp_path, monkeypatch, 'loss.name=softmax_cross_entropy', 'submitit_local')
  assert codes == [0]
  [run] = json.loads((tmp_path / 'launch.json').read_text())['runs']
  assert run['values'] == {'loss.name': 'softmax_cross_entropy'}
  results = json.loads((tmp_path / run['name'] / 'results.json').read_text())
  assert results['config']['loss']['name'] == 'softmax_cross_entropy'
  assert (tmp_path / 'submitit').is_dir()
  rows = collect.collect(str(tmp_path))
  assert len(rows) == 2 and min(float(r['val_accuracy']) for r in rows) > 0.5


def test_unknown_structural_field(tmp_path):
  config = default_config(**{'sweep.structural': 'loss.nam=a,b'})
  with pytest.raises(ConfigError) as err:
    structural.expand(config, 'configs/default.py', str(tmp_path))
  assert str(err.value) == "config has no field 'loss.nam'"


def test_collect_without_a_launch(tmp_path):
  with pytest.raises(UserError, match='launch.json.*launch.run'):
    collect.collect(str(tmp_path))
  proc = run_main(f'--workdir={tmp_path}', module='launch.collect')
  assert proc.returncode == 2 and 'launch.json' in proc.stderr and 'launch.run' in proc.stderr
  assert proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
