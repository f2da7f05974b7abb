"""The training loop: the lecture's sanity checks, schedules, sampling, members, divergence."""

import dataclasses
import functools
import math

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from hinge_jax import config_lib, datasets, losses, optim
from hinge_jax.train import (ACCELERATOR_FEATURE_MULTIPLE, Spec, Trainer, Tuning,
                             batch_indices, objective)
from helpers import array_dataset, default_config


@pytest.mark.parametrize('loss', ['multiclass_svm', 'softmax_cross_entropy', 'one_vs_all'])
def test_initial_loss_matches_the_lecture(digits, loss):
  config = default_config(**{'loss.name': loss, 'reg.strength': 0.0})
  trainer = Trainer.create(config, digits, [config])
  state = trainer.init()
  got = float(trainer.evaluate(state.params, 'train')['data_loss'][0])
  want = losses.expected_initial_loss(loss, 10)
  assert got == pytest.approx(want, rel=0.01)  # (C − 1)·Δ = 9, ln 10 = 2.303, C·Δ = 10


def test_raising_lambda_raises_the_loss(digits):
  configs = [default_config(**{'reg.strength': lam}) for lam in (0.0, 1e-2, 1.0)]
  trainer = Trainer.create(configs[0], digits, configs)
  state = trainer.init()
  loss = trainer.evaluate(state.params, 'train')['loss']
  assert loss[0] < loss[1] < loss[2]


@pytest.mark.parametrize('loss', ['multiclass_svm', 'softmax_cross_entropy'])
def test_twenty_examples_without_regularization_are_fit_exactly(digits, loss):
  tiny = array_dataset(digits.x['train'][:20], digits.y['train'][:20], 10, scale=1 / 16)
  config = default_config(**{'loss.name': loss, 'reg.strength': 0.0, 'batch_size': 20,
                             'num_steps': 300, 'eval_every_steps': 300,
                             'optimizer.learning_rate': 0.1})
  trainer = Trainer.create(config, tiny, [config])
  state = trainer.fit(trainer.init())
  ev = trainer.evaluate(state.params, 'train')
  assert ev['accuracy'][0] == 1.0
  if loss == 'multiclass_svm':
    assert ev['data_loss'][0] == 0.0


def test_training_decreases_the_loss_and_beats_chance(digits):
  config = default_config(**{'num_steps': 200, 'eval_every_steps': 100})
  trainer = Trainer.create(config, digits, [config])
  state = trainer.init()
  before = trainer.evaluate(state.params, 'val')
  rows = []
  state = trainer.fit(state, on_eval=lambda step, st, row: rows.append(row))
  after = trainer.evaluate(state.params, 'val')
  assert [r['step'] for r in rows] == [100, 200]
  assert after['loss'][0] < before['loss'][0] / 5
  assert after['accuracy'][0] > 0.9


