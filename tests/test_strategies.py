"""The lecture's ladder of strategies through the shared loop, and their bad inputs."""

import importlib
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hinge_jax import config_lib, datasets, experiment, strategies
from hinge_jax.errors import ConfigError, UserError
from hinge_jax.state import DeviceData, least_padding_chunk
from hinge_jax.train import Spec, Trainer, check_fits
from hinge_jax.tuning import fullbatch_block_rows
from helpers import array_dataset, default_config, run_main



def rung(name: str, **overrides):
  """configs/digits_<name>.py with dotted overrides."""
  config = importlib.import_module(f'configs.digits_{name}').get_config()
  return config_lib.with_fields(config, overrides)


def fit(config, dataset, on_eval=None):
  config_lib.validate(config)
  check_fits(config, dataset)
  trainer = Trainer.create(config, dataset, [config])
  state = trainer.fit(trainer.init(), on_eval=on_eval)
  return trainer, state


def test_the_ladder_on_digits_with_one_seed(digits):
  """Random search beats chance, local search beats it, SGD beats both (seed 0, test split)."""
  acc = {}
  for name in ('random_search', 'random_local_search', 'sgd'):
    config = rung(name, eval_every_steps=rung(name).num_steps, **{'sanity.enabled': False})
    trainer, state = fit(config, digits)
    acc[name] = float(trainer.evaluate(state.params, 'test')['accuracy'][0])
  assert acc['random_search'] > 0.15  # chance is 0.10 (ten balanced classes)
  assert acc['random_local_search'] > acc['random_search'] + 0.1
  assert acc['sgd'] > acc['random_local_search'] + 0.1
  assert acc['sgd'] > 0.9


@pytest.mark.parametrize('name', ['random_search', 'random_local_search'])
def test_searches_never_raise_the_training_loss(digits, name):
  """Full batch: a search keeps W unless a candidate has a lower training objective."""
  config = rung(name, num_steps=8, eval_every_steps=1, **{'search.num_candidates': 4,
                                                           'search.num_proposals': 2,
                                                           'search.step_size': 1e-3})
  seen = []
  trainer, state = fit(config, digits, on_eval=lambda s, st, row: seen.append(row['loss'][0]))
  assert len(seen) == 8
  assert all(b <= a for a, b in zip(seen, seen[1:]))
  accepted = int(np.asarray(state.opt_state['accepted'])[0])
  assert 1 <= accepted <= 8
  assert seen[-1] < seen[0] or name == 'random_search'


def test_random_search_candidates_follow_the_seed_and_scale(digits):
  """Each accepted W is a draw of scale·randn; the seed alone decides the draws."""
  configs = [rung('random_search', num_steps=2, eval_every_steps=2, seed=seed,
                  **{'search.scale': 0.37, 'search.num_candidates': 8}) for seed in (0, 0, 1)]
  trainer = Trainer.create(configs[0], digits, configs)  # three members, one program
  w = np.asarray(trainer.fit(trainer.init()).params['W'])
  np.testing.assert_array_equal(w[0], w[1])  # same seed, same search
  assert not np.array_equal(w[0], w[2])
  assert np.std(w[0]) == pytest.approx(0.37, rel=0.1)  # a candidate, not W0 (std 1e-3)


def test_numerical_gradient_takes_the_same_steps_as_jax_grad(digits):
  ng = rung('numerical_gradient', num_steps=5, eval_every_steps=5)
  gd = rung('gradient_descent', num_steps=5, eval_every_steps=5)
  _, a = fit(ng, digits)
  _, b = fit(gd, digits)
  wa, wb = np.asarray(a.params['W']), np.asarray(b.params['W'])
  scale = float(np.max(np.abs(wb)))
  # float32 centered differences (h = 1e-3) agree with jax.grad except where a hinge kink lies
  # within h of W, where the difference quotient averages the two slopes: a few coordinates
  np.testing.assert_allclose(wa, wb, rtol=0, atol=1e-2 * scale)
  assert np.mean(np.abs(wa - wb) > 2e-3 * scale) < 0.01


def test_full_batch_gradient_descent_decreases_the_loss_monotonically(digits):
  config = rung('gradient_descent', num_steps=25, eval_every_steps=1,
                **{'optimizer.learning_rate': 0.01})
  seen = []
  fit(config, digits, on_eval=lambda s, st, row: seen.append(row['loss'][0]))
  assert len(seen) == 25
  assert all(b < a for a, b in zip(seen, seen[1:]))


def test_gradient_descent_uses_the_whole_training_set(digits):
  config = rung('gradient_descent', batch_size=200)
  hp = config_lib.hyper_arrays([config])
  spec = Spec.create(config, digits, hp)
  assert spec.full_batch and spec.batch_size == digits.size('train')
  [warning] = strategies.ignored_settings(config)
  assert 'batch_size=200 is ignored' in warning


