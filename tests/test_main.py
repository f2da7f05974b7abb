"""The training entry point: the default run, every bad input, and the process's exit codes.

What the process boundary itself does (flag parsing, one `error:` line and the exit code) runs
`python -m hinge_jax.main`; the rest calls `main.train`, the function behind the command.
"""

import json
import os

import numpy as np
import pytest

import reference
from hinge_jax import main
from hinge_jax.errors import UserError
from helpers import default_config, run_main


def _ww_objective_and_grad_norm(digits, w, b, lam):
  """The default objective (WW SVM + λ‖W‖², b unpenalized) and its subgradient's norm, in
  float64 from the loop-based references."""
  x = (digits.x['train'].astype(np.float64) - digits.mean.astype(np.float64)) * digits.scale
  w, b = w.astype(np.float64), b.astype(np.float64)
  s, y = x @ w.T + b, digits.y['train']
  ds = np.stack([reference.ww_svm_grad(s[i], y[i]) for i in range(len(y))]) / len(y)
  value = sum(reference.ww_svm(s[i], y[i]) for i in range(len(y))) / len(y) + lam * np.sum(w * w)
  gw, gb = ds.T @ x + 2 * lam * w, ds.sum(axis=0)
  return value, np.sqrt(np.sum(gw * gw) + np.sum(gb * gb))


def test_default_config_on_digits(tmp_path, capsys, digits):
  main.train(default_config(), str(tmp_path))
  out = capsys.readouterr().out
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
  # how far from converged the minibatch SGD run ended, against a float64 NumPy reference
  got = results['convergence']
  assert got['converged'] is False and got['steps'] == 1000
  params = np.load(tmp_path / 'params.npz')
  want, norm = _ww_objective_and_grad_norm(digits, params['W'], params['b'], 1e-3)
  assert got['objective'] == pytest.approx(want, rel=1e-9)
  assert got['grad_norm'] == pytest.approx(norm, rel=1e-6)
  assert got['window_decrease'] == pytest.approx(
      (rows[2]['loss'] - rows[3]['loss']) / rows[2]['loss'], rel=1e-9)
  conf = np.array(results['splits']['test']['confusion_matrix'])
  assert conf.shape == (10, 10) and conf.sum() == results['splits']['test']['size']
  assert 'test_acc' in out and 'step 1000/1000' in out


