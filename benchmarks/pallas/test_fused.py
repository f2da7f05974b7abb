"""fused.py: plain minibatch SGD with Pallas kernels (on the CPU, in Pallas's interpreter):
two kernels a step ('step') and XLA's forward with a backward-and-update kernel ('update'),
against the package's XLA step and against `jax.grad` of losses.py.

Out of the default test run (slow: the interpreter); run them with
`python -m pytest benchmarks/pallas`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.pallas import fused
from benchmarks.pallas.trainer import PallasTrainer, PallasTuning
from hinge_jax import losses, sweep
from hinge_jax.train import Trainer, Tuning

from helpers import array_dataset, default_config


def _data(n=400, d=300, classes=7, dtype=np.uint8, seed=0):
  """Pixels with class structure: 300 pixels + the bias trick pad to 384 features (3 blocks
  of 128, the last one part pixels, part padding, the bias last); 7 classes pad to 16."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, classes, n)
  x = np.clip(rng.integers(40, 216, (classes, d))[y] + rng.integers(-40, 41, (n, d)), 0, 255)
  return array_dataset(x.astype(dtype), y, classes, scale=1 / 255, bias_trick=True)


def _configs(lrs=(0.05,), **fields):
  base = {'optimizer.name': 'sgd', 'batch_size': 50, 'num_steps': 24, 'eval_every_steps': 8,
          'reg.strength': 1e-2, 'dataset.bias_trick': True, **fields}
  return [default_config(**{**base, 'optimizer.learning_rate': lr}) for lr in lrs]


def _trainers(data, configs, mode='step', **tuning):
  xla = Trainer.create(configs[0], data, configs, tuning=Tuning(guard='deferred'))
  pallas = PallasTrainer.create(configs[0], data, configs,
                                tuning=PallasTuning(pallas=mode, **tuning))
  return xla, pallas


@pytest.mark.parametrize('loss,squared', [('multiclass_svm', False), ('multiclass_svm', True),
                                          ('softmax_cross_entropy', False)])
def test_loss_gradient_is_jax_grad_of_the_library_loss(loss, squared):
  """The kernel's hand-derived dL/ds equals `jax.grad` of losses.py's mean loss over the valid
  rows, classes past C count for nothing, and ties (margin exactly 0) take the strict
  indicator's subgradient."""
  rng = np.random.default_rng(1)
  rows, c, c_pad, batch = 32, 7, 16, 27  # rows 27..31 are padding
  s = rng.normal(size=(rows, c_pad)).astype(np.float32)
  y = rng.integers(0, c, rows).astype(np.int32)
  s[:, c:] = rng.normal(size=(rows, c_pad - c)) * 100  # garbage in the padded classes
  s[3, 1] = s[3, y[3]] - 1.0  # a tie: margin exactly 0 (Δ = 1)
  row_ok = np.arange(rows) < batch
  got_l, got_ds = fused._loss_and_grad(
      jnp.asarray(s), jnp.asarray(y), jnp.asarray(row_ok), loss=loss, squared=squared,
      num_classes=c, batch=batch, margin=jnp.float32(1.0))
  fn = losses.get(loss)
  per_row = fn(jnp.asarray(s[:batch, :c]), jnp.asarray(y[:batch]), margin=1.0, squared=squared)
  ds = jax.grad(lambda v: jnp.mean(fn(v, jnp.asarray(y[:batch]), margin=1.0,
                                      squared=squared)))(jnp.asarray(s[:batch, :c]))
  np.testing.assert_allclose(np.asarray(got_l)[:batch], per_row, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(got_ds)[:batch, :c], ds, rtol=1e-6, atol=1e-8)
  assert not np.asarray(got_l)[batch:].any() and not np.asarray(got_ds)[batch:].any()
  assert not np.asarray(got_ds)[:, c:].any()


def test_svm_loss_keeps_nan_scores_nan():
  """A NaN score gives a NaN loss (losses.hinge's rule), so the chunk's end check sees it."""
  s = jnp.zeros((32, 16)).at[0, 2].set(jnp.nan)
  got, _ = fused._loss_and_grad(s, jnp.zeros((32,), jnp.int32), jnp.ones((32,), bool),
                                loss='multiclass_svm', squared=False, num_classes=10,
                                batch=32, margin=jnp.float32(1.0))
  assert np.isnan(got[0]) and np.isfinite(got[1:]).all()


CASES = [
    ({'loss.name': 'multiclass_svm', 'reg.name': 'l2'}, True),
    ({'loss.name': 'multiclass_svm', 'loss.squared': True, 'reg.name': 'l1',
      'reg.regularize_bias': False, 'optimizer.schedule': 'step', 'optimizer.decay_steps': 5},
     True),
    ({'loss.name': 'softmax_cross_entropy', 'reg.name': 'elastic_net', 'reg.l1_ratio': 0.3,
      'optimizer.schedule': 'cosine', 'sampling': 'epochs'}, True),
    # softmax unregularized does not diverge at lr 1e38 (its gradient saturates) unless its
    # scores overflow, which rounding decides: a second member at 0.5 instead
    ({'loss.name': 'softmax_cross_entropy', 'reg.name': 'none', 'loss.margin': 2.0}, False)]


