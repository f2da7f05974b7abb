"""The sanity report: initial loss, λ, overfitting a tiny subset; at run start and alone."""

import json
import math

import pytest

from hinge_jax import experiment, sanity
from helpers import default_config, run_main


@pytest.mark.parametrize('loss,expected', [('multiclass_svm', 9.0),
                                           ('softmax_cross_entropy', math.log(10))])
def test_report_on_digits(digits, loss, expected):
  r = sanity.report(default_config(**{'loss.name': loss, 'sanity.overfit_steps': 100}), digits)
  assert r['initial_loss']['expected'] == pytest.approx(expected)
  assert r['initial_loss']['value'] == pytest.approx(expected, rel=0.01)
  lam = r['regularization']
  assert lam['strengths'][0] == 0.0 and lam['losses'][-1] > lam['losses'][0]
  assert r['overfit'] == {**r['overfit'], 'examples': 20, 'train_accuracy': 1.0, 'ok': True}
  assert r['ok']


def test_bad_setups_are_reported(digits):
  """Large W0 breaks the initial-loss check; no steps cannot overfit."""
  r = sanity.report(default_config(**{'init_scale': 1.0, 'sanity.overfit_steps': 0}), digits)
  assert not r['initial_loss']['ok'] and r['initial_loss']['value'] > 12
  assert not r['overfit']['ok'] and r['overfit']['train_accuracy'] < 1.0
  assert r['regularization']['ok'] and not r['ok']
  lines = sanity.format_report(r, default_config())
  assert 'NOT OK (is init_scale small' in lines[0] and 'NOT OK (raise' in lines[2]


def test_every_run_starts_with_the_report(tmp_path, digits):
  config = default_config(**{'num_steps': 20, 'eval_every_steps': 20,
                             'sanity.overfit_steps': 100})
  logged = []
  experiment.train_and_evaluate(config, str(tmp_path), log=logged.append)
  r = json.loads((tmp_path / 'sanity.json').read_text())
  assert r['ok'] and r['overfit']['train_accuracy'] == 1.0
  assert sum(line.startswith('sanity:') for line in logged) == 3
  config.sanity.enabled = False
  experiment.train_and_evaluate(config, str(tmp_path / 'off'), log=lambda *a: None)
  assert not (tmp_path / 'off' / 'sanity.json').exists()
  assert (tmp_path / 'off' / 'results.json').exists()


def test_cli_runs_on_its_own(tmp_path):
  proc = run_main(f'--workdir={tmp_path}', '--config.sanity.overfit_steps=100',
                  module='hinge_jax.sanity')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count('sanity:') == 3 and 'NOT OK' not in proc.stdout
  assert json.loads((tmp_path / 'sanity.json').read_text())['ok'] is True