@pytest.mark.parametrize('rows', [1_257, 4_095, 4_096, 12_500, 49_000, 60_000, 100_000])
def test_the_training_split_pads_to_whole_blocks_and_little_more(rows):
  """The eval chunk pads the largest split to whole 512-row blocks (128 below 4,096 rows),
  within 1 % of the fewest padding rows any chunk of such blocks up to 8,192 rows gives
  (brute force): a full-batch pass does little more than 1 % extra work."""
  chunk = least_padding_chunk(rows, -(-min(8192, rows) // 128) * 128)
  unit = 512 if rows >= 4096 else 128
  padded = -(-rows // chunk) * chunk
  least = min(-(-rows // c) * c for c in range(unit, 8192 + 1, unit))
  assert chunk % unit == 0 and chunk <= 8192
  assert padded - least <= rows // 100
  assert padded - rows < rows // 100 + unit  # 100,000: 100,352 (chunks of 8,192: 106,496)


def test_the_full_batch_pass_keeps_512_row_blocks_on_a_padded_split():
  rng = np.random.default_rng(0)
  ds = array_dataset(rng.standard_normal((12_500, 3)).astype(np.float32),
                     rng.integers(0, 2, 12_500), 2)
  data = DeviceData.create(ds, eval_batch_size=8192)
  assert data.x['train'].shape[0] == 12_800  # chunks of 8,192 would pad it to 16,384
  assert fullbatch_block_rows(12_800) == 512


def test_a_search_with_adam_settings_is_ignored_with_one_warning():
  config = rung('random_search', **{'optimizer.name': 'adam', 'optimizer.schedule': 'cosine'})
  [warning] = strategies.ignored_settings(config)
  assert "optimizer.name='adam'" in warning and "optimizer.schedule='cosine'" in warning
  assert strategies.ignored_settings(rung('random_search')) == []  # the config is quiet
  assert strategies.ignored_settings(rung('sgd')) == []


def test_numerical_gradient_refuses_a_problem_over_its_budget(digits):
  config = rung('numerical_gradient', **{'numerical.max_evals_per_step': 1000})
  with pytest.raises(ConfigError, match=r'2·650 = 1300 loss evaluations.*max_evals_per_step=1000'):
    check_fits(config, digits)
  cifar_like = array_dataset(np.zeros((4, 3072), np.uint8), np.arange(4) % 2, 10,
                             bias_trick=True)
  with pytest.raises(ConfigError, match='30730'):  # the lecture's CIFAR-10 count (D·C)
    check_fits(rung('numerical_gradient'), cifar_like)


def _one_line_error(proc, *needles):
  assert proc.returncode == 2, (proc.returncode, proc.stderr)
  lines = [l for l in proc.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
  for needle in needles:
    assert needle in lines[0], lines[0]


def test_a_bad_strategy_on_the_command_line_is_one_line(tmp_path):
  """The process boundary (exit code 2, one `error:` line, no traceback) for one bad input;
  the others below are the same error raised in-process."""
  proc = run_main(f'--workdir={tmp_path}', '--config.strategy=hill_climbing')
  _one_line_error(proc, "strategy='hill_climbing'", 'random_search', 'numerical_gradient',
                  'gradient_descent')
  assert not (tmp_path / 'results.json').exists()


@pytest.mark.parametrize('config,needles', [
    (lambda: default_config(**{'strategy': 'hill_climbing'}),
     ("strategy='hill_climbing'", 'random_search', 'numerical_gradient', 'gradient_descent')),
    (lambda: default_config(**{'search.scale': 0.0}), ('search.scale=0', '> 0')),
    (lambda: default_config(**{'numerical.h': -1e-5}), ('numerical.h=-1e-05', '> 0')),
    (lambda: rung('numerical_gradient', **{'numerical.max_evals_per_step': 100}),
     ('numerical_gradient', '1300', '100')),
])
def test_bad_strategy_input_is_one_line(tmp_path, config, needles):
  with pytest.raises(UserError) as info:
    experiment.train_and_evaluate(config(), str(tmp_path))
  assert '\n' not in str(info.value)
  for needle in needles:
    assert needle in str(info.value), str(info.value)
  assert not (tmp_path / 'results.json').exists()


def test_a_rung_writes_the_same_results_files(tmp_path, caplog):
  config = rung('random_search', num_steps=2, eval_every_steps=2,
                **{'sanity.overfit_steps': 5, 'optimizer.name': 'adam'})
  with caplog.at_level(logging.WARNING):
    results = experiment.train_and_evaluate(config, str(tmp_path), log=lambda line: None)
  warnings = [r.getMessage() for r in caplog.records if 'follows no gradient' in r.getMessage()]
  assert len(warnings) == 1 and "optimizer.name='adam'" in warnings[0]  # the warning, once
  for name in ('config.json', 'metrics.jsonl', 'results.json', 'params.npz', 'sanity.json'):
    assert (tmp_path / name).exists(), name
  written = json.loads((tmp_path / 'results.json').read_text())
  assert written['config']['strategy'] == 'random_search' and written['steps'] == 2
  assert results['steps'] == 2


@pytest.mark.parametrize('name', ['digits_random_search', 'digits_random_local_search',
                                  'digits_numerical_gradient', 'digits_gradient_descent',
                                  'digits_sgd', 'cifar10_random_search',
                                  'cifar10_random_local_search', 'cifar10_numerical_gradient',
                                  'cifar10_gradient_descent', 'cifar10_sgd'])
def test_every_rung_config_is_valid_and_quiet(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  config_lib.validate(config)
  assert strategies.ignored_settings(config) == []
  assert config.strategy in name.replace('digits_', '').replace('cifar10_', '')
  if name.startswith('cifar10_'):
    assert config.dataset.name == 'cifar10' and config.dataset.bias_trick
  if 'search' in name:
    assert config.batch_size == 0  # compared on the training set, as in the notes
    assert config.search.scale == 1e-4 and config.search.step_size == 1e-4
  if name.endswith('random_search'):
    assert config.num_steps * config.search.num_candidates == 1000
  if name.endswith('random_local_search'):
    assert config.num_steps == 1000 and config.search.num_proposals == 1