@pytest.mark.parametrize('mode,fields,diverges', [('step', *c) for c in CASES] + [
    ('update', *c) for c in CASES[:2]] + [
    ('update', {'loss.name': 'crammer_singer', 'reg.name': 'elastic_net'}, True),
    ('update', {'loss.name': 'one_vs_all', 'reg.name': 'none', 'num_steps': 23}, False)])
def test_pallas_chunks_train_the_xla_steps_model(mode, fields, diverges):
  """Two members (one diverging at lr 1e38, so its chunk is rerun) trained with the kernels
  and with XLA's step: the same weights (float32 sums grouped differently), optimizer state,
  losses and divergence steps. 'update' takes any loss; 23 steps leave a short last chunk."""
  data = _data()
  xla, pallas = _trainers(data, _configs((0.05, 1e38 if diverges else 0.5), **fields), mode)
  assert pallas.tuning.pallas_mode(pallas.spec, 'deferred') == mode
  assert type(xla) is Trainer  # the package's step
  rows, states = {}, {}
  for name, trainer in (('xla', xla), ('pallas', pallas)):
    rows[name] = []
    states[name] = jax.tree.map(np.asarray, trainer.fit(
        trainer.init(), on_eval=lambda s, st, row, name=name: rows[name].append(row)))
  want, got = states['xla'], states['pallas']
  assert got.diverged.tolist() == want.diverged.tolist() == [False, diverges]
  assert got.diverged_step.tolist() == want.diverged_step.tolist()
  np.testing.assert_allclose(got.params['W'], want.params['W'], rtol=1e-4, atol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, got.opt_state, want.opt_state)
  assert pallas.reruns == xla.reruns == (1 if diverges else 0)  # reran under the XLA step
  assert len(rows['pallas']) == len(rows['xla']) == 3
  for a, b in zip(rows['xla'], rows['pallas']):
    np.testing.assert_allclose(b['loss'][0], a['loss'][0], rtol=1e-5)


@pytest.mark.parametrize('mode,tile_rows,batch_rows', [
    ('step', None, None), ('step', None, 16), ('step', None, 64),
    ('update', None, None), ('update', 16, None), ('update', None, 16), ('update', None, 64)])
def test_pallas_chunk_losses_are_the_objective_at_each_step(mode, tile_rows, batch_rows):
  """Each step's reported loss is the objective (data loss + λR) at the weights it started
  from, as the XLA step reports it; float32 storage works as uint8 does; 9 members (63 rows
  of W: 'update' pads them to its tile of 64, or to 6 tiles of 16, a member across two); the
  batch of 50 taken 16 rows an iteration (the last part padding) or 64 at once."""
  data = _data(dtype=np.float32)
  xla, pallas = _trainers(data, _configs(np.linspace(0.05, 0.2, 9), **{'reg.strength': 0.1}),
                          mode, pallas_tile_rows=tile_rows, pallas_batch_rows=batch_rows)
  (state_x, want, _), (state_p, got, _) = (
      t.compiled_chunk(t.init(), 8)(t.init(), np.int32(0), t.data, t.hp) for t in (xla, pallas))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5)
  assert np.asarray(got).shape == (8, 9)
  np.testing.assert_allclose(state_p.params['W'], state_x.params['W'], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('mode', ['step', 'update'])
def test_the_same_seed_gives_the_same_bits(mode):
  data = _data()
  runs = [jax.tree.map(np.asarray, t.fit(t.init()))
          for t in (_trainers(data, _configs(), mode)[1] for _ in range(2))]
  jax.tree.map(np.testing.assert_array_equal, *runs)


@pytest.mark.parametrize('mode,fields,members', [
    ('step', {'optimizer.name': 'momentum'}, 1),  # optimizer state beyond the learning rate
    ('update', {'optimizer.name': 'adam'}, 1),
    ('step', {'dataset.bias_trick': False}, 1),  # a separate b
    ('step', {'loss.name': 'crammer_singer'}, 1),  # 'step' differentiates two losses by hand
    ('update', {'reg.max_norm': 1.0}, 1),
    ('step', {'batch_size': 0}, 1),  # full batch: fullbatch.py's pass
    ('update', {}, 'own seeds'),  # members drawing their own minibatches
])
def test_pallas_applies_only_where_it_computes_the_same_step(mode, fields, members):
  """Elsewhere `PallasTuning(pallas=...)` leaves the XLA step (bitwise the same run)."""
  bias_trick = fields.get('dataset.bias_trick', True)
  data = _data() if bias_trick else array_dataset(*_raw(), 7, scale=1 / 255)
  configs = _configs(**fields)
  if members == 'own seeds':
    configs = configs + [sweep.member_config(configs[0], {'seed': 1})]
  xla, pallas = _trainers(data, configs, mode)
  assert pallas.tuning.pallas_mode(pallas.spec, pallas.tuning.guard_mode(pallas.spec)) is None
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, pallas.fit(pallas.init())),
               jax.tree.map(np.asarray, xla.fit(xla.init())))


