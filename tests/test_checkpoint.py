"""Checkpointer: any number of members, typed keys, keep-last, fallback, refusals."""

import errno
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hinge_jax import checkpoint
from hinge_jax.checkpoint import Checkpointer
from hinge_jax.errors import UserError
from hinge_jax.train import Trainer
from helpers import array_dataset, default_config


def _trainer(k: int) -> Trainer:
  rng = np.random.default_rng(0)
  data = array_dataset(rng.normal(size=(40, 5)).astype(np.float32), np.arange(40) % 3, 3)
  configs = [default_config(**{'seed': 7, 'reg.strength': 10.0 ** -i, 'batch_size': 8,
                               'num_steps': 12, 'eval_every_steps': 4}) for i in range(k)]
  return Trainer.create(configs[0], data, configs)


def _equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('k', [1, 4])
def test_round_trip_of_a_trained_state_of_k_members(tmp_path, k):
  trainer = _trainer(k)
  trained = trainer.fit(trainer.init())
  seeds = np.asarray(trainer.hp['seed'])
  ckpt = Checkpointer(str(tmp_path / 'ck'), keep=2, log=lambda line: None)
  ckpt.save(12, trained, seeds=seeds, config_fingerprint='abc', extra={'pending': {'sum': [0.5]}})
  got = Checkpointer(str(tmp_path / 'ck')).restore_latest(trainer.init(), seeds=seeds,
                                                          config_fingerprint='abc')
  assert got.step == 12 and got.meta['extra'] == {'pending': {'sum': [0.5]}}
  assert got.meta['seeds'] == [7] * k
  _equal(got.state, trained)
  assert np.asarray(got.state.params['W']).shape == (k, 3, 5)


def test_typed_prng_keys_are_saved_as_key_data(tmp_path):
  keys = jax.random.split(jax.random.key(3), 4)
  state = {'w': jnp.arange(8.0).reshape(4, 2), 'key': keys}
  ckpt = Checkpointer(str(tmp_path), log=lambda line: None)
  ckpt.save(5, state, seeds=[3])
  like = {'w': jnp.zeros((4, 2)), 'key': jax.random.split(jax.random.key(0), 4)}
  got = ckpt.restore_latest(like, seeds=[3])
  assert jax.dtypes.issubdtype(got.state['key'].dtype, jax.dtypes.prng_key)
  _equal(got.state, state)
  # the restored keys draw what the saved ones draw
  np.testing.assert_array_equal(jax.random.uniform(got.state['key'][2]),
                                jax.random.uniform(keys[2]))


def test_keeps_the_last_few(tmp_path):
  state = {'w': jnp.ones((1, 3))}
  ckpt = Checkpointer(str(tmp_path), keep=2, log=lambda line: None)
  for step in (10, 20, 30, 40):
    ckpt.save(step, jax.tree.map(lambda x: x * step, state), seeds=[0])
  assert ckpt.steps() == [30, 40]
  got = ckpt.restore_latest(state, seeds=[0])
  assert got.step == 40 and float(got.state['w'][0, 0]) == 40.0


def _corrupt(directory, step):
  for root, _, files in os.walk(os.path.join(directory, str(step))):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'\x00not a checkpoint')


def test_corrupt_latest_falls_back_and_says_so(tmp_path):
  state = {'w': jnp.ones((1, 3))}
  lines = []
  ckpt = Checkpointer(str(tmp_path / 'ck'), keep=3, log=lines.append)
  for step in (1, 2, 3):
    ckpt.save(step, jax.tree.map(lambda x: x * step, state), seeds=[0])
  _corrupt(tmp_path / 'ck', 3)
  _corrupt(tmp_path / 'ck', 2)
  got = ckpt.restore_latest(state, seeds=[0])
  assert got.step == 1 and float(got.state['w'][0, 0]) == 1.0
  assert len(lines) == 2
  assert lines[0].startswith('warning: the checkpoint of step 3 is unreadable')
  assert 'falling back to step 2' in lines[0] and 'falling back to step 1' in lines[1]
  assert ckpt.steps() == [1]
  assert len(os.listdir(tmp_path / 'ck-corrupt')) == 2  # kept for inspection
  ckpt.save(2, state, seeds=[0])  # the set-aside steps do not block new saves
  assert ckpt.steps() == [1, 2]


