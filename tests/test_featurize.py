"""The feature pipeline (`dataset.features`): standardization, cache, configs, end to end."""

import json
import os
import sys

import numpy as np
import pytest

from hinge_jax import datasets, distributed, experiment, features, sweep
from hinge_jax.datasets import SPLITS, featurize, lazy, rows
from hinge_jax.datasets.rows import process_block
from hinge_jax.errors import ConfigError, DataError, UserError
from hinge_jax.train import Trainer
from helpers import REPO, array_dataset, default_config, run_main


def _images(n=60, seed=0, shape=(32, 32, 3)):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n,) + shape, dtype=np.uint8), rng.integers(0, 3, n)


def _image_dataset(n=60, seed=0, shape=(32, 32, 3), **kw):
  x, y = _images(n, seed, shape)
  xv, yv = _images(20, seed + 1, shape)
  return array_dataset(x, y, 3, image_shape=shape, x_val=xv, y_val=yv, x_test=xv[:7],
                       y_test=yv[:7], **kw)


def _cfg(**overrides):
  return default_config(**{f'dataset.{k}': v for k, v in overrides.items()}).dataset


def test_features_are_standardized_with_the_training_statistics():
  ds = _image_dataset(bias_trick=True)
  out = featurize.apply(ds, _cfg(features=('hog', 'hue_hist')))
  ex = features.combine(('hog', 'hue_hist'), (32, 32, 3), _cfg())
  raw = {s: features.extract(ds.x[s], ex) for s in ('train', 'val', 'test')}
  mean, std = raw['train'].mean(axis=0), raw['train'].std(axis=0)
  std = np.where(std > 0, std, 1.0)
  for split in ('train', 'val', 'test'):
    assert out.x[split].dtype == np.float32 and out.x[split].shape == (ds.size(split), 154)
    np.testing.assert_allclose(out.x[split], (raw[split] - mean) / std, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(out.y[split], ds.y[split])
  varying = raw['train'].std(axis=0) > 0
  np.testing.assert_allclose(out.x['train'].mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(out.x['train'].std(axis=0)[varying], 1, rtol=1e-4)
  # The core's preprocess then changes nothing but the bias feature.
  assert np.all(out.mean == 0) and out.scale == 1.0
  assert out.bias_trick and out.num_features == 155 and out.image_shape is None


def test_a_constant_feature_becomes_zero_not_nan():
  x = np.zeros((10, 8, 8), np.uint8)
  x[:, :, 4:] = 200  # every image the same edge: every HOG value is constant
  ds = array_dataset(x, np.arange(10) % 2, 2, image_shape=(8, 8))
  out = featurize.apply(ds, _cfg(features=('hog',), hog_cell=4))
  assert np.all(out.x['train'] == 0)


def test_no_features_leaves_the_dataset_alone():
  ds = _image_dataset()
  assert featurize.apply(ds, _cfg()) is ds


def test_features_of_flat_data_are_refused():
  ds = datasets.load(_cfg(name='synthetic', num_classes=3, num_examples=50))
  with pytest.raises(DataError, match=r"needs images, but synthetic holds flat .* set "
                                      r"dataset.features=\(\)"):
    featurize.apply(ds, _cfg(features=('hog',)))


def test_unknown_extractor_is_refused_before_the_data_are_read(monkeypatch):
  def never(cfg):
    raise AssertionError('the loader ran')
  monkeypatch.setitem(datasets.LOADERS._items, 'never', never)
  with pytest.raises(ConfigError, match="dataset.features='sift' is not known; choose one of: "
                                        "hog, hue_hist, pixels"):
    datasets.load(_cfg(name='never', features=('hog', 'sift')))


# ----------------------------------------------------------------------------- cache


def test_cache_is_written_read_back_and_keyed_by_the_settings(tmp_path, monkeypatch):
  ds = _image_dataset()
  cfg = _cfg(features=('hog', 'hue_hist'), feature_cache_dir=str(tmp_path))
  first = featurize.apply(ds, cfg)
  files = sorted(os.listdir(tmp_path))
  assert len(files) == 3 and all(f.endswith('.npy') for f in files)
  for f in files:
    assert np.load(tmp_path / f, allow_pickle=False).shape[1] == 154

  def fail(*args, **kw):
    raise AssertionError('features were computed again')
  monkeypatch.setattr(features, 'extract', fail)
  second = featurize.apply(ds, cfg)
  for split in ('train', 'val', 'test'):
    np.testing.assert_array_equal(first.x[split], second.x[split])
  monkeypatch.undo()
  # Other settings, other data: other keys, new files.
  featurize.apply(ds, _cfg(features=('hog',), hog_bins=6, feature_cache_dir=str(tmp_path)))
  featurize.apply(_image_dataset(seed=5), cfg)
  assert len(os.listdir(tmp_path)) == 9


def test_a_damaged_cache_file_is_recomputed(tmp_path):
  ds = _image_dataset()
  cfg = _cfg(features=('hog',), feature_cache_dir=str(tmp_path))
  want = featurize.apply(ds, cfg)
  victim = next(p for p in tmp_path.iterdir() if p.name.endswith('-train.npy'))
  victim.write_bytes(victim.read_bytes()[:100])
  got = featurize.apply(ds, cfg)
  np.testing.assert_array_equal(got.x['train'], want.x['train'])
  assert np.load(victim, allow_pickle=False).shape == (60, 144)  # rewritten


def test_cache_location():
  assert featurize.cache_dir(_cfg(data_dir='/data')) == os.path.join('/data', 'features')
  assert featurize.cache_dir(_cfg(data_dir='/data', feature_cache_dir='/c')) == '/c'
  assert featurize.cache_dir(_cfg()) == ''  # digits, synthetic: nothing is cached


# ----------------------------------------------------------------------------- end to end


def test_synthetic_images_are_seeded_oriented_gratings():
  cfg = _cfg(name='synthetic_images', num_examples=300)
  a, b = datasets.load(cfg), datasets.load(cfg)
  np.testing.assert_array_equal(a.x['train'], b.x['train'])
  assert a.image_shape == (32, 32, 3) and a.x['train'].dtype == np.uint8
  assert a.num_classes == 10 and a.size('train') + a.size('val') + a.size('test') == 300
  # Each class's images have their HOG energy at the class's orientation.
  hog = features.extract(a.x['train'], features.combine(('hog',), (32, 32, 3), cfg))
  energy = hog.reshape(len(hog), -1, 9).sum(axis=1)
  for c in (0, 5):  # 0° → bin 0, 90° → bin 4
    assert np.argmax(energy[a.y['train'] == c].mean(axis=0)) == c * 9 // 10


def test_features_then_svm_beats_raw_pixels_and_chance():
  accuracy = {}
  for feats in ((), ('hog', 'hue_hist')):
    config = default_config(**{'dataset.name': 'synthetic_images', 'dataset.num_examples': 500,
                               'dataset.features': feats, 'dataset.scale': 1 / 255,
                               'dataset.bias_trick': True, 'num_steps': 150,
                               'eval_every_steps': 150, 'optimizer.learning_rate': 0.01})
    ds = datasets.load(config.dataset)
    trainer = Trainer.create(config, ds, [config])
    state = trainer.fit(trainer.init())
    accuracy[feats] = float(trainer.evaluate(state.params, 'val')['accuracy'][0])
  assert accuracy[('hog', 'hue_hist')] > 0.8  # chance: 0.1
  assert accuracy[('hog', 'hue_hist')] > accuracy[()] + 0.3


def _config_module(name):
  sys.path.insert(0, REPO)
  import importlib
  return importlib.import_module(f'configs.{name}')


@pytest.mark.parametrize('name,loss', [('cifar10_features_svm', 'multiclass_svm'),
                                       ('cifar10_features_softmax', 'softmax_cross_entropy')])
def test_cifar10_feature_configs_declare_the_notebook_grid(name, loss):
  c = _config_module(name).get_config()
  assert c.dataset.name == 'cifar10' and c.dataset.features == ('hog', 'hue_hist')
  assert c.loss.name == loss and c.dataset.bias_trick and c.reg.regularize_bias
  assert (c.optimizer.name, c.batch_size, c.num_steps, c.init_scale) == ('sgd', 200, 1500, 1e-3)
  points = sweep.expand(c)
  assert sorted({p['optimizer.learning_rate'] for p in points}) == [1e-9, 1e-8, 1e-7]
  assert sorted({p['reg.strength'] for p in points}) == [5e4, 5e5, 5e6]
  assert len(points) == 9
  single = _config_module(name).get_config('single')
  assert not sweep.is_sweep(single)
  assert (single.optimizer.learning_rate, single.reg.strength) == (1e-7, 5e4)


def _log():
  lines = []
  return lines, lambda *a: lines.append(' '.join(str(x) for x in a))


def test_cifar10_features_config_runs_on_synthetic_images(tmp_path):
  config = _config_module('cifar10_features_svm').get_config()
  config.dataset.name = 'synthetic_images'
  config.num_steps = 500
  lines, log = _log()
  summary = sweep.run(config, str(tmp_path), log=log)
  results = json.loads((tmp_path / 'results.json').read_text())  # the grid's best member
  assert results['val_accuracy'] > 0.6 and results['test_accuracy'] > 0.6  # chance: 0.1
  assert len(summary['members']) == 9 and any('sweep: 9 members' in l for l in lines)
  assert any('D=155' in l for l in lines)
  assert json.loads((tmp_path / 'config.json').read_text())['dataset']['features'] == [
      'hog', 'hue_hist']


def test_digits_features_config_learns():
  """The config's settings reach its expected accuracy (its run through `main`'s path, outputs
  included, is test_configs.py's)."""
  config = _config_module('digits_features').get_config()
  config.num_steps = config.eval_every_steps = 300  # one chunk: one training program
  ds = datasets.load(config.dataset)
  assert ds.num_features == 145  # 16 cells · 9 orientations + bias
  trainer = Trainer.create(config, ds, [config])
  state = trainer.fit(trainer.init())
  assert float(trainer.evaluate(state.params, 'test')['accuracy'][0]) > 0.85


def _bad_request(tmp_path, overrides: dict):
  """A run of the default config with `overrides`; returns its UserError's message."""
  with pytest.raises(UserError) as e:
    experiment.train_and_evaluate(default_config(**overrides), str(tmp_path / 'run'),
                                  log=lambda *a: None)
  assert not (tmp_path / 'run' / 'results.json').exists()
  message = str(e.value)
  assert '\n' not in message
  return message


@pytest.mark.parametrize('overrides,needles', [
    ({'dataset.features': ('hog', 'sift')}, ("dataset.features='sift'", 'hue_hist')),
    ({'dataset.features': ('hue_hist',)}, ('hue_hist needs colour', '8×8')),
    ({'dataset.features': ('hog',), 'dataset.hog_cell': 3},
     ('dataset.hog_cell=3', '8×8', '1, 2, 4, 8')),
    ({'dataset.features': ('hog',), 'dataset.name': 'synthetic', 'dataset.num_classes': 3},
     ('needs images', 'synthetic')),
])
def test_bad_feature_requests_stop_with_one_line(tmp_path, overrides, needles):
  message = _bad_request(tmp_path, overrides)
  for needle in needles:
    assert needle in message, message


def test_bad_feature_request_from_the_command_line_exits_2(tmp_path):
  """The flag's comma-separated list, parsed by main: exit 2 and one line on stderr."""
  proc = run_main(f'--workdir={tmp_path}', '--config.dataset.features=hog,sift')
  assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
  lines = [l for l in proc.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and 'Traceback' not in proc.stderr, proc.stderr
  assert "dataset.features='sift'" in lines[0] and 'hue_hist' in lines[0]
  assert not (tmp_path / 'results.json').exists()


def test_npz_images_that_the_cells_do_not_tile(tmp_path):
  x, y = _images(40, shape=(30, 30, 3))
  np.savez(tmp_path / 'd.npz', x_train=x, y_train=y)
  message = _bad_request(tmp_path, {'dataset.name': 'npz', 'dataset.path': f'{tmp_path}/d.npz',
                                    'batch_size': 10, 'dataset.features': ('hog', 'hue_hist')})
  for needle in ('dataset.hog_cell=8', '30×30', '2, 3, 5, 6, 10, 15, 30'):
    assert needle in message, message


# ------------------------------------------------------------- several processes: by rows
# "Process p of P" in one process, as tests/test_loader_slices.py does: `rows.several` is True
# and `rows.process_block` answers for p. The reference is the one-process pipeline above.

NAMES = ('hog', 'hue_hist')


def _as_process(monkeypatch, p, count):
  real = rows.process_block
  monkeypatch.setattr(rows, 'several', lambda: True)
  monkeypatch.setattr(rows, 'process_block', lambda n, index=None, count_=None: real(
      n, p if index is None else index, count if count_ is None else count_))


def _counting(ds):
  """`ds` with each split's images behind a reader that records the rows of every read."""
  reads = {s: [] for s in SPLITS}
  for s in SPLITS:
    a = np.asarray(ds.x[s])
    ds.x[s] = lazy.Rows(lambda idx, a=a, s=s: (reads[s].append(idx.tolist()), a[idx])[1],
                        a.shape, a.dtype)
  return ds, reads


def _every_block_moments(monkeypatch, train, count):
  """`featurize.block_moments` of each of `count` processes, stacked as `distributed.gathered` would."""
  parts = []
  for q in range(count):
    _as_process(monkeypatch, q, count)
    parts.append(featurize.block_moments(train))
  monkeypatch.undo()
  return np.stack(parts)


@pytest.mark.parametrize('p', [0, 1, 2])
def test_a_process_extracts_the_features_of_its_rows_only(monkeypatch, p):
  """Process p of 3: its blocks' raw features are the one-process ones bit for bit, each of
  its image rows is read once and no other, and with every process's moments its standardized
  features are (raw − μ)/σ of the combined μ, σ exactly, the one-process ones to 1e-6."""
  cfg = _cfg(features=NAMES)
  one = featurize.apply(_image_dataset(), cfg)
  raw = featurize.raw_features(_image_dataset(), NAMES, cfg)
  parts = _every_block_moments(monkeypatch, raw['train'], 3)
  _as_process(monkeypatch, p, 3)
  real = distributed.gathered

  def gathered(a):  # the moments: every process's; the label checks' extremes: p's own
    if np.shape(a) != parts[p].shape:
      return real(a)
    np.testing.assert_array_equal(a, parts[p])
    return parts
  monkeypatch.setattr(distributed, 'gathered', gathered)
  ds, reads = _counting(_image_dataset())
  got = featurize.apply(ds, cfg)
  blocks = {s: process_block(ds.size(s), p, 3) for s in SPLITS}
  out = {s: got.x[s][slice(*blocks[s])] for s in SPLITS}  # the rows a process uses
  mean, std = featurize.combine_moments(parts)
  for s, (start, stop) in blocks.items():
    assert isinstance(got.x[s], lazy.Rows) and got.x[s].shape == (ds.size(s), 154)
    assert sorted(sum(reads[s], [])) == list(range(start, stop)), s  # once each, no other
    np.testing.assert_array_equal(out[s], ((raw[s][start:stop] - mean) / std).astype(np.float32))
    np.testing.assert_allclose(out[s], one.x[s][start:stop], rtol=1e-6, atol=1e-6)
  mine = featurize.rows_of_features(_image_dataset(), NAMES, cfg)
  for s, (start, stop) in blocks.items():
    np.testing.assert_array_equal(mine[s][start:stop], raw[s][start:stop])
  assert np.all(got.mean == 0) and got.scale == 1.0 and got.image_shape is None


@pytest.mark.parametrize('count', [1, 3, 4, 61])
def test_moments_combined_over_processes_are_one_process_mean_and_std(monkeypatch, count):
  """Every process's block moments, combined, give NumPy's float64 mean and std of all rows to
  1e-6: the HOG/hue features (61 processes: the last block empty), a feature near 1e6 with a
  spread of 1e-3 (a sum of squares would cancel it away), and a constant one (σ → 1)."""
  raw = featurize.raw_features(_image_dataset(), NAMES, _cfg(features=NAMES))['train']
  rng = np.random.default_rng(1)
  extra = np.stack([1e6 + 1e-3 * rng.standard_normal(len(raw)), np.full(len(raw), 7.0)], 1)
  train = np.concatenate([raw.astype(np.float64), extra], axis=1)
  mean, std = featurize.combine_moments(_every_block_moments(monkeypatch, train, count))
  want_std = train.std(axis=0)
  assert want_std[-1] == 0 and std[-1] == 1.0
  np.testing.assert_allclose(mean, train.mean(axis=0), rtol=1e-6, atol=1e-12)
  np.testing.assert_allclose(std[:-1], want_std[:-1], rtol=1e-6, atol=1e-12)
  s_mean, s_std = featurize.combine_moments(_every_block_moments(monkeypatch, raw, count))
  want = featurize.standardize({'train': raw})['train']  # what one process's constants give
  np.testing.assert_allclose(((raw - s_mean) / s_std).astype(np.float32), want, rtol=1e-6,
                             atol=1e-6)


def test_a_multi_process_load_neither_reads_nor_writes_the_feature_cache(tmp_path, monkeypatch):
  cfg = _cfg(features=NAMES, feature_cache_dir=str(tmp_path))
  featurize.apply(_image_dataset(), cfg)  # one process writes the cache
  assert len(os.listdir(tmp_path)) == 3
  monkeypatch.setattr(featurize, 'cache_key', lambda *a: pytest.fail('fingerprinted the data'))
  monkeypatch.setattr(featurize, '_load_cached', lambda *a: pytest.fail('read the cache'))
  _as_process(monkeypatch, 0, 2)
  got = featurize.apply(_image_dataset(), _cfg(features=('hog',), feature_cache_dir=str(
      tmp_path)))
  assert got.x['train'][:30].shape == (30, 144) and len(os.listdir(tmp_path)) == 3