@pytest.mark.parametrize('name', ['constant', 'step', 'exponential', 'cosine'])
def test_schedules(name):
  hp = {'learning_rate': jnp.float32(0.1), 'decay_rate': jnp.float32(0.5)}
  lr = [float(optim.learning_rate(name, t, hp, num_steps=100, decay_steps=10))
        for t in (0, 10, 25, 100)]
  want = {'constant': [0.1] * 4, 'step': [0.1, 0.05, 0.025, 0.1 * 0.5**10],
          'exponential': [0.1, 0.05, 0.1 * 0.5**2.5, 0.1 * 0.5**10],
          'cosine': [0.1, 0.1 * 0.5 * (1 + math.cos(math.pi * 0.1)),
                     0.1 * 0.5 * (1 + math.cos(math.pi * 0.25)), 0.0]}[name]
  np.testing.assert_allclose(lr, want, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize('name', ['sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam',
                                  'adamw'])
def test_every_optimizer_trains(digits, name):
  lr = {'adagrad': 0.05, 'rmsprop': 0.003, 'adam': 0.003, 'adamw': 0.003}.get(name, 0.05)
  config = default_config(**{'optimizer.name': name, 'optimizer.learning_rate': lr,
                             'num_steps': 150, 'eval_every_steps': 150})
  trainer = Trainer.create(config, digits, [config])
  state = trainer.fit(trainer.init())
  assert trainer.evaluate(state.params, 'val')['accuracy'][0] > 0.85


def test_optimizer_update_matches_plain_optax(digits):
  """The injected-hyperparameter optimizer takes the same step as optax's own adam."""
  import optax
  config = default_config(**{'optimizer.name': 'adam', 'optimizer.learning_rate': 0.01})
  hp = {k: jnp.float32(v) for k, v in dict(learning_rate=0.01, momentum=0.9, b1=0.9, b2=0.999,
                                            eps=1e-8, weight_decay=0.0).items()}
  params = {'W': jnp.ones((3, 2))}
  grads = {'W': jnp.arange(6.0).reshape(3, 2)}
  ours = optim.make('adam').update(grads, optim.init('adam', hp, params), params)[0]
  with jax.numpy_dtype_promotion('standard'):  # optax's bias correction mixes int32 and float
    ref = optax.adam(0.01).update(grads, optax.adam(0.01).init(params), params)[0]
  # float32 hyperparameter arrays against optax's Python floats: equal to float32 rounding
  np.testing.assert_allclose(np.asarray(ours['W']), np.asarray(ref['W']), rtol=2e-5)
  del config


def test_sampling_with_replacement_and_epochs(digits):
  for sampling in ('with_replacement', 'epochs'):
    config = default_config(sampling=sampling)
    spec = Spec.create(config, digits, {'seed': np.zeros(1, np.uint32),
                                        'max_norm': np.zeros(1)})
    f = jax.jit(lambda s, t: batch_indices(s, t, spec=spec))
    a, b = np.asarray(f(jnp.uint32(0), 0)), np.asarray(f(jnp.uint32(0), 1))
    assert a.shape == (200,) and a.min() >= 0 and a.max() < spec.num_train
    np.testing.assert_array_equal(a, np.asarray(f(jnp.uint32(0), 0)))  # seed + step decide
    assert not np.array_equal(a, np.asarray(f(jnp.uint32(1), 0)))  # another seed, another batch
    if sampling == 'epochs':  # one epoch: distinct examples
      per_epoch = spec.num_train // spec.batch_size
      epoch = np.concatenate([np.asarray(f(jnp.uint32(0), t)) for t in range(per_epoch)])
      assert len(np.unique(epoch)) == len(epoch)


def test_a_member_of_many_equals_its_single_run(digits):
  lrs, regs, seeds = (0.05, 0.01, 0.2), (1e-3, 0.0, 1e-2), (0, 0, 0)
  configs = [default_config(**{'optimizer.learning_rate': lr, 'reg.strength': r, 'seed': s,
                               'num_steps': 60, 'eval_every_steps': 30})
             for lr, r, s in zip(lrs, regs, seeds)]
  many = Trainer.create(configs[0], digits, configs)
  state = many.fit(many.init())
  first = Trainer.create(configs[0], digits, configs[:1])
  for k, config in enumerate(configs):  # the same program, each member's hyperparameters
    one = first.with_hyper(config_lib.hyper_arrays([config]))
    single, _ = one.run_chunk(one.init(), 0, 60)  # one chunk: the same steps as fit's two
    np.testing.assert_allclose(np.asarray(state.params['W'][k]),
                               np.asarray(single.params['W'][0]), rtol=1e-6, atol=1e-7)


def test_the_divergence_guard_flags_exactly_the_members_with_a_non_finite_value():
  """isfinite(Σ 0·x) per member against NumPy's all(isfinite): huge finite values pass."""
  from hinge_jax.step import all_finite
  rng = np.random.default_rng(0)
  w = rng.normal(size=(6, 3, 5)).astype(np.float32)
  w[1, 2, 4] = np.inf
  w[2, 0, 0] = -np.inf
  w[3, 1, 1] = np.nan
  w[4] = np.finfo(np.float32).max  # Σ w would overflow; Σ 0·w does not
  b = np.zeros((6, 3), np.float32)
  b[5, 2] = np.nan  # a non-finite value in another leaf
  tree = {'W': jnp.asarray(w), 'b': jnp.asarray(b), 'count': jnp.zeros(6, jnp.int32)}
  want = np.isfinite(w).all(axis=(1, 2)) & np.isfinite(b).all(axis=1)
  np.testing.assert_array_equal(np.asarray(jax.jit(all_finite)(tree)), want)
  np.testing.assert_array_equal(want, [True, False, False, False, True, False])


def test_objective_is_mean_loss_plus_lambda_times_penalty():
  spec = Spec(strategy='sgd', loss='multiclass_svm', squared=False, reg='l2', regularize_bias=True,
              bias_trick=True, optimizer='sgd', schedule='constant', num_steps=1, decay_steps=1,
              batch_size=3, sampling='with_replacement', num_train=3, num_features=3,
              num_classes=3, full_batch=True, shared_data=True, max_norm=False)
  params = {'W': jnp.eye(3)}
  x = jnp.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
  hp = {'margin': jnp.float32(1.0), 'reg_strength': jnp.float32(0.5), 'l1_ratio': jnp.float32(0)}
  got = float(objective(params, x, jnp.array([0, 1, 2]), hp, spec=spec))
  assert got == pytest.approx((2.9 + 0 + 12.9) / 3 + 0.5 * 3, rel=1e-5)


@pytest.mark.parametrize('blocks', [1, 2, 3, 7])
def test_scores_over_feature_blocks_equal_one_product(x64, blocks):
  """model.scores' split product (and its jax.grad) against NumPy's x Wᵀ + b."""
  from hinge_jax import model
  rng = np.random.default_rng(blocks)
  x, w, b = rng.normal(size=(5, 7)), rng.normal(size=(3, 7)), rng.normal(size=3)
  g = rng.normal(size=(5, 3))  # a cotangent: d/dW Σ g·s = gᵀx, d/db = Σ_rows g
  params = {'W': jnp.asarray(w), 'b': jnp.asarray(b)}
  s = model.scores(params, jnp.asarray(x), feature_blocks=blocks)
  np.testing.assert_allclose(np.asarray(s), x @ w.T + b, rtol=1e-13, atol=1e-13)
  grad = jax.grad(lambda p: jnp.sum(g * model.scores(p, jnp.asarray(x), feature_blocks=blocks)))(
      params)
  np.testing.assert_allclose(np.asarray(grad['W']), g.T @ x, rtol=1e-13, atol=1e-13)
  np.testing.assert_allclose(np.asarray(grad['b']), g.sum(0), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize('blocks', [0, 8])
def test_scores_refuse_a_feature_split_they_cannot_make(blocks):
  from hinge_jax import model
  with pytest.raises(ValueError, match=f'feature_blocks={blocks} must be between 1 and D=7'):
    model.scores({'W': jnp.zeros((3, 7))}, jnp.zeros((2, 7)), feature_blocks=blocks)


def _large_spec(**changes):
  base = Spec(strategy='sgd', loss='multiclass_svm', squared=False, reg='l2',
              regularize_bias=True, bias_trick=True, optimizer='sgd', schedule='constant',
              num_steps=1, decay_steps=1, batch_size=200, sampling='with_replacement',
              num_train=49000, num_features=3073, num_classes=10, full_batch=False,
              shared_data=True, max_norm=False)
  return dataclasses.replace(base, **changes)


_ON_CPU = pytest.mark.skipif(jax.default_backend() != 'cpu', reason='the split is CPU-only')


@_ON_CPU
def test_the_forward_product_is_split_only_for_a_single_large_cpu_sgd_step():
  from hinge_jax.train import forward_feature_blocks
  assert forward_feature_blocks(_large_spec(), 1) == 2  # CIFAR-10's shapes, one run
  for spec, members in [(_large_spec(), 2), (_large_spec(), 64),
                        (_large_spec(batch_size=50), 1), (_large_spec(num_features=1025), 1),
                        (_large_spec(strategy='random_search'), 1),
                        (_large_spec(full_batch=True, batch_size=49000), 1)]:
    assert forward_feature_blocks(spec, members) == 1, (spec, members)


@_ON_CPU
def test_a_split_forward_trains_like_the_single_product(monkeypatch):
  """A run whose step splits its forward product (D >= 2048, batch >= 100, one member) takes
  the same steps as the same run with one product, to float32 rounding."""
  from hinge_jax import step, train
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, size=(400, 2100), dtype=np.uint8)
  y = rng.integers(0, 10, size=400)
  data = array_dataset(x, y, 10, bias_trick=True, scale=1 / 255)
  config = default_config(**{'batch_size': 100, 'num_steps': 30, 'eval_every_steps': 30,
                             'optimizer.learning_rate': 0.05})
  split = Trainer.create(config, data, [config])
  assert train.forward_feature_blocks(split.spec, 1) == 2
  w_split = np.asarray(split.run_chunk(split.init(), 0, 30)[0].params['W'][0])
  monkeypatch.setattr(step, 'forward_feature_blocks', lambda spec, k: 1)
  one = split.with_tuning(Tuning(scan_unroll=1))  # a program traced anew (another key)
  w_one = np.asarray(one.run_chunk(one.init(), 0, 30)[0].params['W'][0])
  assert np.abs(w_one - w_split).max() < 1e-5 * np.abs(w_one).max()
  assert not np.array_equal(w_one, np.asarray(one.init().params['W'][0]))  # it trained


def test_full_batch_gradient_descent_decreases_the_loss_every_step(digits):
  config = default_config(**{'batch_size': 0, 'optimizer.name': 'sgd', 'num_steps': 20,
                             'eval_every_steps': 1, 'optimizer.learning_rate': 0.05})
  trainer = Trainer.create(config, digits, [config])
  losses_seen = []
  trainer.fit(trainer.init(), on_eval=lambda step, st, row: losses_seen.append(row['loss'][0]))
  assert len(losses_seen) == 20
  assert all(b < a for a, b in zip(losses_seen, losses_seen[1:]))


def test_chunking_and_resuming_mid_period_do_not_change_the_run(digits):
  """Chunks cut at checkpoint steps, and a restart from one, give the uninterrupted run."""
  config = default_config(**{'num_steps': 30, 'eval_every_steps': 10})
  trainer = Trainer.create(config, digits, [config])
  whole_rows, cut_rows, saved = [], [], {}
  whole = trainer.fit(trainer.init(), on_eval=lambda s, st, row: whole_rows.append(row))

  def on_chunk(step, state, pending):
    if step == 12:  # inside the second evaluation period
      saved.update(state=jax.tree.map(np.array, state), pending=pending)
      return False
  trainer.fit(trainer.init(), on_eval=lambda s, st, row: cut_rows.append(row),
              chunk_every=4, on_chunk=on_chunk)
  state = jax.tree.map(jnp.asarray, saved['state'])
  resumed = trainer.fit(state, start_step=12, pending=saved['pending'], chunk_every=4,
                        on_eval=lambda s, st, row: cut_rows.append(row))
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert [r['step'] for r in cut_rows] == [10, 20, 30]
  for a, b in zip(whole_rows, cut_rows):
    for key in ('loss', 'train_accuracy', 'val_accuracy', 'val_loss'):
      np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_allclose(a['batch_loss'], b['batch_loss'], rtol=1e-12)
  assert saved['pending']['count'] == [2]  # steps 10 and 11 of the second period


# Each loss once and each bias_trick setting at least once (a covering set of the 3 × 2 grid:
# the loss decides dS, bias_trick whether b is a parameter; nothing couples the two). The bf16
# test below takes the other three pairs, so every pair runs through the blocked pass once.
BLOCKED_CASES = [('multiclass_svm', False), ('softmax_cross_entropy', True),
                 ('crammer_singer', False)]
BF16_CASES = [('multiclass_svm', True), ('softmax_cross_entropy', False),
              ('crammer_singer', True)]


@pytest.mark.parametrize('loss,bias_trick', BLOCKED_CASES)
def test_blocked_full_batch_objective_equals_jax_grad_of_the_objective(digits, loss, bias_trick,
                                                                      x64):
  """fullbatch.py's one-pass value and gradient equal jax.value_and_grad of `objective`."""
  from hinge_jax import fullbatch
  from hinge_jax.datasets.base import finalize
  ds = finalize('d', {k: v.copy() for k, v in digits.x.items()},
                {k: v.copy() for k, v in digits.y.items()}, num_classes=10, center=True,
                scale=1 / 16, bias_trick=bias_trick)
  config = default_config(**{'loss.name': loss, 'batch_size': 0, 'reg.strength': 0.3,
                             'reg.regularize_bias': True})
  trainer = Trainer.create(config, ds, [config], devices=jax.local_devices()[:1])
  spec, data = trainer.spec, trainer.data
  rng = np.random.default_rng(0)
  shape = (10, ds.num_features)
  params = {'W': jnp.asarray(rng.normal(size=shape) * 0.1)}
  if not bias_trick:
    params['b'] = jnp.asarray(rng.normal(size=10) * 0.1)
  hp = {k: jnp.asarray(v[0], jnp.float64) for k, v in trainer.hp.items() if k != 'seed'}
  n = spec.num_train
  x_full = data.features(data.x['train'][:n]).astype(jnp.float64)
  # jitted: one program each, not an eager program per operation
  want_value, want_grad = jax.jit(jax.value_and_grad(functools.partial(objective, spec=spec)))(
      params, x_full, data.y['train'][:n], hp)
  xb, yb = fullbatch.blocks(data, n)
  got_value, got_grad = jax.jit(jax.value_and_grad(fullbatch.make_objective(spec=spec)))(
      params, xb, yb, hp)
  np.testing.assert_allclose(float(got_value), float(want_value), rtol=1e-6)
  for key in params:
    np.testing.assert_allclose(np.asarray(got_grad[key]), np.asarray(want_grad[key]), rtol=1e-5,
                               atol=1e-7)
  # a plain call (random search, finite differences) gives the same value
  np.testing.assert_allclose(float(fullbatch.make_objective(spec=spec)(params, xb, yb, hp)),
                             float(want_value), rtol=1e-6)


def _fit_state(trainer):
  return jax.tree.map(np.asarray, trainer.fit(trainer.init()))


def _diverging_configs():
  """Two members (sgd, softmax): lr 0.05 trains, lr 1e38 diverges."""
  return [default_config(**{'optimizer.learning_rate': lr, 'optimizer.name': 'sgd',
                            'loss.name': 'softmax_cross_entropy', 'reg.strength': 1e-3,
                            'num_steps': 20, 'eval_every_steps': 10})
          for lr in (0.05, 1e38)]


@pytest.fixture(scope='module')
def default_run(digits):
  """A two-member run (lr 1e38 diverges) under the default tuning, and its final state."""
  configs = _diverging_configs()
  default = Trainer.create(configs[0], digits, configs)
  return default, _fit_state(default)


def test_divergence_freezes_only_that_member(digits, default_run):
  _, state = default_run
  assert state.diverged.tolist() == [False, True]
  assert state.diverged_step[0] == -1 and 0 <= state.diverged_step[1] < 20
  assert np.all(np.isfinite(state.params['W'][1]))  # frozen at its last finite value
  config = _diverging_configs()[0]
  one = Trainer.create(config, digits, [config])
  single, _ = one.run_chunk(one.init(), 0, 20)
  np.testing.assert_allclose(state.params['W'][0], np.asarray(single.params['W'][0]),
                             rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('tuning', [dict(scan_unroll=3), dict(scan_unroll=64),
                                    dict(guard='select'), dict(guard='deferred'),
                                    dict(compiler_options={'xla_cpu_enable_fast_math': False})])
def test_tuning_changes_the_program_not_the_numbers(default_run, tuning):
  """Unrolling, the guard's form and per-program XLA options give the default run's state,
  including a member frozen by the guard (lr 1e38 diverges) and its divergence step."""
  default, want = default_run
  tuned = default.with_tuning(Tuning(**tuning))
  got = _fit_state(tuned)
  assert got.diverged.tolist() == want.diverged.tolist() == [False, True]
  assert got.diverged_step.tolist() == want.diverged_step.tolist()
  np.testing.assert_array_equal(got.params['W'], want.params['W'])  # bitwise (measured on CPU)
  assert np.all(np.isfinite(got.params['W']))
  text = tuned.compiled_chunk(tuned.init(), 10).as_text()
  assert ('conditional' in text) == (tuned.tuning.guard_mode(tuned.spec) == 'cond')
  # deferred (also the default for minibatches): the first chunk (where lr 1e38 diverges) ran
  # twice, the second (the member frozen before it) once
  assert tuned.reruns == (1 if tuned.tuning.guard_mode(tuned.spec) == 'deferred' else 0)
  assert default.tuning.guard_mode(default.spec) == 'deferred' and default.reruns == 1


@pytest.mark.parametrize('optimizer,max_norm', [('sgd', 0.0), ('adam', 0.0), ('momentum', 1.0)])
def test_a_deferred_guard_reruns_exactly_the_chunks_where_a_member_diverges(digits, optimizer,
                                                                            max_norm):
  """Each member diverging at a different step, in different chunks (and one that never
  does): the deferred guard's state and losses equal the per-step guard's, chunk by chunk
  (divergence steps exactly), and only chunks where some member diverged were rerun."""
  # sgd: members diverging at steps 20, 11, 7 and 1 (chunks 2, 1, 0, 0); the projection
  # turns a momentum member's inf into NaN (inf·0)
  lrs = (0.01, 4e3, 2e4, 3e5, 1e38) if optimizer == 'sgd' else (0.01, 1e38)
  configs = [default_config(**{'optimizer.name': optimizer, 'optimizer.learning_rate': lr,
                               'reg.max_norm': max_norm, 'loss.name': 'softmax_cross_entropy',
                               'num_steps': 60, 'eval_every_steps': 10}) for lr in lrs]
  select = Trainer.create(configs[0], digits, configs, tuning=Tuning(guard='select'))
  deferred = select.with_tuning(Tuning(guard='deferred'))
  a, b = select.init(), deferred.init()
  diverging_chunks = 0
  for start in range(0, 60, 10):
    before = np.asarray(a.diverged)
    a, losses_a = select.run_chunk(a, start, 10)
    b, losses_b = deferred.run_chunk(b, start, 10)
    diverging_chunks += bool(np.any(np.asarray(a.diverged) & ~before))
    # the same math; XLA may round a fused update differently (adam here: ~1 ulp)
    np.testing.assert_allclose(np.asarray(losses_b), np.asarray(losses_a), rtol=1e-5)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7),
                 jax.tree.map(np.asarray, b), jax.tree.map(np.asarray, a))
    assert np.asarray(b.diverged_step).tolist() == np.asarray(a.diverged_step).tolist()
  assert np.asarray(a.diverged).tolist() == [False] + [True] * (len(lrs) - 1)
  assert deferred.reruns == diverging_chunks == (3 if optimizer == 'sgd' else 1)


