"""optimizer.name=lbfgs: where it applies and what it refuses, in one line each.

The optimum it reaches: tests/test_sklearn_optimum.py."""

import pytest

from hinge_jax import config_lib
from hinge_jax.errors import ConfigError
from helpers import default_config

LBFGS = {'optimizer.name': 'lbfgs', 'batch_size': 0}
SMOOTH = 'use softmax_cross_entropy, or loss.squared=True with loss.name=multiclass_svm or ' \
         'one_vs_all, with reg.name=l2 or none'


@pytest.mark.parametrize('fields,needles', [
    ({'batch_size': 200}, ('needs the full batch', 'not batch_size=200', 'set batch_size=0')),
    ({'loss.name': 'multiclass_svm'}, ('loss.name=multiclass_svm with loss.squared=False is '
                                       'not differentiable', SMOOTH)),
    ({'loss.name': 'crammer_singer', 'loss.squared': True}, ('crammer_singer', SMOOTH)),
    ({'loss.name': 'softmax_cross_entropy', 'reg.name': 'l1'}, ('reg.name=l1', SMOOTH)),
    ({'loss.name': 'softmax_cross_entropy', 'reg.name': 'elastic_net'}, ('elastic_net',)),
    ({'loss.name': 'softmax_cross_entropy', 'reg.max_norm': 3.0}, ('set reg.max_norm=0',)),
    ({'loss.name': 'softmax_cross_entropy', 'strategy': 'numerical_gradient'},
     ("strategy='numerical_gradient'",)),
    ({'loss.name': 'softmax_cross_entropy', 'optimizer.memory_size': 0},
     ('optimizer.memory_size=0 must be an integer >= 1',)),
])
def test_lbfgs_is_refused_where_it_does_not_apply(fields, needles):
  with pytest.raises(ConfigError) as e:
    config_lib.validate(default_config(**{**LBFGS, **fields}))
  message = str(e.value)
  assert '\n' not in message
  for needle in needles:
    assert needle in message, message


@pytest.mark.parametrize('fields', [
    {'loss.name': 'softmax_cross_entropy'},
    {'loss.name': 'one_vs_all', 'loss.squared': True, 'reg.name': 'none'},
    {'loss.name': 'multiclass_svm', 'loss.squared': True, 'strategy': 'gradient_descent',
     'batch_size': 200},
])
def test_lbfgs_is_accepted_on_smooth_full_batch_objectives(fields):
  config_lib.validate(default_config(**{**LBFGS, **fields}))
