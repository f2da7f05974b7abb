"""Vmapped sweeps: declaration, equivalence with single runs, divergence, sharding, chunking."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from hinge_jax import main, sweep
from hinge_jax.errors import ConfigError, Interrupted
from hinge_jax.train import Trainer
from helpers import REPO, default_config

BASE = {'num_steps': 40, 'eval_every_steps': 20, 'sanity.enabled': False}


def _single(config, dataset):
  trainer = Trainer.create(config, dataset, [config], devices=jax.local_devices()[:1])
  state = trainer.fit(trainer.init())
  return np.asarray(state.params['W'][0]), trainer.evaluate(state.params, 'val')['accuracy'][0]


def test_grid_zip_and_random_expansion():
  config = default_config(**{'sweep.grid': 'optimizer.learning_rate=0.1,0.2; reg.strength=0,1',
                             'sweep.zip': 'loss.margin=1,2; seed=3,4'})
  points = sweep.expand(config)
  assert len(points) == 8
  assert points[0] == {'loss.margin': 1, 'seed': 3, 'optimizer.learning_rate': 0.1,
                       'reg.strength': 0}
  assert {(p['loss.margin'], p['seed']) for p in points} == {(1, 3), (2, 4)}
  config = default_config(**{'sweep.random': 'optimizer.learning_rate=loguniform(1e-4,1e-1); '
                                             'reg.strength=uniform(0,2)',
                             'sweep.num_samples': 50, 'sweep.seed': 7})
  points = sweep.expand(config)
  lr = np.array([p['optimizer.learning_rate'] for p in points])
  assert len(points) == 50 and lr.min() >= 1e-4 and lr.max() <= 1e-1
  assert np.std(np.log10(lr)) > 0.5  # spread over decades: log-uniform, not uniform
  assert points == sweep.expand(config)  # seeded
  config.sweep.seed = 8
  assert points != sweep.expand(config)


@pytest.mark.parametrize('fields,needle', [
    ({'sweep.grid': 'optimizer.lr=0.1,0.2'}, "no field 'optimizer.lr'"),
    ({'sweep.grid': 'loss.name=1,2'}, 'structural sweep with launch/'),
    ({'sweep.grid': 'batch_size=100,200'}, 'structural sweep'),
    ({'sweep.grid': 'optimizer.learning_rate='}, 'has no values'),
    ({'sweep.grid': 'optimizer.learning_rate=fast'}, 'is not a number'),
    ({'sweep.random': 'reg.strength=uniform(2,1)', 'sweep.num_samples': 3}, 'low > high'),
    ({'sweep.random': 'reg.strength=loguniform(0,1)', 'sweep.num_samples': 3}, 'positive bounds'),
    ({'sweep.random': 'reg.strength=loguniform(1,2)'}, 'num_samples'),
    ({'sweep.zip': 'seed=1,2; loss.margin=1,2,3'}, 'same number of values'),
    ({'sweep.grid': 'seed=1,2,3', 'sweep.max_members': 2}, 'sweep.confirm=True'),
    ({'sweep.grid': 'seed=1,2', 'sweep.zip': 'seed=3,4'}, 'swept twice'),
])
def test_bad_sweeps_are_refused_in_one_line(fields, needle):
  with pytest.raises(ConfigError, match='.*') as err:
    sweep.expand(default_config(**fields))
  assert needle in str(err.value) and '\n' not in str(err.value)


def test_empty_sweep_is_refused():
  with pytest.raises(ConfigError, match='empty'):
    sweep.expand(default_config(**{'sweep.grid': ' ; '}))


def _member_params(summary_dir):
  return np.load(summary_dir / 'params.npz')['W']


def test_each_member_equals_its_single_run_and_seeds_draw_their_own_batches(tmp_path, digits):
  fields = {'sweep.grid': 'optimizer.learning_rate=0.02,0.2; seed=0,1', 'sweep.devices': 1,
            'reg.strength': 1e-3}
  config = default_config(**{**BASE, **fields})
  summary = sweep.run(config, str(tmp_path), log=lambda *a: None)
  rows = summary['members']
  assert len(rows) == 4
  for row in rows:
    single = default_config(**{**BASE, 'optimizer.learning_rate': row['optimizer.learning_rate'],
                               'seed': int(row['seed']), 'reg.strength': 1e-3})
    _, val_acc = _single(single, digits)
    assert row['val_accuracy'] == val_acc
  best = summary['best_member']
  best_single = default_config(**{**BASE, 'optimizer.learning_rate':
                                  rows[best]['optimizer.learning_rate'],
                                  'seed': int(rows[best]['seed']), 'reg.strength': 1e-3})
  w, _ = _single(best_single, digits)
  # Not bitwise: XLA folds the K members' matmuls into one (B, D) @ (D, K·C) product whose
  # reduction blocking depends on K·C, so members agree with single runs to float32 rounding.
  np.testing.assert_allclose(_member_params(tmp_path), w, rtol=1e-5, atol=1e-6)
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['sweep_member'] == best and results['val_accuracy'] == rows[best]['val_accuracy']


def test_divergence_is_isolated(tmp_path, digits):
  common = {**BASE, 'sweep.devices': 1, 'loss.name': 'softmax_cross_entropy',
            'optimizer.name': 'sgd'}
  bad = sweep.run(default_config(**common, **{
      'sweep.grid': 'optimizer.learning_rate=0.05,1e38,0.2'}), str(tmp_path / 'a'),
                  log=lambda *a: None)
  good = sweep.run(default_config(**common, **{
      'sweep.grid': 'optimizer.learning_rate=0.05,0.2'}), str(tmp_path / 'b'),
                   log=lambda *a: None)
  with_bad, without = bad['members'], good['members']
  assert bad['chunk_reruns'] == 1 and good['chunk_reruns'] == 0  # the chunk it diverged in
  assert [r['diverged'] for r in with_bad] == [False, True, False]
  assert with_bad[1]['diverged_step'] is not None
  for a, b in zip([with_bad[0], with_bad[2]], without):
    for key in ('train_accuracy', 'val_accuracy', 'test_accuracy'):
      assert a[key] == b[key]
    assert a['final_loss'] == pytest.approx(b['final_loss'], rel=1e-5)
    assert not a['diverged']


def _rows(tmp_path, name, **fields):
  config = default_config(**{**BASE, 'sweep.grid': 'optimizer.learning_rate=0.01,0.03,0.1; '
                                                   'reg.strength=0,1e-3,1e-2', **fields})
  summary = sweep.run(config, str(tmp_path / name), log=lambda *a: None)
  return summary


@pytest.fixture(scope='module')
def whole(tmp_path_factory):
  """The 3×3 sweep on one device in one program: what sharded and chunked runs must equal."""
  return _rows(tmp_path_factory.mktemp('sweeps'), 'whole', **{'sweep.devices': 1})


def _same_rows(rows_a, rows_b):
  """Same members, same accuracies; losses equal to float32 rounding (see above), and so the
  convergence fields: the objective, its (sub)gradient's norm, the last window's decrease."""
  assert len(rows_a) == len(rows_b)
  for a, b in zip(rows_a, rows_b):
    for key in a:
      if key in ('final_loss', 'objective'):
        assert a[key] == pytest.approx(b[key], rel=1e-5)
      elif key == 'grad_norm':
        assert a[key] == pytest.approx(b[key], rel=1e-3), key
      elif key == 'window_decrease':
        assert a[key] == pytest.approx(b[key], abs=1e-5), key
      else:
        assert a[key] == b[key], key


def test_sharding_over_8_devices_equals_one_device(tmp_path, whole):
  assert len(jax.local_devices()) == 8  # tests/conftest.py simulates 8 CPU devices
  eight = _rows(tmp_path, 'eight', **{'sweep.devices': 8})
  assert eight['devices'] == 8 and eight['members_per_program'] == 16  # 9 padded to 16
  _same_rows(whole['members'], eight['members'])


def test_chunked_programs_equal_one_program(tmp_path, whole):
  chunked = _rows(tmp_path, 'chunked', **{'sweep.devices': 1, 'sweep.members_per_program': 2})
  assert chunked['programs'] == 5 and whole['programs'] == 1
  _same_rows(whole['members'], chunked['members'])


def test_memory_estimate_splits_a_sweep_that_does_not_fit(tmp_path, whole):
  budget = 200_000  # bytes: the digits data take ~120 kB; each member ~25 kB
  summary = _rows(tmp_path, 'small', **{'sweep.devices': 1, 'sweep.memory_budget_bytes': budget})
  assert summary['programs'] > 1 and summary['members_per_program'] < 9
  _same_rows(whole['members'], summary['members'])


def test_a_sweep_config_runs_as_a_sweep_and_writes_every_output(tmp_path, capsys):
  """What `python -m hinge_jax.main` does with a config that declares a sweep."""
  config = default_config(**{'num_steps': 100, 'eval_every_steps': 50, 'sweep.grid':
                             'optimizer.learning_rate=0.01,0.1; reg.strength=0,1e-2'})
  main.train(config, str(tmp_path))
  assert 'best member' in capsys.readouterr().out
  header = (tmp_path / 'sweep.csv').read_text().splitlines()[0]
  assert header.startswith('member,optimizer.learning_rate,reg.strength,train_accuracy')
  assert header.endswith('diverged_step,converged,steps,objective,grad_norm,window_decrease')
  assert len((tmp_path / 'sweep.csv').read_text().splitlines()) == 5
  assert (tmp_path / 'plots' / 'sweep.png').stat().st_size > 1000
  for name in ('loss', 'accuracy', 'templates', 'confusion'):  # the best member's pictures
    assert (tmp_path / 'plots' / f'{name}.png').stat().st_size > 1000
  best = json.loads((tmp_path / 'results.json').read_text())
  assert best['test_accuracy'] > 0.9
  assert best['convergence']['steps'] == best['steps'] == 100
  assert best['convergence']['converged'] is False and best['convergence']['objective'] > 0


def test_a_structural_field_in_a_vmapped_sweep_is_refused(tmp_path):
  with pytest.raises(ConfigError) as err:
    main.train(default_config(**{'sweep.grid': 'loss.name=a,b'}), str(tmp_path))
  assert str(err.value).startswith('sweep field') and '\n' not in str(err.value)


def test_a_signal_stops_a_sweep_at_the_chunk_end_in_one_line(tmp_path, monkeypatch, digits):
  """SIGINT while a sweep's chunk runs: Interrupted (main: one `stopped:` line, exit 130)."""
  original = Trainer.run_chunk
  starts = []

  def run_chunk(self, state, start, length):
    starts.append(start)
    if start == 0:
      os.kill(os.getpid(), signal.SIGINT)  # handled before the next chunk starts
    return original(self, state, start, length)
  monkeypatch.setattr(Trainer, 'run_chunk', run_chunk)
  before = signal.getsignal(signal.SIGINT)
  config = default_config(**{**BASE, 'sweep.grid': 'optimizer.learning_rate=0.02,0.2',
                             'sweep.devices': 1})
  with pytest.raises(Interrupted, match='SIGINT at step .* rerun the same command') as e:
    sweep.run(config, str(tmp_path), log=lambda *a: None)
  assert e.value.signum == signal.SIGINT and starts == [0]
  assert signal.getsignal(signal.SIGINT) == before