def test_bad_tuning_is_refused_in_one_line(digits):
  for kwargs, words in ((dict(scan_unroll=0), 'scan_unroll=0'), (dict(guard='maybe'), 'guard'),
                        (dict(scan_unroll=2.5), 'positive integer'),
                        (dict(compiler_options='xla_foo=1'), 'dict or'),
                        (dict(fullbatch_bf16='yes'), 'True, False or None')):
    with pytest.raises(ValueError, match=words):
      Tuning(**kwargs)
  config = default_config(**{'num_steps': 5, 'eval_every_steps': 5})
  with pytest.raises(ValueError, match='with_tuning keeps the stored data'):
    Trainer.create(config, digits, [config]).with_tuning(Tuning(fullbatch_bf16=True))
  for options, words in (({'xla_no_such_option': 1}, 'xla_no_such_option'),
                         ({'xla_gpu_enable_command_buffer': 'NOPE'}, 'NOPE')):
    trainer = Trainer.create(config, digits, [config], tuning=Tuning(compiler_options=options))
    with pytest.raises(ValueError, match=words) as err:
      trainer.fit(trainer.init())
    assert '\n' not in str(err.value) and 'fix the option' in str(err.value)


def _pixels(n=700, d=300, seed=0, **kw):
  """uint8 pixels with class structure, train and val splits."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 10, n)
  centres = rng.integers(40, 216, (10, d))
  x = np.clip(centres[y] + rng.integers(-40, 41, (n, d)), 0, 255).astype(np.uint8)
  return array_dataset(x[:600], y[:600], 10, x_val=x[600:], y_val=y[600:], scale=1 / 255, **kw)


@pytest.mark.parametrize('loss,bias_trick', BF16_CASES)
def test_bf16_full_batch_products_match_the_float32_pass(loss, bias_trick):
  """fullbatch.py's bfloat16 path (raw pixels stored exactly, W and dS in hi + lo halves,
  centring applied to the products) gives the float32 pass's objective and gradient."""
  from hinge_jax import fullbatch
  data = _pixels(bias_trick=bias_trick)
  config = default_config(**{'loss.name': loss, 'batch_size': 0, 'reg.strength': 0.1})
  f32 = Trainer.create(config, data, [config], devices=jax.local_devices()[:1])
  bf16 = Trainer.create(config, data, [config], devices=jax.local_devices()[:1],
                        tuning=Tuning(fullbatch_bf16=True))
  assert bf16.data.x['train'].dtype == jnp.bfloat16 and f32.data.x['train'].dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(bf16.data.x['train'], np.float32),
                                np.asarray(f32.data.x['train'], np.float32))  # stored exactly
  rng = np.random.default_rng(1)
  params = {'W': jnp.asarray(rng.normal(size=(10, data.num_features)) * 0.05, jnp.float32)}
  if not bias_trick:
    params['b'] = jnp.asarray(rng.normal(size=10), jnp.float32)
  hp = jax.tree.map(lambda a: a[0], f32.hp)
  results = []
  for trainer in (f32, bf16):
    x, y = fullbatch.blocks(trainer.data, trainer.spec.num_train)
    objective = fullbatch.make_objective(spec=trainer.spec)
    results.append(jax.value_and_grad(objective)(params, x, y, hp))
  (v32, g32), (v16, g16) = results
  assert float(v16) == pytest.approx(float(v32), rel=1e-6)  # measured ≤ 8e-8 (hi alone: 6e-5)
  for key in g32:
    scale = float(jnp.abs(g32[key]).max())
    assert float(jnp.abs(g16[key] - g32[key]).max()) < 2e-5 * scale, key  # ≤ 2.3e-6 measured


