"""launch/: structural sweeps expanded into runs, run locally and through submitit, collected."""

import csv
import json
import os
import subprocess
import sys

import pytest

from helpers import REPO, run_main

STRUCTURAL = '--config.sweep.structural=loss.name=multiclass_svm,softmax_cross_entropy'
TINY = ('--config.num_steps=30', '--config.eval_every_steps=30')


def _launch(*args, timeout=600):
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  return subprocess.run([sys.executable, '-m', 'launch.run', '--config=configs/default.py',
                         *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env=env)


def _collect(base):
  return subprocess.run([sys.executable, '-m', 'launch.collect', f'--workdir={base}'], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_dry_run_prints_one_command_per_combination(tmp_path):
  proc = _launch(f'--workdir={tmp_path}', '--dry_run', *TINY, STRUCTURAL,
                 '--config.sweep.structural=loss.name=multiclass_svm,one_vs_all; batch_size=50,100')
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 4  # the last declaration wins: 2 losses × 2 batch sizes
  assert all('-m hinge_jax.main --config=configs/default.py' in l for l in lines)
  assert all('--config.num_steps=30' in l and '--config.sweep.structural= ' in l for l in lines)
  assert any('--config.loss.name=one_vs_all --config.batch_size=100' in l for l in lines)
  assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.parametrize('executor', ['submitit_local', 'local'])
def test_two_run_structural_sweep_runs_and_is_collected(tmp_path, executor):
  proc = _launch(f'--workdir={tmp_path}', f'--executor={executor}', '--parallel=2', *TINY,
                 STRUCTURAL, '--config.sweep.grid=optimizer.learning_rate=0.01,0.1')
  assert proc.returncode == 0, proc.stdout + proc.stderr
  manifest = json.loads((tmp_path / 'launch.json').read_text())
  assert [r['values'] for r in manifest['runs']] == [{'loss.name': 'multiclass_svm'},
                                                     {'loss.name': 'softmax_cross_entropy'}]
  for run in manifest['runs']:
    results = json.loads((tmp_path / run['name'] / 'results.json').read_text())
    assert results['config']['loss']['name'] == run['values']['loss.name']
  if executor == 'submitit_local':
    assert (tmp_path / 'submitit').is_dir()
  proc = _collect(tmp_path)
  assert proc.returncode == 0, proc.stderr
  with open(tmp_path / 'collected.csv') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4  # 2 runs × 2 vmapped members
  assert {r['loss.name'] for r in rows} == {'multiclass_svm', 'softmax_cross_entropy'}
  accs = [float(r['val_accuracy']) for r in rows]
  assert accs == sorted(accs, reverse=True) and min(accs) > 0.5


def test_unknown_structural_field(tmp_path):
  proc = _launch(f'--workdir={tmp_path}', '--dry_run', '--config.sweep.structural=loss.nam=a,b')
  assert proc.returncode == 2 and proc.stderr.strip() == "error: config has no field 'loss.nam'"


def test_collect_without_a_launch(tmp_path):
  proc = _collect(tmp_path)
  assert proc.returncode == 2 and 'launch.json' in proc.stderr and 'launch.run' in proc.stderr


def test_main_refuses_a_structural_declaration(tmp_path):
  proc = run_main(f'--workdir={tmp_path}', STRUCTURAL)
  assert proc.returncode == 2 and 'python -m launch.run' in proc.stderr