class _Exited(BaseException):
  """What os._exit raises in the test below (the test process must live on)."""


SECOND = ('stopped: second SIGINT, exiting at once; rerun the same command to restart the sweep '
          '(a sweep keeps no checkpoint)\n')


@pytest.mark.parametrize('when,count', [('training', 2), ('writing', 1), ('writing', 2)])
def test_a_second_or_late_signal_during_a_sweep(tmp_path, monkeypatch, capfd, when, count):
  """Two SIGINTs while a chunk runs, or one or two while the outputs are written: a second
  exits at once with one line saying the sweep restarts (it keeps no checkpoint); a single
  late one lets the sweep finish."""
  def fake_exit(code):
    raise _Exited(code)
  monkeypatch.setattr(os, '_exit', fake_exit)
  target = (Trainer, 'run_chunk') if when == 'training' else (sweep.results, 'write_sweep')
  real = getattr(*target)

  def with_signals(*args, **kwargs):
    for _ in range(count):
      os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)
  monkeypatch.setattr(*target, with_signals)
  before = signal.getsignal(signal.SIGINT)
  config = default_config(**{**BASE, 'sweep.grid': 'optimizer.learning_rate=0.02,0.2',
                             'sweep.devices': 1})
  if count == 1:
    summary = sweep.run(config, str(tmp_path), log=lambda *a: None)
    assert json.loads((tmp_path / 'sweep.json').read_text())['best'] == summary['best']
    assert capfd.readouterr().err == ''
  else:
    with pytest.raises(_Exited) as exited:
      sweep.run(config, str(tmp_path), log=lambda *a: None)
    assert exited.value.args == (128 + signal.SIGINT,)
    assert capfd.readouterr().err == SECOND
  assert signal.getsignal(signal.SIGINT) == before


