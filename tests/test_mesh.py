"""The ('members', 'data') mesh on the 8 simulated CPU devices: every mesh shape trains and
evaluates as one device does (full batch: equal up to summation order), and bad sizes fail."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import reference
from helpers import array_dataset, default_config
from hinge_jax import mesh, sharded, state, sweep
from hinge_jax import step as step_lib
from hinge_jax.errors import ConfigError
from hinge_jax.objective import objective
from hinge_jax.train import Trainer

K, N, D, C = 8, 1000, 12, 5  # N: not a multiple of any shard's rows (padding is masked)


def _dataset(n=N, by_class=False):
  """Gaussian class clusters; `by_class`: training rows sorted by label, so each data shard
  holds other classes (a biased draw would show)."""
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(C, D)) * 2
  y = rng.integers(0, C, size=n + 300)
  if by_class:
    y[:n] = np.sort(y[:n])
  x = (centers[y] + rng.normal(size=(n + 300, D))).astype(np.float32)
  return array_dataset(x[:n], y[:n], C, x_val=x[n:], y_val=y[n:])


def reference_svm_grad(w, x, y):
  """∂/∂W of the mean multiclass SVM loss of scores x·Wᵀ (b = 0), one example at a time."""
  g = np.zeros_like(w, np.float64)
  for xi, yi in zip(x, y):
    g += np.outer(reference.ww_svm_grad(w @ xi, yi), xi)
  return g / len(x)


def _config(data, **kw):
  return default_config(**{'strategy': 'gradient_descent', 'batch_size': 0, 'num_steps': 6,
                           'eval_every_steps': 3, 'eval_batch_size': 128,
                           'optimizer.learning_rate': 0.5, 'reg.strength': 1e-3,
                           'mesh.data': data, **kw})


def _members(config):
  out = []
  for k in range(K):  # distinct members: learning rates and seeds differ
    c = config.copy_and_resolve_references()
    c.optimizer.learning_rate = 0.1 * (k + 1)
    c.seed = k
    out.append(c)
  return out


def _train(data, devices):
  config = _config(data)
  trainer = Trainer.create(config, _dataset(), _members(config), devices=devices)
  rows = []
  state = trainer.fit(trainer.init(), on_eval=lambda step, state, row: rows.append(row))
  return trainer, state, rows


@pytest.fixture(scope='module')
def one_device():
  return _train(1, jax.devices()[:1])


@pytest.mark.parametrize('data', [1, 2, 4, 8])
def test_meshes_match_one_device(one_device, data):
  """8×1, 4×2, 2×4, 1×8 (members × data): the same accuracy, objective and weights as one
  device, to float32 rounding (the sums only change order)."""
  _, ref_state, ref_rows = one_device
  trainer, state, rows = _train(data, jax.devices())
  assert (trainer.layout.member_shards, trainer.layout.data_shards) == (8 // data, data)
  if data > 1:  # the rows really are split: each device holds 1/data of the training split
    x = trainer.data.x['train']
    assert {s.data.shape[0] for s in x.addressable_shards} == {x.shape[0] // data}
  for row, ref in zip(rows, ref_rows, strict=True):
    np.testing.assert_allclose(row['loss'], ref['loss'], rtol=2e-6)
    np.testing.assert_allclose(row['val_loss'], ref['val_loss'], rtol=2e-6)
    np.testing.assert_array_equal(row['train_accuracy'], ref['train_accuracy'])
    np.testing.assert_array_equal(row['val_accuracy'], ref['val_accuracy'])
  np.testing.assert_allclose(np.asarray(state.params['W']), np.asarray(ref_state.params['W']),
                             rtol=1e-5, atol=1e-6)


def test_data_must_divide_the_devices():
  with pytest.raises(ConfigError, match=r'mesh.data=3 does not divide the 8 devices'):
    mesh.data_shards(3, 8, 100, 0, 1 << 30)


def test_auto_data_takes_the_fewest_shards_that_fit():
  """-1: 1000 bytes on devices with 600 free (300 for data) need 4 shards of 250."""
  assert mesh.data_shards(-1, 8, 1000, 0, 600) == 4
  assert mesh.data_shards(-1, 8, 1000, 0, 1 << 20) == 1


def test_a_split_that_cannot_be_placed_states_bytes():
  with pytest.raises(ConfigError, match=r'need 500 bytes per device with mesh.data=2, but a '
                     r'device has 300 bytes'):
    mesh.data_shards(2, 8, 1000, 0, 600)
  with pytest.raises(ConfigError, match=r'need 125 bytes .* mesh.data=8, .* has 50 bytes'):
    mesh.data_shards(-1, 8, 1000, 0, 100)


def test_default_data_refuses_a_split_a_device_cannot_hold():
  """mesh.data=1 (today's layout) with a device of 50 kB: one line with the bytes, naming -1."""
  config = _config(1, **{'mesh.device_bytes': 50_000})
  with pytest.raises(ConfigError, match=r'^the data need \d+ bytes per device with '
                     r'mesh.data=1, but a device has 50000 bytes .*set mesh.data to -1'):
    Trainer.create(config, _dataset(), _members(config), devices=jax.devices())


def test_auto_data_in_a_trainer():
  """mesh.data=-1 with a device budget the split exceeds puts it on the data axis."""
  config = _config(-1, **{'mesh.device_bytes': 70_000})
  trainer = Trainer.create(config, _dataset(), _members(config), devices=jax.devices())
  assert trainer.layout.data_shards == 2  # ~62 kB of splits: half per device fits 35 kB


@pytest.mark.parametrize('kw, message', [
    ({'batch_size': 50}, r'batch_size=50 does not split over mesh.data=4 shards'),
    ({'batch_size': 40, 'sampling': 'epochs'}, r'sampling=epochs with mesh.data=4')])
def test_per_shard_minibatches_refuse_what_they_cannot_draw(kw, message):
  config = _config(4, **{'strategy': 'sgd', **kw})
  with pytest.raises(ConfigError, match=message):
    Trainer.create(config, _dataset(), _members(config), devices=jax.devices())


def test_global_batch_minibatches_match_one_device():
  """mesh.global_batch=True: the same draws as one device, so SGD's results agree to float32
  rounding on a 2×4 mesh."""
  kw = {'strategy': 'sgd', 'batch_size': 50, 'mesh.global_batch': True}
  runs = []
  for devices in (jax.devices()[:1], jax.devices()):
    config = _config(4 if len(devices) > 1 else 1, **kw)
    trainer = Trainer.create(config, _dataset(), _members(config), devices=devices)
    rows = []
    trainer.fit(trainer.init(), on_eval=lambda step, state, row: rows.append(row))
    runs.append(rows)
  assert trainer.layout.data_shards == 4
  for row, ref in zip(*runs, strict=True):
    np.testing.assert_allclose(row['loss'], ref['loss'], rtol=2e-6)
    np.testing.assert_array_equal(row['val_accuracy'], ref['val_accuracy'])


def test_per_shard_draws_are_unbiased():
  """Each of 4 data shards draws B/4 of its own rows (rows sorted by class; the last shard
  holds 32 of 800 rows over 4×256); weighted by its share of the rows, the minibatch gradient
  averaged over T steps equals the full-batch gradient (NumPy) within 5 standard errors."""
  config = _config(4, **{'strategy': 'sgd', 'batch_size': 40})
  ds = _dataset(800, by_class=True)
  trainer = Trainer.create(config, ds, _members(config)[:1], devices=jax.devices()[:4])
  spec = dataclasses.replace(trainer.spec, data_axis=mesh.DATA, data_shards=4)
  data, hp = trainer.data, jax.tree.map(lambda a: a[0], trainer.hp)
  w = np.random.default_rng(1).normal(size=(C, D)).astype(np.float32) * 0.3
  params = {'W': jnp.asarray(w), 'b': jnp.zeros(C, jnp.float32)}
  steps = 4000

  def grads(data):
    rows = data.y['train'].shape[0]
    fn = step_lib.shard_objective(functools.partial(objective, spec=spec),
                                  state.shard_rows(rows, spec=spec) / spec.num_train, spec=spec)

    def one(t):
      idx = state.batch_indices(hp['seed'], t, spec=spec, rows=rows)
      x, y = data.features(data.x['train'][idx]), data.y['train'][idx]
      return jax.grad(fn)(params, x, y, hp)['W']
    return jax.lax.map(one, jnp.arange(steps), batch_size=500)

  per_step = np.asarray(jax.jit(jax.shard_map(
      grads, mesh=trainer.layout.mesh, in_specs=(sharded.data_specs(data),), out_specs=P(),
      check_vma=False))(data), np.float64)
  x = (ds.x['train'] - ds.mean) * ds.scale
  full = reference_svm_grad(w, x, ds.y['train']) + 2 * config.reg.strength * w
  err = np.abs(per_step.mean(axis=0) - full)
  assert np.all(err <= 5 * per_step.std(axis=0) / np.sqrt(steps) + 1e-6), err.max()
  # and the draws do differ from shard to shard (a shared draw would be biased too)
  assert per_step.std(axis=0).max() > 0


def test_per_shard_minibatch_training_ignores_the_members_axis():
  """Per-shard draws depend on (seed, step, shard) only: SGD on 4×2 (members × data) gives the
  1×2 run's results, and it trains (the objective falls)."""
  config = _config(2, **{'strategy': 'sgd', 'batch_size': 40})
  runs = []
  for devices in (jax.devices()[:2], jax.devices()):
    trainer = Trainer.create(config, _dataset(), _members(config), devices=devices)
    rows = []
    trainer.fit(trainer.init(), on_eval=lambda step, state, row: rows.append(row))
    runs.append((trainer.layout.member_shards, rows))
  assert [m for m, _ in runs] == [1, 4]
  (_, ref), (_, rows) = runs
  for row, r in zip(rows, ref, strict=True):
    np.testing.assert_allclose(row['loss'], r['loss'], rtol=2e-6)
  assert np.all(rows[-1]['loss'] < trainer.evaluate(trainer.init().params, 'train')['loss'])


def test_put_rows_pads_and_splits_like_numpy():
  """Each device gets its rows of the zero-padded array, converted to the dtype asked for."""
  a = np.arange(10 * 3, dtype=np.uint8).reshape(10, 3)
  layout = mesh.make_layout(jax.devices()[:4], 1, 4)
  out = state.put_rows(a, 16, layout.rows, np.float32)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(np.asarray(out), np.pad(a, ((0, 6), (0, 0))).astype(np.float32))
  assert sorted(s.index[0].start or 0 for s in out.addressable_shards) == [0, 4, 8, 12]


@pytest.mark.parametrize('shards', [1, 2, 4, 8])
def test_sweep_estimate_counts_a_device_share_of_the_data(shards):
  """With S data shards a device holds 1/S of the splits: the members that fit per device are
  (budget − data/S) // member bytes, on 8/S member devices (checked against that arithmetic),
  and with the data most of the budget, more data shards admit more members."""
  ds = _dataset()
  config = default_config(**{'mesh.data': shards})
  spec = sweep.Spec.create(config, ds, {'seed': np.zeros(1, np.uint32), 'max_norm': np.zeros(1)})
  one = sweep.member_bytes(spec, 256)
  data_bytes, budget = 78 * one, 80 * one  # the data: 78 members' worth; 2 left over at S=1
  config.sweep.memory_budget_bytes = budget
  got = sweep.members_per_program(config, spec, 256, data_bytes, 10_000, 8, shards)
  per_device = (budget - -(-data_bytes // shards)) // one
  assert got == per_device * (8 // shards)
  if shards > 1:
    assert got > sweep.members_per_program(config, spec, 256, data_bytes, 10_000, 8, 1)
