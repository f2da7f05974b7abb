"""scaled.py: plain minibatch SGD with L2 as W = c·V (`Tuning(scaled_decay=True)`), against
the XLA step (step.py): the same models, losses, optimizer state and divergence steps."""

import functools

import jax
import numpy as np
import pytest

from hinge_jax import config_lib, scaled, sweep
from hinge_jax.state import init_state
from hinge_jax.train import Trainer, Tuning

from helpers import array_dataset, default_config


def _raw(n=400, d=300, classes=7, dtype=np.uint8, seed=0):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  x = np.clip(rng.integers(40, 216, (classes, d))[y] + rng.integers(-40, 41, (n, d)), 0, 255)
  return x.astype(dtype), y


def _data(dtype=np.uint8):
  """300 pixels + the bias trick: 301 features, 7 classes."""
  return array_dataset(*_raw(dtype=dtype), 7, scale=1 / 255, bias_trick=True)


def _configs(lrs=(0.05, 0.5), **fields):
  base = {'optimizer.name': 'sgd', 'batch_size': 50, 'num_steps': 40, 'eval_every_steps': 20,
          'reg.strength': 0.1, 'reg.regularize_bias': True, 'dataset.bias_trick': True,
          **fields}
  return [default_config(**{**base, 'optimizer.learning_rate': lr}) for lr in lrs]


def _trainers(data, configs, **tuning):
  """XLA's step and W = c·V on the same data and members (sharing init and evaluation)."""
  xla = Trainer.create(configs[0], data, configs, tuning=Tuning(guard='deferred'))
  return xla, xla.with_tuning(Tuning(scaled_decay=True, **tuning))


@pytest.fixture(scope='module')
def pair():
  """XLA's step and W = c·V on `_configs()`'s setting, compiled once for the module; other
  learning rates reuse the programs (`Trainer.with_hyper`)."""
  return _trainers(_data(), _configs())


def _with_lrs(trainers, lrs):
  hp = config_lib.hyper_arrays(_configs(lrs))
  return tuple(t.with_hyper(hp) for t in trainers)


def _fit_both(xla, fast):
  rows, states = {}, {}
  for name, trainer in (('xla', xla), ('scaled', fast)):
    rows[name] = []
    states[name] = jax.tree.map(np.asarray, trainer.fit(
        trainer.init(), on_eval=lambda s, st, row, name=name: rows[name].append(row)))
  return states['xla'], states['scaled'], rows['xla'], rows['scaled']


def test_the_default_setting_trains_the_xla_steps_model_with_the_same_bits_each_time(pair):
  """The first case below, on the module's pair; a second run of W = c·V gives the same bits."""
  xla, fast = _with_lrs(pair, (0.05, 0.5))
  _check_same_model(xla, fast)
  again = jax.tree.map(np.asarray, fast.fit(fast.init()))
  jax.tree.map(np.testing.assert_array_equal, again,
               jax.tree.map(np.asarray, fast.fit(fast.init())))


@pytest.mark.parametrize('fields,tuning,lrs', [
    # 40 steps in chunks of 13: blocks of RENORM_EVERY and a tail; the step schedule
    ({'eval_every_steps': 13, 'optimizer.schedule': 'step', 'optimizer.decay_steps': 5}, {},
     (0.05, 0.5)),
    ({'loss.name': 'softmax_cross_entropy', 'loss.margin': 2.0}, {'scan_unroll': 4},
     (0.05, 0.5)),
    ({'reg.name': 'none'}, {'feature_multiple': 128}, (0.05, 0.5)),  # 301 features → 384
    # the squared hinge at lr 0.5 flips an active margin on float32 rounding after 30 steps
    # (XLA's own step against itself padded, too): from there the runs part; 0.2 does not
    ({'loss.name': 'multiclass_svm', 'loss.squared': True}, {'feature_multiple': 8},
     (0.05, 0.2)),
])
def test_scaled_chunks_train_the_xla_steps_model(fields, tuning, lrs):
  """Two members, 2·lr·λ = 0.01 and up to 0.1 a step (c falls to 0.18 in a block of 16):
  the same weights, optimizer state, losses (the penalty carried through the Gram recursion)
  and evaluation rows as XLA's step."""
  _check_same_model(*_trainers(_data(), _configs(lrs, **fields), **tuning))


def _check_same_model(xla, fast):
  assert fast.tuning.scaled_mode(fast.spec, 'deferred')
  assert not xla.tuning.scaled_mode(xla.spec, 'deferred')
  want, got, rows_x, rows_s = _fit_both(xla, fast)
  np.testing.assert_allclose(got.params['W'], want.params['W'], rtol=1e-4, atol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, got.opt_state, want.opt_state)
  assert got.diverged.tolist() == want.diverged.tolist() == [False, False]
  assert fast.reruns == 0
  assert len(rows_s) == len(rows_x) >= 2
  for a, b in zip(rows_x, rows_s):
    np.testing.assert_allclose(b['loss'], a['loss'], rtol=1e-5)


