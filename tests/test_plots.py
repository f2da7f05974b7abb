"""Pictures: panel counts, pixel sizes, weight templates reshaped to the image shape."""

import os

import numpy as np
import pytest
from matplotlib import image as mpimg

from hinge_jax import experiment, plots
from hinge_jax.errors import UserError
from helpers import default_config, run_main

ROWS = [{'step': s, 'loss': 1 / s, 'val_loss': 1.2 / s, 'batch_loss': None if s == 20 else 1.1 / s,
         'train_accuracy': 1 - 1 / s, 'val_accuracy': 1 - 1.5 / s} for s in (10, 20, 30)]


def _png_size(path):
  height, width = mpimg.imread(path).shape[:2]
  return width, height


def test_curves_have_one_panel_each_and_fixed_size(tmp_path):
  for make, name in ((plots.loss_figure, 'loss'), (plots.accuracy_figure, 'accuracy')):
    fig = make(ROWS)
    assert len(fig.axes) == 1
    lines = fig.axes[0].get_lines()
    assert len(lines) == (3 if name == 'loss' else 2)
    np.testing.assert_array_equal(lines[0].get_xdata(), [10, 20, 30])
    path = plots.save(fig, str(tmp_path / f'{name}.png'))
    assert _png_size(path) == (640, 400)
  batch = plots.loss_figure(ROWS).axes[0].get_lines()[2].get_ydata()
  assert np.isnan(batch[1]) and batch[0] == pytest.approx(0.11)  # None (NaN in JSON) → gap


def test_digit_templates_are_the_weight_rows_as_8x8_images():
  w = np.random.default_rng(0).normal(size=(10, 64))  # (C, D)
  images = plots.template_images(w, (8, 8), bias_column=False)
  assert images.shape == (10, 8, 8)
  for c in range(10):
    np.testing.assert_array_equal(images[c], w[c].reshape(8, 8))
  with_bias = np.hstack([w, np.full((10, 1), 99.0)])  # the bias trick's last column is dropped
  np.testing.assert_array_equal(plots.template_images(with_bias, (8, 8), bias_column=True), images)
  fig = plots.templates_figure(images, [str(i) for i in range(10)])
  assert len(fig.axes) == 10
  assert all(ax.images[0].get_array().shape == (8, 8) for ax in fig.axes)
  assert [ax.get_title() for ax in fig.axes] == [str(i) for i in range(10)]


def test_colour_templates_channels_last_and_first():
  rng = np.random.default_rng(1)
  w = rng.normal(size=(2, 4 * 5 * 3))
  last = plots.template_images(w, (4, 5, 3), bias_column=False)
  assert last.shape == (2, 4, 5, 3) and last.min() == 0.0 and last.max() == 1.0
  ref = w.reshape(2, 4, 5, 3)
  np.testing.assert_allclose(last, (ref - ref.min()) / (ref.max() - ref.min()))
  first = plots.template_images(w, (3, 4, 5), bias_column=False)
  np.testing.assert_allclose(first, np.moveaxis(w.reshape(2, 3, 4, 5), 1, -1).__sub__(
      ref.min()) / (ref.max() - ref.min()))
  assert plots.template_images(w, None, bias_column=False) is None  # not images
  assert plots.template_images(w, (7, 7), bias_column=False) is None  # sizes disagree


def test_confusion_panel_shows_the_counts():
  conf = np.array([[5, 1], [0, 4]])
  fig = plots.confusion_figure(conf, ['cat', 'dog'])
  assert len(fig.axes) == 1
  np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), conf)
  assert sorted(t.get_text() for t in fig.axes[0].texts) == ['0', '1', '4', '5']


@pytest.fixture(scope='module')
def digits_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('digits'))
  config = default_config(**{'num_steps': 40, 'eval_every_steps': 10,
                             'checkpoint_every_steps': 20, 'sanity.enabled': False})
  experiment.train_and_evaluate(config, workdir, log=lambda line: None)
  return workdir


def test_a_digits_run_draws_four_pictures(digits_run):
  paths = {f: os.path.join(digits_run, 'plots', f) for f in sorted(os.listdir(
      os.path.join(digits_run, 'plots')))}
  assert list(paths) == ['accuracy.png', 'confusion.png', 'loss.png', 'templates.png']
  assert _png_size(paths['loss.png']) == (640, 400)
  assert _png_size(paths['confusion.png']) == (600, 600)
  assert _png_size(paths['templates.png']) == (1200, 140)  # ten 8×8 panels in one row


def test_plot_command_redraws_from_saved_files(digits_run, tmp_path):
  plots_dir = os.path.join(digits_run, 'plots')
  before = {f: _png_size(os.path.join(plots_dir, f)) for f in os.listdir(plots_dir)}
  for f in before:
    os.remove(os.path.join(plots_dir, f))
  proc = run_main(f'--workdir={digits_run}', module='hinge_jax.plot')
  assert proc.returncode == 0, proc.stderr
  assert {f: _png_size(os.path.join(plots_dir, f)) for f in os.listdir(plots_dir)} == before
  with pytest.raises(UserError, match=r'has no results.json, metrics.jsonl, params.npz; give '
                                      r'the workdir of a finished run'):
    plots.redraw(str(tmp_path))
  with pytest.raises(UserError, match='is not a directory'):
    plots.redraw(str(tmp_path / 'nope'))


def test_non_image_data_get_no_templates(tmp_path):
  config = default_config(**{'dataset.name': 'synthetic', 'dataset.num_examples': 300,
                             'dataset.num_features': 6, 'dataset.num_classes': 3,
                             'num_steps': 20, 'eval_every_steps': 10, 'batch_size': 50,
                             'sanity.enabled': False})
  experiment.train_and_evaluate(config, str(tmp_path), log=lambda line: None)
  assert sorted(os.listdir(tmp_path / 'plots')) == ['accuracy.png', 'confusion.png', 'loss.png']


def test_sweep_and_landscape_pictures(tmp_path):
  rows = [{'member': i, 'optimizer.learning_rate': lr, 'reg.strength': reg,
           'val_accuracy': None if i == 3 else 0.5 + 0.1 * i, 'diverged': i == 3}
          for i, (lr, reg) in enumerate([(0.01, 0.1), (0.01, 1.0), (0.1, 0.1), (0.1, 1.0)])]
  path = plots.draw_sweep(str(tmp_path), rows, ['optimizer.learning_rate', 'reg.strength'])
  assert path == str(tmp_path / 'plots' / 'sweep.png') and _png_size(path) == (600, 450)
  fig = plots.sweep_figure(rows, ['optimizer.learning_rate', 'reg.strength'])
  assert fig.axes[0].get_xscale() == 'log' and fig.axes[0].get_yscale() == 'log'
  assert fig.axes[0].get_legend() is not None  # the diverged member is marked
  line = plots.sweep_figure(rows, ['optimizer.learning_rate']).axes[0].get_lines()
  np.testing.assert_array_equal(line[0].get_ydata(), [0.5, 0.6, 0.7, np.nan])
  a = np.linspace(-1.0, 1.0, 5)
  s = {'a': a, 'loss_1d': a ** 2, 'a_2d': a, 'b_2d': a, 'loss_2d': np.add.outer(a ** 2, a ** 2)}
  paths = plots.draw_landscape(s, str(tmp_path), 'title')
  assert [os.path.basename(p) for p in paths] == ['landscape_1d.png', 'landscape_2d.png']
  assert [_png_size(p) for p in paths] == [(600, 420), (600, 504)]