def test_pallas_needs_the_deferred_guard_and_a_known_mode():
  spec = _trainers(_data(), _configs())[1].spec
  assert fused.applies(spec, 'deferred', 'step') and fused.applies(spec, 'deferred', 'update')
  assert not fused.applies(spec, 'select') and not fused.applies(spec, 'cond', 'update')
  assert PallasTuning().pallas_mode(spec, 'deferred') is None  # off unless asked for
  with pytest.raises(ValueError, match="pallas='fast'"):
    PallasTuning(pallas='fast')
  for warps in (3, True):
    with pytest.raises(ValueError, match=f'pallas_warps={warps}'):
      PallasTuning(pallas='step', pallas_warps=warps)
  for rows in (48, True):
    with pytest.raises(ValueError, match=f'pallas_tile_rows={rows}'):
      PallasTuning(pallas='update', pallas_tile_rows=rows)
    with pytest.raises(ValueError, match=f'pallas_batch_rows={rows}'):
      PallasTuning(pallas='step', pallas_batch_rows=rows)
  with pytest.raises(ValueError, match="unknown Pallas mode 'fast'"):
    fused.applies(spec, 'deferred', 'fast')


def test_layout_pads_to_the_kernels_blocks():
  spec = _trainers(_data(), _configs())[1].spec  # 301 features, 7 classes, batch 50
  assert fused.layout(spec) == dict(c_pad=16, b_pad=64, d_pad=384, blocks=3, splits=3)


@pytest.mark.parametrize('mode', ['step', 'update'])
def test_program_compiled_for_an_h200_runs_the_pallas_kernels(mode):
  """The Triton lowering, on XLA's output for an H200 (no card needed, but JAX's CUDA plugin;
  skipped without it). 'step': each step is the two Pallas kernels, with no XLA gather,
  matmul or reduction left in the loop. 'update': one Pallas kernel a step and one XLA
  matmul (the forward product's: none computes dW)."""
  from benchmarks import gpu_program, hlo_kernels
  try:
    program = gpu_program.compile_for_card('h200', _data(), k=4, steps=8,
                                           tuning=PallasTuning(pallas=mode))
    text, unroll = program.text, program.unroll
  except RuntimeError as e:
    pytest.skip(str(e))
  loop = [k for k in hlo_kernels.kernels(text) if k.computation.startswith('ENTRY/body')]
  pallas = [k for k in loop if 'xla.gpu.triton' in k.op]
  if mode == 'step':
    assert len(pallas) == 2 * unroll
    assert all(k in pallas or k.shape.startswith('s32[]') for k in loop)
  else:
    assert len(pallas) == unroll
    assert sum('gemm' in k.op or 'cublas' in k.op for k in loop) == unroll


@pytest.mark.parametrize('mode,members', [('step', 1), ('update', 1024)])
def test_default_pallas_kernels_spill_no_register_on_an_h200(mode, members):
  """CIFAR's 3,073 features and 10 classes, compiled for an H200 (JAX's CUDA plugin and its
  ptxas; skipped without them): at `fused.WARPS`, no kernel spills a register to local
  memory, and an SM holds at least one program."""
  from benchmarks import gpu_program
  rng = np.random.default_rng(0)
  data = array_dataset(rng.integers(0, 256, (256, 3072)).astype(np.uint8),
                       rng.integers(0, 10, 256), 10, scale=1 / 255, bias_trick=True)
  try:
    kernels = gpu_program.compile_for_card('h200', data, k=members, steps=4,
                                           tuning=PallasTuning(pallas=mode), ptxas=True).kernels
  except RuntimeError as e:
    pytest.skip(str(e))
  assert sorted(k.name for k in kernels) == (
      ['hinge_jax_scores', 'hinge_jax_update'] if mode == 'step'
      else ['hinge_jax_backward_update'])
  for k in kernels:
    assert k.spill_bytes == 0 and k.programs_per_sm >= 1, k
    assert k.threads == 32 * fused.WARPS[mode], k


def _raw(n=400, d=300, classes=7):
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (n, d)).astype(np.uint8), rng.integers(0, classes, n)



def test_a_jax_without_pallas_triton_gets_one_line_naming_the_fix(monkeypatch):
  """Pallas's Triton backend is deprecated from JAX 0.11: where it is gone, compiling the
  kernels for a GPU stops with a one-line error naming `PallasTuning(pallas=None)`, not an
  ImportError from inside the lowering."""
  import sys
  from hinge_jax import errors
  from jax.experimental import pallas
  monkeypatch.setitem(sys.modules, 'jax.experimental.pallas.triton', None)  # import fails
  monkeypatch.delattr(pallas, 'triton', raising=False)  # as if never imported
  with pytest.raises(errors.UserError, match=r"Triton backend.*Tuning\(pallas=None\)") as info:
    fused._lowering(False, 4)
  assert '\n' not in str(info.value)
  assert fused._lowering(True, 4)[0] is True  # the interpreter (CPU tests) does not need it