def _converted_back(jaxpr) -> list:
  """The float32 values of `jaxpr` (recursively) that are a float32 → bfloat16 → float32
  round trip: the pairs XLA's GPU compiler removes when excess precision is allowed."""
  found, to_bf16 = [], set()
  for eqn in jaxpr.eqns:
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _converted_back(sub)
    if eqn.primitive.name != 'convert_element_type':
      continue
    src, dtype = eqn.invars[0], eqn.params['new_dtype']
    if not hasattr(src, 'aval'):
      continue
    if dtype == jnp.bfloat16 and src.aval.dtype == jnp.float32:
      to_bf16.add(eqn.outvars[0])
    elif dtype == jnp.float32 and src in to_bf16:
      found.append(eqn)
  return found


def test_bf16_split_has_no_conversion_round_trip_for_xla_to_remove():
  """XLA's GPU compiler drops float32 → bfloat16 → float32 conversion pairs (excess precision
  is allowed by default); a split computing lo = a − that round trip then gets lo = a − a = 0,
  which the program compiled for an H200 did (the products' errors grew to 4e-3, against 7e-6
  on the CPU). The split rounds hi with `reduce_precision` instead, and still splits exactly."""
  from hinge_jax import fullbatch
  a = jnp.asarray(np.random.default_rng(0).normal(size=(64, 48)), jnp.float32)
  assert not _converted_back(jax.make_jaxpr(fullbatch.split_bf16)(a).jaxpr)
  whole = jax.make_jaxpr(lambda w, x: fullbatch.times_split(x, fullbatch.split_bf16(w),
                                                           rhs=True))(a.T, a.astype(jnp.bfloat16))
  assert not _converted_back(whole.jaxpr)
  hi, lo = (np.asarray(h, np.float64) for h in jax.jit(fullbatch.split_bf16)(a))
  np.testing.assert_array_equal(hi, np.asarray(a.astype(jnp.bfloat16), np.float64))  # rounded
  assert np.abs(lo).max() > 0
  assert np.all(np.abs(hi + lo - np.asarray(a, np.float64)) <= 2.0**-16 * np.abs(a))


