"""Convergence per member: the stop tests and their settings.

Freezing and the end of a run: tests/test_sklearn_optimum.py; the fields a minibatch SGD run
reports: tests/test_main.py (the default run); sweep.csv's: tests/test_sweep.py."""

import json

import numpy as np
import pytest

from hinge_jax import config_lib
from hinge_jax.convergence import Convergence, StopRule
from hinge_jax.errors import ConfigError
from helpers import default_config


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


def test_a_small_step_with_a_large_predicted_decrease_is_not_convergence():
  """L-BFGS's checks also pass the next step's predicted decrease: tol must hold for both."""
  record = Convergence.create(StopRule(tol=1e-6, check_every=1), 3)
  record.check(1, [1.0, 1.0, 1.0], predicted=[0.0, 0.0, 0.0])
  newly = record.check(2, [1.0, 1.0, 1.0 - 2e-6], predicted=[5e-7, 2e-6, 0.0])
  assert newly.tolist() == [True, False, False]
  np.testing.assert_allclose(record.window_decrease, [0.0, 0.0, 2e-6])


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
