"""launch/: structural sweeps expanded into runs, run locally and through submitit, collected.

`launch.run.launch` and `launch.collect.collect` are called in-process; the runs they start
are processes (that is the launcher's job), and the two commands' flag parsing and exit codes
run as `python -m launch.run` / `python -m launch.collect`.
"""

import csv
import json
import os
import pickle
import socket
import subprocess

import pytest

from hinge_jax import io_utils
from hinge_jax.errors import ConfigError, UserError
from helpers import default_config, run_main, xla_flags
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
  monkeypatch.setenv('XLA_FLAGS', xla_flags())  # the runs see this host's devices
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


def _fake_launch(base):
  """A launch of three runs: one done, one failed (its log holds the error), one never started."""
  runs = [{'name': f'loss.name-{n}', 'values': {'loss.name': n}, 'workdir': str(base / n),
           'command': []} for n in ('multiclass_svm', 'bad_loss', 'softmax_cross_entropy')]
  (base / 'launch.json').write_text(json.dumps({'runs': runs}))
  (base / 'multiclass_svm').mkdir()
  (base / 'multiclass_svm' / 'results.json').write_text(json.dumps(
      {'train_accuracy': 0.9, 'val_accuracy': 0.8, 'test_accuracy': 0.7, 'final_loss': 0.5,
       'diverged': False, 'seed': 0}))
  (base / 'bad_loss').mkdir()
  (base / 'bad_loss' / 'launch.log').write_text(
      "W1202 orbax noise\nerror: loss.name='bad_loss' is not a loss; choose one of ...\n")
  return runs


def test_collect_reports_done_failed_and_missing_runs(tmp_path):
  runs = _fake_launch(tmp_path)
  lines = []
  assert collect.report(str(tmp_path), out=lines.append) == 1
  error = lines[-1]
  assert lines[-4:] == [
      'done     loss.name-multiclass_svm',
      "failed   loss.name-bad_loss: error: loss.name='bad_loss' is not a loss; choose one of ...",
      'missing  loss.name-softmax_cross_entropy: not started',
      'error: 2 of 3 run(s) did not finish (1 failed, 1 missing: loss.name-bad_loss, '
      'loss.name-softmax_cross_entropy); rerun them with python -m launch.run, or pass '
      '--allow_incomplete to accept partial results']
  with open(tmp_path / 'collected.csv') as f:
    rows = list(csv.DictReader(f))
  assert [(r['run'], r['val_accuracy'], r['status']) for r in rows] == [
      ('loss.name-multiclass_svm', '0.8', ''), ('loss.name-bad_loss', '', 'failed'),
      ('loss.name-softmax_cross_entropy', '', 'missing')]
  assert rows[1]['error'].startswith("error: loss.name='bad_loss'")
  # --allow_incomplete: the same statuses, exit 0
  lines = []
  assert collect.report(str(tmp_path), allow_incomplete=True, out=lines.append) == 0
  assert lines[-3].startswith('done') and not lines[-1].startswith('error')
  # a run whose workdir is locked is still running: missing, with who holds it
  os.makedirs(runs[2]['workdir'])
  with io_utils.WorkdirLock(runs[2]['workdir']):
    status, detail, _ = collect.run_status(runs[2])
  assert status == 'missing' and detail.startswith(f'still running (pid {os.getpid()} on host')
  # the command line: exit 1 and the error line last on stderr; a stray argument: exit 2
  proc = run_main(f'--workdir={tmp_path}', module='launch.collect')
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  assert proc.stderr.splitlines() == [error] and error.startswith('error: ')
  assert proc.stdout.splitlines()[-3:] == lines[-3:]
  with pytest.raises(UserError, match='unexpected arguments: extra'):
    collect.main(['collect', 'extra'])
  # the lock file of a process that is gone (killed): not running
  gone = subprocess.Popen(['true'])
  gone.wait()
  (tmp_path / 'softmax_cross_entropy' / '.lock').write_text(json.dumps(
      {'pid': gone.pid, 'host': socket.gethostname(), 'started': '...'}))
  assert collect.run_status(runs[2])[:2] == ('missing', 'not started')