def test_bf16_full_batch_keeps_the_lo_half_in_the_program_compiled_for_an_h200():
  """The same, on XLA's own output: the full-batch program compiled for an H200 (no card
  needed, but JAX's CUDA plugin; skipped without it) subtracts no value from itself."""
  import re
  from benchmarks import gpu_program
  try:
    text = gpu_program.compile_for_card('h200', _pixels(bias_trick=True), batch=0, steps=1).text
  except RuntimeError as e:
    pytest.skip(str(e))
  assert not re.search(r'subtract\((%[\w.\-]+), \1\)', text)
  assert 'reduce-precision' in text


def test_bf16_full_batch_training_matches_the_float32_run_and_evaluates_every_split():
  data = _pixels(bias_trick=True)
  config = default_config(**{'batch_size': 0, 'num_steps': 15, 'eval_every_steps': 5,
                             'optimizer.learning_rate': 0.5, 'reg.strength': 1e-3})
  runs = {}
  for name, tuning in (('f32', None), ('bf16', Tuning(fullbatch_bf16=True))):
    trainer = Trainer.create(config, data, [config], tuning=tuning)
    rows = []
    state = trainer.fit(trainer.init(), on_eval=lambda s, st, row: rows.append(row))
    runs[name] = (np.asarray(state.params['W'][0]), rows)
  (w32, rows32), (w16, rows16) = runs['f32'], runs['bf16']
  assert np.abs(w16 - w32).max() < 1e-3 * np.abs(w32).max()
  for a, b in zip(rows32, rows16):  # train and val evaluated (bfloat16 and uint8 storage)
    np.testing.assert_allclose(b['loss'], a['loss'], rtol=1e-4)
    assert abs(float(b['val_accuracy'][0]) - float(a['val_accuracy'][0])) <= 0.01
  assert rows16[-1]['train_accuracy'][0] > 0.5


