"""End to end through `python -m hinge_jax.main`: the default run and every bad input."""

import json
import os

import numpy as np
import pytest

from helpers import run_main


def test_default_config_on_digits(tmp_path):
  proc = run_main(f'--workdir={tmp_path}')
  assert proc.returncode == 0, proc.stderr
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['test_accuracy'] >= 0.95
  assert results['diverged'] is False and results['steps'] == 1000 and results['seed'] == 0
  assert results['timing']['chunk_reruns'] == 0
  for key in ('train_accuracy', 'val_accuracy', 'final_loss', 'wall_time_s'):
    assert isinstance(results[key], float)
  rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in rows] == [250, 500, 750, 1000]
  assert all({'loss', 'train_accuracy', 'val_accuracy'} <= set(r) for r in rows)
  assert json.loads((tmp_path / 'config.json').read_text())['loss']['name'] == 'multiclass_svm'
  conf = np.array(results['splits']['test']['confusion_matrix'])
  assert conf.shape == (10, 10) and conf.sum() == results['splits']['test']['size']
  assert 'test_acc' in proc.stdout and 'step 1000/1000' in proc.stdout


def _one_line_error(proc, *needles, code=2):
  assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
  lines = [l for l in proc.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


@pytest.mark.parametrize('override,needles', [
    ('--config.loss.name=hinge', ("loss.name='hinge'", 'multiclass_svm', 'softmax_cross_entropy')),
    ('--config.reg.name=l3', ("reg.name='l3'", 'elastic_net')),
    ('--config.optimizer.name=lbfgs', ("optimizer.name='lbfgs'", 'adam', 'nesterov')),
    ('--config.dataset.name=imagenet21k', ("dataset.name='imagenet21k'", 'digits')),
    ('--config.reg.strength=-1', ('reg.strength=-1', '>= 0')),
    ('--config.optimizer.learning_rate=-0.1', ('optimizer.learning_rate=-0.1', '> 0')),
    ('--config.batch_size=5000', ('batch_size=5000', 'training set', '1257')),
    ('--config.sampling=sorted', ("sampling='sorted'", 'with_replacement')),
])
def test_bad_config_stops_before_training(tmp_path, override, needles):
  proc = run_main(f'--workdir={tmp_path}', override)
  _one_line_error(proc, *needles)
  assert not (tmp_path / 'results.json').exists()


def _npz(path, x, y):
  np.savez(path, x_train=x, y_train=y)
  return path


def test_labels_out_of_range(tmp_path):
  rng = np.random.default_rng(0)
  path = _npz(tmp_path / 'd.npz', rng.normal(size=(50, 4)), np.r_[np.arange(49) % 3, -1])
  proc = run_main(f'--workdir={tmp_path}/w', '--config.dataset.name=npz',
                  f'--config.dataset.path={path}', '--config.batch_size=10')
  _one_line_error(proc, 'labels are outside [0, 3)')


def test_nan_features(tmp_path):
  x = np.random.default_rng(0).normal(size=(50, 4))
  x[3, 2] = np.nan
  x[7, 1] = np.inf
  path = _npz(tmp_path / 'd.npz', x, np.arange(50) % 3)
  proc = run_main(f'--workdir={tmp_path}/w', '--config.dataset.name=npz',
                  f'--config.dataset.path={path}', '--config.batch_size=10')
  _one_line_error(proc, '2 NaN or infinite values')


def test_workdir_that_is_a_file(tmp_path):
  (tmp_path / 'f').write_text('x')
  _one_line_error(run_main(f'--workdir={tmp_path / "f"}'), 'is a file')


def test_divergence_writes_results_and_exits_nonzero(tmp_path):
  proc = run_main(f'--workdir={tmp_path}', '--config.optimizer.learning_rate=1e38',
                  '--config.loss.name=softmax_cross_entropy', '--config.num_steps=200',
                  '--config.eval_every_steps=100')
  line = _one_line_error(proc, 'diverged at step', 'lower optimizer.learning_rate', code=3)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['diverged'] is True
  assert results['diverged_step'] == int(line.split('diverged at step ')[1].split(':')[0])
  assert results['timing']['chunk_reruns'] == 1  # the chunk it diverged in, step by step
  # every file is complete JSON (no half-written file)
  json.loads((tmp_path / 'config.json').read_text())
  assert not [f for f in os.listdir(tmp_path) if f.startswith('.')]


def test_override_of_a_missing_field(tmp_path):
  _one_line_error(run_main(f'--workdir={tmp_path}', '--config.reg.strenght=1'),
                  "no field 'strenght'", '--config.reg.strenght')
