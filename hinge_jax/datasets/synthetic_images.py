"""`synthetic_images`: seeded CIFAR-shaped images whose class is an edge orientation.

Image i of class c is a sinusoidal grating, 32×32×3 uint8, whose intensity gradient points
at θ = 180°·(c + u)/C (u uniform in ±0.25: half a class width of jitter), with
a random period (4–8 pixels), a random phase, a random colour (independent of the class) and
Gaussian pixel noise (σ = 24). The class is the orientation of the edges: HOG sees it
directly, while raw pixels (random phase, random colour) leave a linear classifier near
chance, and the hue histogram carries no signal at all. For feature pipeline tests and demos,
no download needed.
"""

import numpy as np

from hinge_jax.datasets.base import Dataset, finalize
from hinge_jax.datasets.loaders import LOADERS, common, split
from hinge_jax.errors import DataError

SIZE = 32


def gratings(labels: np.ndarray, num_classes: int, rng: np.random.Generator, *,
             jitter: float = 0.5, noise: float = 24.0) -> np.ndarray:
  """`(N, 32, 32, 3)` uint8 gratings, stripe orientation set by each label (see module doc)."""
  n = len(labels)
  theta = np.pi * (labels + rng.uniform(-jitter / 2, jitter / 2, n)) / num_classes
  period = rng.uniform(4.0, 8.0, n)
  phase = rng.uniform(0, 2 * np.pi, n)
  rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
  # The intensity varies along (cos θ, sin θ): the gradient points that way, the stripes across.
  along = np.cos(theta)[:, None, None] * cols + np.sin(theta)[:, None, None] * rows
  wave = np.sin(2 * np.pi * along / period[:, None, None] + phase[:, None, None])
  colour = rng.uniform(0.3, 1.0, (n, 1, 1, 3))
  images = 128 + 100 * wave[..., None] * colour + noise * rng.standard_normal((n, SIZE, SIZE, 3))
  return np.clip(np.rint(images), 0, 255).astype(np.uint8)


@LOADERS.register('synthetic_images')
def load_synthetic_images(cfg) -> Dataset:
  """`dataset.num_examples` gratings of `dataset.num_classes` (0: 10) orientation classes."""
  n = int(cfg.get('num_examples', 2000))
  c = int(cfg.get('num_classes', 0) or 10)
  if n < 3 or c < 2:
    raise DataError(f'synthetic_images: dataset.num_examples={n} must be at least 3 and '
                    f'dataset.num_classes={c} at least 2')
  rng = np.random.default_rng(int(cfg.get('split_seed', 0)))
  y = rng.integers(0, c, n).astype(np.int32)
  x, y = split(cfg, gratings(y, c, rng).reshape(n, -1), y)
  return finalize('synthetic_images', x, y, num_classes=c, image_shape=(SIZE, SIZE, 3),
                  class_names=[f'{180 * k / c:g}°' for k in range(c)], **common(cfg))
