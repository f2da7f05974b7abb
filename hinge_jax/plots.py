"""Every picture the package draws, as PNG files: a run's, a sweep's and a landscape's.

A run's `workdir/plots/`: `loss.png` (training objective, validation loss and mean batch loss
against the step), `accuracy.png` (train/val accuracy), `templates.png` (each class's weight
column reshaped to the dataset's image shape, as Lecture 3 shows them; image data only) and
`confusion.png` (the test split's confusion matrix); a sweep adds `sweep.png`; the landscape
tool writes `landscape_1d.png` and `landscape_2d.png`. Figures use matplotlib's object API
on the Agg canvas (no pyplot, no display, no global state) at fixed sizes, so the files have
known pixel sizes. `draw_all` (the `python -m hinge_jax.plot --workdir=DIR` command) redraws
a finished run's pictures from its saved `results.json`, `metrics.jsonl` and `params.npz`.
"""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from hinge_jax import io_utils
from hinge_jax.errors import UserError

if TYPE_CHECKING:
  from matplotlib.figure import Figure

DPI = 100
CURVE_SIZE = (6.4, 4.0)  # inches: 640×400 pixels
CONFUSION_SIZE = (6.0, 6.0)
TEMPLATE_CELL = (1.2, 1.4)  # inches per class image (title included)
TEMPLATES_PER_ROW = 10


def _figure(size, dpi: int = DPI) -> Figure:
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib loads on demand
  from matplotlib.figure import Figure
  fig = Figure(figsize=size, dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  """Steps and values of one metric (None, i.e. NaN/inf in JSON, becomes NaN)."""
  pairs = [(r['step'], np.nan if r.get(key) is None else r[key]) for r in rows if key in r]
  if not pairs:
    return np.zeros(0), np.zeros(0)
  steps, values = zip(*pairs)
  return np.asarray(steps, float), np.asarray(values, float)


def loss_figure(rows: Sequence[dict]) -> Figure:
  """One panel: the training objective, validation loss and mean batch loss by step."""
  fig = _figure(CURVE_SIZE)
  ax = fig.add_subplot()
  for key, label in (('loss', 'train objective (data + λR)'), ('val_loss', 'val loss'),
                     ('batch_loss', 'mean batch loss')):
    steps, values = _series(rows, key)
    if len(steps):
      ax.plot(steps, values, marker='.', label=label)
  ax.set_xlabel('step')
  ax.set_ylabel('loss')
  ax.set_title('Loss')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  return fig


def accuracy_figure(rows: Sequence[dict]) -> Figure:
  """One panel: train and validation accuracy by step."""
  fig = _figure(CURVE_SIZE)
  ax = fig.add_subplot()
  for key, label in (('train_accuracy', 'train'), ('val_accuracy', 'val')):
    steps, values = _series(rows, key)
    if len(steps):
      ax.plot(steps, values, marker='.', label=label)
  ax.set_xlabel('step')
  ax.set_ylabel('accuracy')
  ax.set_ylim(0, 1.02)
  ax.set_title('Accuracy')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  return fig


def _as_hwc(image_shape: Sequence[int]) -> tuple[tuple, Optional[tuple]]:
  """The display shape `(H, W[, ch])`, and an axis order if the data are channels-first."""
  shape = tuple(int(s) for s in image_shape)
  if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
    return (shape[1], shape[2], shape[0]), (1, 2, 0)
  return shape, None


def template_images(weights: np.ndarray, image_shape: Optional[Sequence[int]], *,
                    bias_column: bool) -> Optional[np.ndarray]:
  """Each class's weights as an image: `(C, H, W)` (grey) or `(C, H, W, 3)` (colour).

  Args:
    weights: `(C, D)` W, with the bias as its last column when `bias_column` (the bias trick).
    image_shape: the shape of one example before flattening, e.g. `(8, 8)` or `(32, 32, 3)`.
    bias_column: drop W's last column (the bias) before reshaping.

  Returns:
    Grey images hold W's values unchanged; colour images are rescaled to [0, 1] with one
    min and max over all classes (as in the CS231n assignment). None when the data are not
    images (no `image_shape`, or its size does not match W's columns).
  """
  if not image_shape:
    return None
  w = np.asarray(weights, np.float64)
  if bias_column:
    w = w[:, :-1]
  shape, order = _as_hwc(image_shape)
  if w.shape[1] != int(np.prod(shape)):
    return None
  per_class = w.reshape((w.shape[0],) + tuple(image_shape))
  if order is not None:
    per_class = per_class.transpose((0,) + tuple(a + 1 for a in order))
  if len(shape) == 3 and shape[-1] == 1:
    per_class = per_class[..., 0]
  elif len(shape) == 3:
    low, high = per_class.min(), per_class.max()
    per_class = (per_class - low) / (high - low) if high > low else np.zeros_like(per_class)
  return per_class


def templates_figure(images: np.ndarray, class_names: Sequence[str]) -> Figure:
  """One small panel per class (`images` from `template_images`), 10 to a row."""
  c = images.shape[0]
  cols = min(c, TEMPLATES_PER_ROW)
  rows = math.ceil(c / cols)
  fig = _figure((TEMPLATE_CELL[0] * cols, TEMPLATE_CELL[1] * rows))
  grey = images.ndim == 3
  limit = float(np.max(np.abs(images))) if grey and images.size else 1.0
  for i in range(c):
    ax = fig.add_subplot(rows, cols, i + 1)
    if grey:  # one symmetric scale for all classes: bright = positive weight, dark = negative
      ax.imshow(images[i], cmap='gray', vmin=-limit, vmax=limit, interpolation='nearest')
    else:
      ax.imshow(images[i], interpolation='nearest')
    ax.set_title(str(class_names[i]) if i < len(class_names) else str(i), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle('Weight templates', fontsize=10)
  fig.tight_layout()
  return fig


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str],
                     split: str = 'test') -> Figure:
  """One panel: rows are true classes, columns predicted ones, with counts written in."""
  conf = np.asarray(confusion)
  c = conf.shape[0]
  fig = _figure(CONFUSION_SIZE)
  ax = fig.add_subplot()
  ax.imshow(conf, cmap='Blues', interpolation='nearest')
  names = [str(n) for n in class_names] or [str(i) for i in range(c)]
  if c <= 30:
    ax.set_xticks(range(c), names, rotation=90 if c > 10 else 0, fontsize=8)
    ax.set_yticks(range(c), names, fontsize=8)
  if c <= 20:
    threshold = conf.max() / 2 if conf.size else 0
    for i in range(c):
      for j in range(c):
        ax.text(j, i, str(int(conf[i, j])), ha='center', va='center', fontsize=7,
                color='white' if conf[i, j] > threshold else 'black')
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(f'Confusion matrix ({split}, {int(conf.sum())} examples)')
  fig.tight_layout()
  return fig