def test_every_steps_loss_is_the_objective_at_its_weights_over_8_devices():
  """Each step's loss (data + λ·c²·‖V‖², ‖V‖² carried between the exact foldings) is the
  XLA step's objective, over 40 steps: two foldings and a tail; float32 storage. The 8
  members are laid over the 8 simulated CPU devices (tests/conftest.py): the chunk's products
  and the Gram matrix under GSPMD give the XLA step's weights and losses."""
  assert len(jax.local_devices()) == 8
  xla, fast = _trainers(_data(np.float32), _configs(np.linspace(0.05, 0.5, 8)))
  assert fast.member_sharding.mesh.size == 8
  (sx, want, _), (ss, got, _) = (
      t.compiled_chunk(t.init(), 40)(t.init(), np.int32(0), t.data, t.hp) for t in (xla, fast))
  assert np.asarray(got).shape == (40, 8)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5)
  np.testing.assert_allclose(ss.params['W'], sx.params['W'], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('lr,why', [(1e38, 'diverges'), (5.0, 'decay 0: c would be 0'),
                                    (4.5, 'decay 0.1: c reaches 1e-16 in a block')])
def test_a_member_it_cannot_train_reruns_the_chunk_under_the_xla_step(pair, lr, why):
  """A member diverging, or one whose decay 1 − 2·lr·λ takes c below `scaled.C_FLOOR` in a
  block (poisoned to NaN), makes the deferred guard rerun its chunk with XLA's step: the XLA
  run's results, for the members beside it too."""
  xla, fast = _with_lrs(pair, (0.05, lr))
  want, got, rows_x, rows_s = _fit_both(xla, fast)
  assert got.diverged.tolist() == want.diverged.tolist()
  assert got.diverged_step.tolist() == want.diverged_step.tolist()
  assert fast.reruns >= 1, why
  np.testing.assert_allclose(got.params['W'], want.params['W'], rtol=1e-4, atol=1e-6)
  for a, b in zip(rows_x, rows_s):
    np.testing.assert_allclose(b['loss'], a['loss'], rtol=1e-5)


@pytest.mark.parametrize('fields,members', [
    ({'optimizer.name': 'momentum'}, 1),  # optimizer state beyond the learning rate
    ({'reg.name': 'l1'}, 1),  # a decay that is not a scalar
    ({'reg.regularize_bias': False}, 1),  # the bias column does not decay
    ({'dataset.bias_trick': False}, 1),  # a separate b
    ({'reg.max_norm': 1.0}, 1),
    ({'batch_size': 0}, 1),  # full batch: fullbatch.py's pass
    ({}, 'own seeds'),  # members drawing their own minibatches
])
def test_scaled_applies_only_where_it_computes_the_same_step(fields, members):
  """Elsewhere `Tuning(scaled_decay=True)` leaves the XLA step: the same program (so bitwise
  the same run), compared as lowered, before XLA compiles it."""
  bias_trick = fields.get('dataset.bias_trick', True)
  data = _data() if bias_trick else array_dataset(*_raw(), 7, scale=1 / 255)
  configs = _configs((0.05,), **fields)
  if members == 'own seeds':
    configs = configs + [sweep.member_config(configs[0], {'seed': 1})]
  fast = Trainer.create(configs[0], data, configs, tuning=Tuning(scaled_decay=True))
  xla = fast.with_tuning(Tuning(scaled_decay=False))  # the same guard (full batch: per step)
  assert not fast.tuning.scaled_mode(fast.spec, fast.tuning.guard_mode(fast.spec))
  state = jax.eval_shape(functools.partial(init_state, spec=xla.spec), xla.hp)
  xla_text, fast_text = (t.chunk_program(20).lower(state, np.int32(0), t.data, t.hp).as_text()
                         for t in (xla, fast))
  assert fast_text == xla_text


def test_scaled_needs_the_deferred_guard_and_is_off_until_decided(pair):
  """An undecided `Tuning()` trains XLA's step; `for_members` (next test) decides it. Where it
  applies, the program differs from XLA's (the lowered comparison above can fail)."""
  spec = pair[1].spec
  state = jax.eval_shape(functools.partial(init_state, spec=spec), pair[0].hp)
  xla_text, fast_text = (t.chunk_program(20).lower(state, np.int32(0), t.data, t.hp).as_text()
                         for t in pair)
  assert fast_text != xla_text
  assert scaled.applies(spec, 'deferred')
  assert not scaled.applies(spec, 'select') and not scaled.applies(spec, 'cond')
  assert not Tuning().scaled_mode(spec, 'deferred')
  assert not Tuning(scaled_decay=True).scaled_mode(spec, 'select')
  with pytest.raises(ValueError, match='scaled_decay=1 must be True, False or None'):
    Tuning(scaled_decay=1)


def test_program_options_add_cublas_gemms_on_a_gpu_only(monkeypatch):
  """On a GPU the chunk's program turns XLA's Triton GEMMs off (the accumulate fuses into
  cuBLAS's GEMM), unless the caller set that option; the rerun's program and the CPU's keep
  `compiler_options`."""
  spec = _trainers(_data(), _configs())[1].spec
  tuning = Tuning(scaled_decay=True, compiler_options={'xla_gpu_graph_min_graph_size': 2})
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')  # also where a GPU runs the tests
  assert tuning.program_options(spec) == {'xla_gpu_graph_min_graph_size': 2}
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert tuning.program_options(spec) == {'xla_gpu_enable_triton_gemm': False,
                                          'xla_gpu_graph_min_graph_size': 2}
  assert tuning.program_options(spec, rerun=True) == {'xla_gpu_graph_min_graph_size': 2}
  assert Tuning(scaled_decay=True, compiler_options={'xla_gpu_enable_triton_gemm': True}
                ).program_options(spec) == {'xla_gpu_enable_triton_gemm': True}
  assert Tuning().program_options(spec) == {}


def test_by_default_a_gpu_trains_as_w_cv_from_scaled_min_members_a_device(monkeypatch):
  """`scaled_decay=None` is decided per trainer: on a GPU, on where a device trains at least
  `tuning.SCALED_MIN_MEMBERS` members and the mode applies; set values win."""
  from hinge_jax import tuning
  spec = _trainers(_data(), _configs())[1].spec
  l1 = _trainers(_data(), _configs(**{'reg.name': 'l1'}))[1].spec
  monkeypatch.setattr(tuning, 'SCALED_MIN_MEMBERS', 4)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  assert Tuning().for_members(spec, 4).scaled_decay is False
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert Tuning().for_members(spec, 4).scaled_decay is True
  assert Tuning().for_members(spec, 3).scaled_decay is False
  assert Tuning().for_members(l1, 4).scaled_decay is False  # L1's decay is not a scalar
  assert Tuning(guard='select').for_members(spec, 4).scaled_decay is False
  assert Tuning(scaled_decay=False).for_members(spec, 4).scaled_decay is False
  assert Tuning(scaled_decay=True).for_members(spec, 1).scaled_decay is True
  # Trainer.create counts the members of one device: 8 over the 8 CPU devices is 1 a device
  data, configs = _data(), _configs(np.linspace(0.01, 0.08, 8))
  cpus = jax.devices('cpu')
  assert len(cpus) == 8  # tests/conftest.py
  one_device = Trainer.create(configs[0], data, configs, devices=cpus[:1])
  assert one_device.tuning.scaled_decay is True
  monkeypatch.setattr(tuning, 'SCALED_MIN_MEMBERS', 2)
  assert Trainer.create(configs[0], data, configs, devices=cpus).tuning.scaled_decay is False
  monkeypatch.setattr(tuning, 'SCALED_MIN_MEMBERS', 1)
  assert Trainer.create(configs[0], data, configs, devices=cpus).tuning.scaled_decay is True


def test_program_compiled_for_an_h200_accumulates_into_w_inside_the_gemm():
  """CIFAR's shapes at K = 256, compiled for an H200 without a card (JAX's CUDA plugin;
  skipped without it): one cuBLAS GEMM a step writes over V (its output aliases the
  accumulated operand), no other kernel of a step moves W's size, and the one pass over W
  is the fold, once a block of `RENORM_EVERY` steps."""
  from benchmarks import gpu_program, hlo_kernels
  rng = np.random.default_rng(0)
  data = array_dataset(rng.integers(0, 256, (512, 3072)).astype(np.uint8),
                       rng.integers(0, 10, 512), 10, scale=1.0, bias_trick=True)
  try:
    program = gpu_program.compile_for_card('h200', data, k=256, steps=2 * scaled.RENORM_EVERY,
                                           tuning=Tuning(scaled_decay=True))
  except RuntimeError as e:
    pytest.skip(str(e))
  lines = program.text.splitlines()
  in_place = [line for line in lines if 'custom_call_target="__cublas' in line
              and 'output_to_operand_aliasing={{0}: (2' in line]
  assert len(in_place) == program.unroll
  w_bytes = 256 * 10 * 3200 * 4  # W (33 MB): 3,073 features padded to 3,200
  kernels = hlo_kernels.kernels(program.text)
  steps = [k for k in kernels if k.computation.count('body') == 2]  # the loop over steps
  blocks = [k for k in kernels if k.computation.count('body') == 1]  # the loop over blocks
  assert steps and not [k for k in steps if k.op.startswith('fusion') and k.bytes >= w_bytes]
  folds = [k for k in blocks if k.bytes >= 2 * w_bytes]  # V read and written once a block
  assert len(folds) == 1 and folds[0].op.startswith('fusion')
