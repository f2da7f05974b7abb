"""Converged members leave the chunk program (`Trainer.fit`, `hinge_jax/compaction.py`).

An L-BFGS sweep of four λ on digits runs twice on one device: with the compaction forced
(`compact_min_flops=0`) and off. The members converge at the same steps to the same
objectives (to float32 rounding, 1e-5: the smaller programs sum in another order), the frozen
members' evaluations stay those of their frozen state, and the programs shrank 4 → 2 → 1.
"""

import dataclasses

import jax
import numpy as np
import pytest

from hinge_jax.compaction import COMPACT_MIN_FLOPS, shrunk
from hinge_jax.train import Trainer
from helpers import default_config

LAMS = (1e-1, 1e-2, 1e-3, 1e-4)


def _trainer(digits, devices=1):
  base = {'optimizer.name': 'lbfgs', 'batch_size': 0, 'num_steps': 1000,
          'loss.name': 'softmax_cross_entropy', 'reg.regularize_bias': False,
          'eval_every_steps': 5, 'stop.check_every': 5, 'stop.tol': 1e-5}
  members = [default_config(**base, **{'reg.strength': lam}) for lam in LAMS]
  return Trainer.create(members[0], digits, members, devices=jax.devices()[:devices])


@pytest.fixture(scope='module')
def both(digits):
  out = {}
  for name, flops in (('off', float('inf')), ('on', 0.0)):
    trainer = dataclasses.replace(_trainer(digits), compact_min_flops=flops)
    rows = {}
    state = trainer.fit(trainer.init(), on_eval=lambda s, _, r: rows.__setitem__(s, r))
    out[name] = (trainer, state, rows)
  return out


def test_same_steps_and_objectives_as_the_lock_step(both):
  (off, s_off, r_off), (on, s_on, r_on) = both['off'], both['on']
  np.testing.assert_array_equal(on.convergence_record.steps, off.convergence_record.steps)
  assert on.convergence_record.converged.all() and off.convergence_record.converged.all()
  assert len(set(on.convergence_record.steps.tolist())) > 2  # members stop apart
  assert sorted(r_on) == sorted(r_off)
  for step in r_on:
    for key in ('loss', 'val_loss'):
      np.testing.assert_allclose(r_on[step][key], r_off[step][key], rtol=1e-5)
    np.testing.assert_array_equal(r_on[step]['val_accuracy'], r_off[step]['val_accuracy'])
  w_on, w_off = np.asarray(s_on.params['W']), np.asarray(s_off.params['W'])
  assert np.max(np.abs(w_on - w_off)) <= 1e-4 * np.max(np.abs(w_off))


def test_programs_shrink_and_frozen_members_keep_their_values(both):
  on, _, rows = both['on']
  assert {k[1] for k in on._compiled if k[0] == 'members'} == {2, 1}
  steps = on.convergence_record.steps
  for j, stop in enumerate(steps):
    later = [s for s in rows if s > stop]
    for s in later:  # frozen: the evaluations of its frozen state, and no batch loss
      assert rows[s]['loss'][j] == rows[stop]['loss'][j]
      assert rows[s]['val_loss'][j] == rows[stop]['val_loss'][j]
    if later and stop < max(steps) - 10:
      assert np.isnan(rows[max(later)]['batch_loss'][j])


def test_compaction_only_where_it_pays(digits):
  trainer = _trainer(digits)
  assert trainer.compact_min_flops == COMPACT_MIN_FLOPS
  frozen = np.array([True, True, True, False])
  assert shrunk(trainer, frozen, 4) is None  # digits: too small to pay for a compile
  forced = dataclasses.replace(trainer, compact_min_flops=0.0)
  np.testing.assert_array_equal(shrunk(forced, frozen, 4), [3])
  np.testing.assert_array_equal(shrunk(forced, np.array([True, False, False, True]), 4),
                                [1, 2])
  assert shrunk(forced, np.array([True, False, False, False]), 4) is None  # 3 of 4
  # over 4 devices the members axis must divide the program: 1 live member pads to 4
  wide = dataclasses.replace(_trainer(digits, devices=4), compact_min_flops=0.0)
  assert wide.layout.member_shards == 4 and shrunk(wide, frozen, 4) is None


def test_members_laid_over_devices_stop_at_the_same_steps(both, digits):
  """The sweep over 4 devices, one member each: the checks (L-BFGS's values, gathered from
  every device) stop each member at the step the one-device run did, at the same W."""
  off, s_off, _ = both['off']
  wide = _trainer(digits, devices=4)
  assert wide.layout.member_shards == 4
  state = wide.fit(wide.init())
  np.testing.assert_array_equal(wide.convergence_record.steps, off.convergence_record.steps)
  w, w_off = np.asarray(state.params['W']), np.asarray(s_off.params['W'])
  assert np.max(np.abs(w - w_off)) <= 1e-4 * np.max(np.abs(w_off))
