"""Convergence per member: the stop tests, freezing, and the fields every run reports."""

import json

import numpy as np
import pytest

from hinge_jax import config_lib
from hinge_jax.convergence import Convergence, StopRule
from hinge_jax.errors import ConfigError
from hinge_jax.train import Trainer
from helpers import array_dataset, default_config


def test_window_decrease_and_tol():
  record = Convergence.create(StopRule(tol=1e-3, check_every=10), 3)
  assert not record.check(10, [2.0, 1.0, np.nan]).any()  # no window yet
  newly = record.check(20, [1.0, 0.9995, np.nan])
  np.testing.assert_allclose(record.window_decrease[:2], [0.5, 0.0005])
  assert newly.tolist() == [False, True, False]  # a NaN (diverged) member never converges
  assert record.steps.tolist() == [20, 20, 20]
  newly = record.check(30, [0.5, 0.1, 1.0])  # a converged member keeps its values
  assert newly.tolist() == [False, False, False]
  assert record.converged.tolist() == [False, True, False]
  assert record.steps.tolist() == [30, 20, 30]
  np.testing.assert_allclose(record.previous[:2], [0.5, 0.9995])
  np.testing.assert_allclose(record.window_decrease[:2], [0.5, 0.0005])


def test_an_increase_counts_as_no_decrease_and_grad_tol_converges_alone():
  record = Convergence.create(StopRule(tol=1e-6, grad_tol=1e-3, check_every=5), 3)
  record.check(5, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
  newly = record.check(10, [1.1, 0.5, 0.5], [1.0, 1.0, 1e-4])
  assert newly.tolist() == [True, False, True]
  np.testing.assert_allclose(record.window_decrease, [-0.1, 0.5, 0.5])


def test_without_a_stop_test_nothing_converges_and_the_record_round_trips():
  record = Convergence.create(StopRule(check_every=5), 2)
  record.check(5, [1.0, 2.0])
  record.check(10, [1.0, 2.0])
  assert not record.converged.any()
  back = Convergence.from_json(record.rule, json.loads(json.dumps(record.to_json())))
  for field in ('previous', 'window_decrease', 'converged', 'steps'):
    np.testing.assert_array_equal(getattr(back, field), getattr(record, field))
  assert np.isnan(back.grad_norm).all()


@pytest.mark.parametrize('field,value,needle', [
    ('stop.tol', 0.0, 'stop.tol=0.0 must be > 0'),
    ('stop.tol', -1e-6, 'stop.tol=-1e-06 must be > 0'),
    ('stop.grad_tol', 0.0, 'stop.grad_tol=0.0 must be > 0'),
    ('stop.max_steps', -1, 'stop.max_steps=-1 must be >= 0'),
    ('stop.check_every', -2, 'stop.check_every=-2 must be >= 0'),
])
def test_bad_stop_settings_are_one_line(field, value, needle):
  with pytest.raises(ConfigError) as e:
    config_lib.validate(default_config(**{field: value}))
  assert needle in str(e.value) and '\n' not in str(e.value)


def test_converged_members_are_frozen_and_the_run_ends_when_all_have(digits):
  """Two full-batch members, one with a 25× larger step: each is frozen at the check it
  converged at (its final W is the W of that evaluation), and the run ends at the later one."""
  tiny = array_dataset(digits.x['train'][:200], digits.y['train'][:200], 10, scale=1 / 16)
  fields = {'loss.name': 'softmax_cross_entropy', 'batch_size': 0, 'optimizer.name': 'sgd',
            'num_steps': 2000, 'eval_every_steps': 10, 'stop.tol': 1e-3}
  members = [default_config(**fields, **{'optimizer.learning_rate': lr}) for lr in (2.0, 0.08)]
  trainer = Trainer.create(members[0], tiny, members)
  seen = {}

  def on_eval(step, state, row):
    seen[step] = (np.array(state.params['W']), np.asarray(row['loss'], np.float64))
  state = trainer.fit(trainer.init(), on_eval=on_eval)
  record = trainer.convergence_record
  fast, slow = record.steps
  assert record.converged.all() and fast < slow < 2000
  assert max(seen) == slow  # no step after the last member converged
  for j, step in enumerate(record.steps):
    np.testing.assert_array_equal(np.asarray(state.params['W'][j]), seen[step][0][j])
    before, now = seen[step - 10][1][j], seen[step][1][j]
    assert record.window_decrease[j] == pytest.approx((before - now) / before, rel=1e-12)
    assert record.window_decrease[j] <= 1e-3
    earlier = (seen[step - 20][1][j] - before) / seen[step - 20][1][j]
    assert earlier > 1e-3  # it had not converged at the check before