def save(fig: Figure, path: str) -> str:
  """Writes a figure as PNG (at the figure's dpi) atomically: a temporary file renamed (and
  removed when the write fails)."""
  with io_utils.replacing(path, '.png') as tmp:
    fig.savefig(tmp, dpi=fig.dpi, format='png')
  return path


def draw(workdir: str, *, rows: Sequence[dict], results: dict, params: dict,
         image_shape: Optional[Sequence[int]], bias_column: bool) -> dict:
  """Writes every plot of a run to `workdir/plots/`; returns `{name: path}`."""
  out_dir = os.path.join(workdir, 'plots')
  os.makedirs(out_dir, exist_ok=True)
  names = results.get('class_names', [])
  paths = {'loss': save(loss_figure(rows), os.path.join(out_dir, 'loss.png')),
           'accuracy': save(accuracy_figure(rows), os.path.join(out_dir, 'accuracy.png'))}
  images = (template_images(params['W'], image_shape, bias_column=bias_column)
            if 'W' in params else None)
  if images is not None:
    paths['templates'] = save(templates_figure(images, names),
                              os.path.join(out_dir, 'templates.png'))
  splits = results.get('splits', {})
  split = 'test' if splits.get('test', {}).get('size') else 'val'
  if split in splits and splits[split].get('confusion_matrix') is not None:
    paths['confusion'] = save(confusion_figure(splits[split]['confusion_matrix'], names, split),
                              os.path.join(out_dir, 'confusion.png'))
  return paths