def test_bf16_full_batch_refuses_data_that_bf16_would_round():
  config = default_config(**{'batch_size': 0})
  floats = array_dataset(np.random.default_rng(0).normal(size=(50, 8)), np.arange(50) % 10, 10)
  assert floats.x['train'].dtype == np.float32
  with pytest.raises(ValueError, match='needs uint8 pixels'):
    Trainer.create(config, floats, [config], tuning=Tuning(fullbatch_bf16=True))
  for data, dtype in ((floats, np.float32), (_pixels(), np.uint8)):
    default = Trainer.create(config, data, [config])  # None: bfloat16 only on accelerators
    assert default.data.x['train'].dtype == (dtype if jax.default_backend() == 'cpu'
                                             else (jnp.bfloat16 if dtype == np.uint8 else dtype))


@pytest.mark.parametrize('optimizer,reg,bias_trick,max_norm', [
    ('sgd', 'l2', True, 0.0), ('momentum', 'l1', True, 0.0), ('nesterov', 'elastic_net', False, 0.0),
    ('adagrad', 'l1', False, 0.0), ('rmsprop', 'l2', True, 0.5), ('adam', 'l1', True, 0.5),
    ('adamw', 'elastic_net', True, 0.0)])
def test_padded_features_train_the_same_model(digits, optimizer, reg, bias_trick, max_norm):
  """`Tuning.feature_multiple` pads the features with zeros (and W to match) inside each
  chunk: every optimizer it applies to and every regularizer (L1's subgradient at the padded
  zeros included) give the unpadded run's weights, optimizer state, losses and divergence.
  Three chunks of 10 steps, under the per-step guard (sgd: the default deferred one)."""
  data = digits if bias_trick == digits.bias_trick else datasets.load(
      default_config(**{'dataset.bias_trick': bias_trick}).dataset)
  configs = [default_config(**{'optimizer.name': optimizer, 'optimizer.learning_rate': lr,
                               'reg.name': reg, 'reg.strength': 1e-2, 'reg.max_norm': max_norm,
                               'dataset.bias_trick': bias_trick, 'optimizer.weight_decay': 1e-2,
                               'num_steps': 30, 'eval_every_steps': 10})
             for lr in (0.01, 1e38)]
  guard = None if optimizer == 'sgd' else 'select'
  plain = Trainer.create(configs[0], data, configs,
                         tuning=Tuning(feature_multiple=1, guard=guard))
  padded = plain.with_tuning(Tuning(feature_multiple=48, guard=guard))
  d = data.num_features
  assert plain.tuning.feature_pad(plain.spec) == 0
  assert padded.tuning.feature_pad(padded.spec) == -d % 48 > 0

  def chunks(trainer):
    state, all_losses = trainer.init(), []
    for start in (0, 10, 20):
      state, chunk_losses = trainer.run_chunk(state, start, 10)
      all_losses.append(np.asarray(chunk_losses))
    return jax.tree.map(np.asarray, state), np.concatenate(all_losses)
  (want, want_losses), (got, got_losses) = chunks(plain), chunks(padded)
  assert jax.tree.map(np.shape, got) == jax.tree.map(np.shape, want)  # cut back on exit
  assert got.diverged.tolist() == want.diverged.tolist() == [False, True]
  assert got.diverged_step.tolist() == want.diverged_step.tolist()
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-5, atol=1e-7), got, want)
  np.testing.assert_allclose(got_losses[:, 0], want_losses[:, 0], rtol=1e-5)
  text = padded.compiled_chunk(padded.init(), 10).as_text()
  assert f'f32[2,10,{d + (-d % 48)}]' in text  # the members' W trains padded


def test_features_are_padded_only_where_the_same_model_is_guaranteed(digits):
  def pad(tuning=Tuning(feature_multiple=48), **fields):
    config = default_config(**fields)
    return tuning.feature_pad(Trainer.create(config, digits, [config]).spec)
  assert pad() == -digits.num_features % 48 == 32
  assert pad(Tuning()) == (0 if jax.default_backend() == 'cpu'
                           else -digits.num_features % ACCELERATOR_FEATURE_MULTIPLE)
  assert pad(batch_size=0) == 0  # full batch: fullbatch.py's own blocked pass
  assert pad(strategy='random_search', batch_size=0) == 0
  config = default_config()
  own = Trainer.create(config, digits, [config, config_lib.with_fields(config, {'seed': 1})])
  assert not own.spec.shared_data and Tuning(feature_multiple=48).feature_pad(own.spec) == 0
  optim.OPTIMIZERS.add('sgd_again', optim.OPTIMIZERS.get('sgd'))
  try:
    assert pad(**{'optimizer.name': 'sgd_again'}) == 0  # a registered optimizer: not vetted
  finally:
    del optim.OPTIMIZERS._items['sgd_again']
  with pytest.raises(ValueError, match='feature_multiple=0'):
    Tuning(feature_multiple=0)