def test_only_corrupt_checkpoints_start_afresh(tmp_path):
  lines = []
  ckpt = Checkpointer(str(tmp_path), log=lines.append)
  ckpt.save(4, {'w': jnp.ones((1, 3))}, seeds=[0])
  _corrupt(tmp_path, 4)
  assert ckpt.restore_latest({'w': jnp.ones((1, 3))}, seeds=[0]) is None
  assert 'starting from step 0' in lines[0]


@pytest.mark.parametrize('like,seeds,fingerprint,needle', [
    ({'w': jnp.ones((2, 3))}, [0], 'a', r'holds w of shape \[1, 3\] but this run needs \[2, 3\]'),
    ({'w': jnp.ones((1, 3))}, [1], 'a', r'seeds \[0\]'),
    ({'w': jnp.ones((1, 3))}, [0], 'b', 'different config'),
])
def test_a_checkpoint_of_another_run_is_refused(tmp_path, like, seeds, fingerprint, needle):
  ckpt = Checkpointer(str(tmp_path), log=lambda line: None)
  ckpt.save(4, {'w': jnp.ones((1, 3))}, seeds=[0], config_fingerprint='a')
  with pytest.raises(UserError, match=needle + '.*--overwrite'):
    ckpt.restore_latest(like, seeds=seeds, config_fingerprint=fingerprint)
  assert ckpt.steps() == [4]  # refused, not set aside


def _edit_meta(directory, step, edit):
  path = os.path.join(directory, str(step), 'meta', 'metadata')
  with open(path) as f:
    meta = json.load(f)
  edit(meta)
  with open(path, 'w') as f:
    json.dump(meta, f)


def test_meta_records_the_processes_and_devices_and_refuses_another_process_count(tmp_path):
  state = {'w': jnp.ones((1, 3))}
  ckpt = Checkpointer(str(tmp_path), log=lambda line: None)
  ckpt.save(4, state, seeds=[0])
  meta = ckpt.restore_latest(state, seeds=[0]).meta
  assert (meta['processes'], meta['devices']) == (1, len(jax.devices()))
  _edit_meta(tmp_path, 4, lambda m: m.update(processes=2))  # as two processes write it
  with pytest.raises(UserError) as e:
    Checkpointer(str(tmp_path)).restore_latest(state, seeds=[0])
  assert str(e.value) == (
      f'the checkpoint of step 4 in {tmp_path} was written by 2 process(es), this run has 1; '
      f'rerun with 2 process(es) to resume it, or pass --overwrite to start this run afresh')
  _edit_meta(tmp_path, 4, lambda m: m.pop('processes'))  # from before the count: one process
  assert Checkpointer(str(tmp_path)).restore_latest(state, seeds=[0]).step == 4


def test_full_disk_on_save_is_one_line_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
  ckpt = Checkpointer(str(tmp_path), log=lambda line: None)
  ckpt.save(1, {'w': jnp.ones((1, 3))}, seeds=[0])

  def full(*args, **kwargs):
    raise RuntimeError('save failed') from OSError(errno.ENOSPC, 'No space left on device')
  monkeypatch.setattr(ckpt._manager, 'save', full)
  with pytest.raises(UserError, match='step 2 .*No space left on device.*rerun the same command'):
    ckpt.save(2, {'w': jnp.ones((1, 3))}, seeds=[0])
  assert ckpt.steps() == [1]
  assert checkpoint.is_disk_error(ValueError('x')) is None


def test_closed_event_loop_tracebacks_are_dropped_and_others_kept():
  import io
  out = io.StringIO()
  stream = checkpoint._DropClosedLoopTracebacks(out)
  noise = ('Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
           "    raise RuntimeError('Event loop is closed')\nRuntimeError: Event loop is closed\n")
  real = 'Traceback (most recent call last):\n  File "y.py", line 2\nKeyError: \'W\'\n'
  for piece in ('before\n', noise[:30], noise[30:], real[:40], real[40:], 'after\n'):
    stream.write(piece)
  stream.release()
  assert out.getvalue() == 'before\n' + real + 'after\n'