def _one_line_error(proc, *needles, code=2):
  assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
  lines = [l for l in proc.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


def _npz(path, x, y):
  np.savez(path, x_train=x, y_train=y)
  return str(path)


def _bad_labels(tmp_path):
  rng = np.random.default_rng(0)
  path = _npz(tmp_path / 'd.npz', rng.normal(size=(50, 4)), np.r_[np.arange(49) % 3, -1])
  return {'dataset.name': 'npz', 'dataset.path': path, 'batch_size': 10}


def _nan_features(tmp_path):
  x = np.random.default_rng(0).normal(size=(50, 4))
  x[3, 2] = np.nan
  x[7, 1] = np.inf
  path = _npz(tmp_path / 'd.npz', x, np.arange(50) % 3)
  return {'dataset.name': 'npz', 'dataset.path': path, 'batch_size': 10}


@pytest.mark.parametrize('fields,needles', [
    ({'loss.name': 'hinge'}, ("loss.name='hinge'", 'multiclass_svm', 'softmax_cross_entropy')),
    ({'reg.name': 'l3'}, ("reg.name='l3'", 'elastic_net')),
    ({'optimizer.name': 'bfgs'}, ("optimizer.name='bfgs'", 'adam', 'lbfgs')),
    ({'optimizer.name': 'lbfgs'}, ('optimizer.name=lbfgs needs the full batch', 'batch_size=0')),
    ({'optimizer.name': 'lbfgs', 'batch_size': 0}, ('multiclass_svm with loss.squared=False',
                                                    'softmax_cross_entropy')),
    ({'stop.tol': 0.0}, ('stop.tol=0.0 must be > 0',)),
    ({'dataset.name': 'imagenet21k'}, ("dataset.name='imagenet21k'", 'digits')),
    ({'reg.strength': -1.0}, ('reg.strength=-1', '>= 0')),
    ({'optimizer.learning_rate': -0.1}, ('optimizer.learning_rate=-0.1', '> 0')),
    ({'batch_size': 5000}, ('batch_size=5000', 'training set', '1257')),
    ({'sampling': 'sorted'}, ("sampling='sorted'", 'with_replacement')),
    (_bad_labels, ('labels are outside [0, 3)',)),
    (_nan_features, ('2 NaN or infinite values',)),
    ({'sweep.structural': 'loss.name=multiclass_svm,softmax_cross_entropy'},
     ('python -m launch.run',)),
])
def test_bad_input_stops_before_training_in_one_line(tmp_path, fields, needles):
  config = default_config(**(fields(tmp_path) if callable(fields) else fields))
  workdir = tmp_path / 'w'
  with pytest.raises(UserError) as err:
    main.train(config, str(workdir))
  assert '\n' not in str(err.value)
  for needle in needles:
    assert needle in str(err.value), str(err.value)
  assert not (workdir / 'results.json').exists()


def test_workdir_that_is_a_file(tmp_path):
  (tmp_path / 'f').write_text('x')
  with pytest.raises(UserError, match='is a file'):
    main.train(default_config(), str(tmp_path / 'f'))


def test_bad_input_exits_2_with_one_line_and_a_bad_cache_dir_only_warns(tmp_path):
  """A UserError (here: a structural sweep given to main) is one `error:` line, exit code 2.

  The --jax_cache_dir that cannot be created is a warning line before it, not an error.
  """
  (tmp_path / 'file').write_text('x')
  workdir = tmp_path / 'w'
  proc = run_main(f'--workdir={workdir}', f'--jax_cache_dir={tmp_path / "file" / "c"}',
                  '--config.sweep.structural=loss.name=multiclass_svm,softmax_cross_entropy')
  _one_line_error(proc, 'python -m launch.run')
  assert not (workdir / 'config.json').exists()
  warnings = [l for l in proc.stderr.splitlines() if l.startswith('warning: compilation cache')]
  assert len(warnings) == 1 and 'running without it' in warnings[0]


def test_override_of_a_missing_field(tmp_path):
  _one_line_error(run_main(f'--workdir={tmp_path}', '--config.reg.strenght=1'),
                  "no field 'strenght'", '--config.reg.strenght')


def test_absl_flag_error_exits_2_in_one_line(tmp_path):
  """absl's own parsing error (exit 1 and its usage text by default) is one line, exit 2."""
  proc = run_main(f'--workdir={tmp_path}', '--overwrite=maybe')
  _one_line_error(proc, '--overwrite=maybe is not a boolean', '--overwrite=true')
  assert proc.stderr.count('\n') == 1, proc.stderr
  assert not os.listdir(tmp_path)


def test_divergence_writes_results_and_exits_3(tmp_path):
  workdir = tmp_path
  proc = run_main(f'--workdir={workdir}', '--config.optimizer.learning_rate=1e38',
                  '--config.loss.name=softmax_cross_entropy', '--config.num_steps=200',
                  '--config.eval_every_steps=100', '--config.sanity.enabled=False')
  line = _one_line_error(proc, 'diverged at step', 'lower optimizer.learning_rate', code=3)
  results = json.loads((workdir / 'results.json').read_text())
  assert results['diverged'] is True
  assert results['diverged_step'] == int(line.split('diverged at step ')[1].split(':')[0])
  assert results['timing']['chunk_reruns'] == 1  # the chunk it diverged in, step by step
  # every file is complete JSON (no half-written file)
  json.loads((workdir / 'config.json').read_text())
  assert not [f for f in os.listdir(workdir) if f.startswith('.')]
