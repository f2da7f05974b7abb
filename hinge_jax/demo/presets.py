"""The demo's preset data sets: the lecture's 9 points, Gaussian blobs, and a set no line
separates. Points lie in the page's view, [-2, 2]²; blobs and rings are drawn from a seed."""

import numpy as np

from hinge_jax.demo import schema

# The course demo's nine points, three per class (class 0 upper right, 1 upper left, 2 below).
LECTURE = (
    ((0.5, 0.4), 0), ((0.8, 0.3), 0), ((0.3, 0.8), 0),
    ((-0.4, 0.3), 1), ((-0.3, 0.7), 1), ((-0.7, 0.2), 1),
    ((0.7, -0.4), 2), ((0.5, -0.6), 2), ((-0.4, -0.5), 2),
)


def lecture(seed: int) -> tuple[np.ndarray, np.ndarray]:
  del seed
  return (np.array([p for p, _ in LECTURE], np.float64), np.array([c for _, c in LECTURE]))


def blobs(seed: int, per_class: int = 20) -> tuple[np.ndarray, np.ndarray]:
  """Three Gaussian blobs (σ = 0.35) centred on a circle of radius 1.1, at random angles."""
  rng = np.random.default_rng(seed)
  angle = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(schema.NUM_CLASSES) / 3
  centres = 1.1 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
  y = np.repeat(np.arange(schema.NUM_CLASSES), per_class)
  return centres[y] + 0.35 * rng.standard_normal((len(y), 2)), y


def rings(seed: int, per_class: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """Class 0 in a disc, classes 1 and 2 in rings around it: no line separates them."""
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(schema.NUM_CLASSES), per_class)
  radius = np.array([0.0, 0.8, 1.5])[y] + rng.uniform(0.1, 0.4, len(y))
  angle = rng.uniform(0, 2 * np.pi, len(y))
  return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1), y


PRESETS = {'lecture': lecture, 'blobs': blobs, 'rings': rings}


def preset(data: dict) -> dict:
  """`{"name": ..., "seed": int}` → `{"points": [[x, y], ...], "labels": [...]}` (3 decimals)."""
  name = data.get('name')
  if name not in PRESETS:
    raise schema.RequestError(f'preset {name!r} is not known; choose one of: '
                              f'{", ".join(PRESETS)}')
  seed = data.get('seed', 0)
  if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
    raise schema.RequestError(f'seed={seed!r} must be an integer in 0..2**32-1')
  x, y = PRESETS[name](seed)
  return {'points': np.round(x, 3).tolist(), 'labels': [int(c) for c in y]}