def draw_all(workdir: str) -> dict:
  """Redraws the plots from the saved `results.json`, `metrics.jsonl` and `params.npz`."""
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  rows = io_utils.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))
  with np.load(os.path.join(workdir, 'params.npz')) as f:
    params = {k: f[k] for k in f.files}
  config = results.get('config', {})
  return draw(workdir, rows=rows, results=results, params=params,
              image_shape=results.get('image_shape'),
              bias_column=bool(config.get('dataset', {}).get('bias_trick', False)))


SWEEP_SIZE = (6, 4.5)


def sweep_figure(rows: Sequence[dict], fields: Sequence[str]) -> Figure:
  """Validation accuracy over the swept fields: a line (one field) or coloured squares."""
  acc = np.array([r['val_accuracy'] if r['val_accuracy'] is not None else np.nan for r in rows],
                 float)
  fig = _figure(SWEEP_SIZE)
  ax = fig.add_subplot()
  x = np.array([r[fields[0]] for r in rows], float)
  if len(fields) >= 2:
    y = np.array([r[fields[1]] for r in rows], float)
    sc = ax.scatter(x, y, c=acc, cmap='viridis', s=max(400 / math.sqrt(len(rows)), 20),
                    marker='s')
    fig.colorbar(sc, ax=ax, label='validation accuracy')
    diverged = np.array([bool(r['diverged']) for r in rows])
    if diverged.any():
      ax.scatter(x[diverged], y[diverged], marker='x', c='red', label='diverged')
      ax.legend(loc='best')
    ax.set_ylabel(fields[1])
    if np.all(y > 0):
      ax.set_yscale('log')
  else:
    ax.plot(x, acc, 'o')
    ax.set_ylabel('validation accuracy')
  ax.set_xlabel(fields[0])
  if np.all(x > 0):
    ax.set_xscale('log')
  ax.set_title('sweep: validation accuracy per member')
  fig.tight_layout()
  return fig


def draw_sweep(workdir: str, rows: Sequence[dict], fields: Sequence[str]) -> str:
  """plots/sweep.png: validation accuracy over the swept fields (log axes where positive)."""
  os.makedirs(os.path.join(workdir, 'plots'), exist_ok=True)
  return save(sweep_figure(rows, fields), os.path.join(workdir, 'plots', 'sweep.png'))


LANDSCAPE_DPI = 120
LANDSCAPE_1D_SIZE = (5, 3.5)
LANDSCAPE_2D_SIZE = (5, 4.2)


def draw_landscape(s: dict, workdir: str, title: str) -> list[str]:
  """landscape_1d.png (the 1-D slice, a line) and landscape_2d.png (filled contours)."""
  fig = _figure(LANDSCAPE_1D_SIZE, LANDSCAPE_DPI)
  ax = fig.add_subplot()
  ax.plot(s['a'], s['loss_1d'])
  ax.set_xlabel('a')
  ax.set_ylabel('L(W + a·W1)')
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  paths = [save(fig, os.path.join(workdir, 'landscape_1d.png'))]
  fig = _figure(LANDSCAPE_2D_SIZE, LANDSCAPE_DPI)
  ax = fig.add_subplot()
  cs = ax.contourf(s['a_2d'], s['b_2d'], s['loss_2d'].T, levels=30, cmap='viridis')
  fig.colorbar(cs, ax=ax, label='L(W + a·W1 + b·W2)')
  ax.set_xlabel('a')
  ax.set_ylabel('b')
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  paths.append(save(fig, os.path.join(workdir, 'landscape_2d.png')))
  return paths


def redraw(workdir: str) -> dict:
  """`draw_all` for the plot command: a workdir without a finished run is a UserError."""
  missing = [f for f in ('results.json', 'metrics.jsonl', 'params.npz')
             if not os.path.isfile(os.path.join(workdir, f))]
  if not os.path.isdir(workdir) or missing:
    what = 'is not a directory' if not os.path.isdir(workdir) else f'has no {", ".join(missing)}'
    raise UserError(f'--workdir={workdir} {what}; give the workdir of a finished run')
  try:
    return draw_all(workdir)
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f'cannot draw the plots of {workdir} ({type(e).__name__}: {e})')