# The sweep's child waits at its second chunk until the SIGINT has been handled, so the signal
# lands during training whatever the machine's load.
_STOPPED_CHILD = '''
import signal, sys, time
from hinge_jax.train import Trainer
real = Trainer.run_chunk
def run_chunk(self, state, start, length):
  if start == 20:
    print('training', flush=True)
    handler, deadline = signal.getsignal(signal.SIGINT).__self__, time.time() + 120
    while not handler.signum and time.time() < deadline:
      time.sleep(0.01)
  return real(self, state, start, length)
Trainer.run_chunk = run_chunk
sys.argv = ['main'] + sys.argv[1:]
from hinge_jax import main
main.run()
'''


def test_a_sweep_stopped_by_sigint_exits_130_in_one_line_and_the_rerun_completes(tmp_path,
                                                                             monkeypatch):
  overrides = {**BASE, 'sweep.grid': 'optimizer.learning_rate=0.02,0.2', 'sweep.devices': 1}
  env = dict(os.environ)  # with this process's XLA_FLAGS: its compiled programs are reused
  proc = subprocess.Popen([sys.executable, '-c', _STOPPED_CHILD, f'--workdir={tmp_path}',
                           *(f'--config.{k}={v}' for k, v in overrides.items())],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    for line in proc.stdout:
      if line == 'training\n':
        proc.send_signal(signal.SIGINT)
        break
    _, err = proc.communicate(timeout=120)
  finally:
    proc.kill()
  lines = [line for line in err.splitlines() if line.strip()]
  assert proc.returncode == 128 + signal.SIGINT, err
  assert len(lines) == 1 and lines[0].startswith('stopped: SIGINT at step 40 of program 1/1'), err
  assert 'rerun the same command to restart it' in lines[0] and 'Traceback' not in err
  assert not (tmp_path / 'sweep.csv').exists() and not (tmp_path / '.lock').exists()
  # The pictures are not what is tested here, and drawing them is most of the rerun's time.
  monkeypatch.setattr(sweep.plots, 'draw_sweep', lambda *args: None)
  monkeypatch.setattr(sweep.results.plots, 'draw', lambda *args, **kwargs: {})
  summary = sweep.run(default_config(**overrides), str(tmp_path), log=lambda *a: None)
  assert len(summary['members']) == 2
  assert len((tmp_path / 'sweep.csv').read_text().splitlines()) == 3  # header and two members