def test_collect_reads_a_failed_submitit_run_s_error_from_its_job_log(tmp_path):
  runs = _fake_launch(tmp_path)
  job = tmp_path / 'submitit' / '4242_2'
  job.mkdir(parents=True)
  (job / '4242_2_submitted.pkl').write_bytes(pickle.dumps(
      ['python', '-m', 'hinge_jax.main', f'--workdir={runs[2]["workdir"]}']))
  (job / '4242_2_0_log.err').write_text('error: the config has no field \'nam\'\n')
  assert collect.run_status(runs[2], str(tmp_path))[:2] == (
      'failed', "error: the config has no field 'nam'")
  assert collect.run_status(runs[1], str(tmp_path))[0] == 'failed'  # its own launch.log


# ------------------------------------------------------ one run as several processes


def test_slurm_multinode_dry_run_prints_one_sbatch_script_per_run(tmp_path):
  proc = run_main('--config=configs/default.py', f'--workdir={tmp_path}', '--executor=slurm',
                  '--nodes=2', '--gpus_per_node=4', '--slurm_partition=gpu', '--timeout_min=30',
                  '--dry_run', '--config.seed=3',
                  '--config.sweep.structural=loss.name=multiclass_svm,one_vs_all',
                  module='launch.run')
  assert proc.returncode == 0, proc.stderr
  scripts = proc.stdout.split('#!/bin/bash')[1:]
  assert len(scripts) == 2  # one job per structural run, each of 2 nodes × 4 tasks
  for script, loss in zip(scripts, ('multiclass_svm', 'one_vs_all')):
    for line in ('#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=4', '#SBATCH --gpus-per-node=4',
                 '#SBATCH --partition=gpu', '#SBATCH --time=30'):
      assert line in script.splitlines()
    srun = next(l for l in script.splitlines() if l.startswith('srun '))
    assert f'-m hinge_jax.main --config=configs/default.py --workdir={tmp_path}/' in srun
    assert f'--config.loss.name={loss}' in srun and '--config.seed=3' in srun
    assert '--coordinator' not in srun  # each task reads Slurm's environment
  assert not os.listdir(tmp_path)


def test_local_multiprocess_dry_run_prints_every_process(tmp_path, capfd):
  launch_run.launch(default_config(), 'configs/default.py', str(tmp_path), [],
                    executor='local_multiprocess', num_processes=3, dry_run=True)
  lines = capfd.readouterr().out.strip().splitlines()
  assert [l.split('--process_id=')[1] for l in lines] == ['0', '1', '2']
  assert all('--num_processes=3 ' in l and '--coordinator=localhost:PORT' in l for l in lines)


@pytest.mark.parametrize('executor, kwargs, words', [
    ('local', {'nodes': 2}, '--nodes applies to --executor=slurm'),
    ('submitit_local', {'nodes': 2}, '--nodes applies to --executor=slurm'),
    ('local', {'num_processes': 2}, 'not to --executor=local'),
    ('slurm', {'nodes': 2, 'gpus_per_node': 0}, 'at least one node and one GPU per node'),
])
def test_multiprocess_options_of_the_wrong_executor_are_refused(tmp_path, executor, kwargs,
                                                                words):
  with pytest.raises(UserError, match=words.replace('.', r'\.')):
    launch_run.launch(default_config(), 'configs/default.py', str(tmp_path), [],
                      executor=executor, dry_run=True, **kwargs)


def test_slurm_without_srun_is_one_line(tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))  # no srun here
  with pytest.raises(UserError, match='--executor=slurm: .*srun.*--dry_run'):
    launch_run.launch(default_config(), 'configs/default.py', str(tmp_path / 'b'), [],
                      executor='slurm', nodes=1, gpus_per_node=1)
