"""Hand-designed image features: a hue histogram and HOG, pure and `jit`/`vmap`-compiled.

The lecture's aside (and assignment 1's features notebook) trains the linear classifiers on
features instead of raw pixels: a colour histogram of the hue channel (HSV space) and a
histogram of oriented gradients (HOG) of the grayscale image. Each extractor here works on
ONE image, `(H, W, 3)` or `(H, W)`, uint8 (0..255) or float, and returns a `(F,)` float32
vector; `extract` runs it over a stack of images in fixed-size `jit(vmap(...))` batches.

Extractors are chosen by name (`dataset.features = ('hog', 'hue_hist')`) from the registry
`EXTRACTORS`. A registered builder reads its settings from the dataset config and the image
shape, refuses what it cannot handle with one line, and returns an `Extractor`; to add one:

  @EXTRACTORS.register('my_feature')
  def _my_feature(image_shape, cfg) -> Extractor:
    return Extractor(fn=my_feature_fn, settings={'...': ...}, dim=...)
"""

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hinge_jax.errors import ConfigError, DataError
from hinge_jax.registry import Registry

Array = jax.Array

# ITU-R BT.601 luma weights. The assignment's `rgb2gray` has 0.144 for blue, a typo for 0.114
# (its weights sum to 1.03); the difference is a slight re-weighting of blue edges.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------- colour


def hue(rgb: Array) -> Array:
  """The hue of `(..., 3)` RGB values (any scale: hue is scale-free), in [0, 1).

  With M = max(r, g, b), m = min(r, g, b), Δ = M − m:
    h = ((g − b)/Δ mod 6)/6 if M = r,  ((b − r)/Δ + 2)/6 if M = g,  ((r − g)/Δ + 4)/6 if M = b,
    h = 0 if Δ = 0 (grays), with the tie order r, g, b of Python's `colorsys.rgb_to_hsv`.

  Returns:
    `(...)` float32.
  """
  rgb = jnp.asarray(rgb, jnp.float32)
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  v = jnp.maximum(r, jnp.maximum(g, b))
  delta = v - jnp.minimum(r, jnp.minimum(g, b))
  safe = jnp.where(delta > 0, delta, 1.0)
  h = jnp.where(v == r, (g - b) / safe, jnp.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
  h = jnp.where(delta > 0, h, 0.0)
  h = jnp.where(h < 0, h + 6, h) / 6
  return jnp.where(h >= 1, h - 1, h)  # −ε + 6 rounds to 6 in float32: that hue is 0


def rgb_to_hsv(rgb: Array) -> Array:
  """RGB → HSV, elementwise over `(..., 3)`; every channel in [0, 1], hue in [0, 1).

  h as in `hue`; s = Δ/M (0 if M = 0); v = M, with M = max(r, g, b), Δ = M − min(r, g, b).
  The same convention as Python's `colorsys.rgb_to_hsv`.

  Args:
    rgb: `(..., 3)` float values in [0, 1] (uint8 callers divide by 255 first).

  Returns:
    `(..., 3)` float32 (h, s, v).
  """
  rgb = jnp.asarray(rgb, jnp.float32)
  v = jnp.max(rgb, axis=-1)
  delta = v - jnp.min(rgb, axis=-1)
  s = jnp.where(v > 0, delta / jnp.where(v > 0, v, 1.0), 0.0)
  return jnp.stack([hue(rgb), s, v], axis=-1)


def hue_histogram(image: Array, *, bins: int = 10, normalized: bool = True) -> Array:
  """Histogram of the hue channel of one RGB image.

  Hue h ∈ [0, 1) falls in bin ⌊h·bins⌋ (equal-width bins over the hue circle, as the
  assignment's `color_histogram_hsv`; grays have h = 0 and count in bin 0).

  Args:
    image: `(H, W, 3)` RGB, uint8 or float (the hue does not depend on the value scale).
    bins: the number of hue bins.
    normalized: divide the counts by H·W (then the histogram sums to 1).

  Returns:
    `(bins,)` float32 counts (or fractions).
  """
  h = hue(image).reshape(-1)
  idx = jnp.clip(jnp.floor(h * bins).astype(jnp.int32), 0, bins - 1)
  counts = jnp.bincount(idx, length=bins).astype(jnp.float32)  # a scatter-add, not a one-hot sum
  return counts / h.shape[0] if normalized else counts


# ----------------------------------------------------------------------------- HOG


def to_gray(image: Array) -> Array:
  """`(H, W, 3)` RGB → `(H, W)` luma Σ_c w_c·x_c (`GRAY_WEIGHTS`); `(H, W)` passes through."""
  image = jnp.asarray(image, jnp.float32)
  if image.ndim == 2:
    return image
  return image @ jnp.asarray(GRAY_WEIGHTS, jnp.float32)


def gradients(gray: Array) -> tuple[Array, Array]:
  """Forward differences, as the assignment's `hog_feature` (`np.diff`), zero on the far edge.

  g_x[i, j] = I[i, j+1] − I[i, j] (0 in the last column), g_y[i, j] = I[i+1, j] − I[i, j]
  (0 in the last row). Unlike central differences they see one-pixel stripes.

  Returns:
    `(g_x, g_y)`, each `(H, W)`.
  """
  gx = jnp.pad(gray[:, 1:] - gray[:, :-1], ((0, 0), (0, 1)))
  gy = jnp.pad(gray[1:, :] - gray[:-1, :], ((0, 1), (0, 0)))
  return gx, gy


def orientation_bins(gx: Array, gy: Array, bins: int) -> Array:
  """The bin ⌊θ·bins/180°⌋ of the unsigned orientation θ = atan2(g_y, g_x) mod 180°.

  Without an arctangent (the costliest step otherwise): negating g keeps θ mod 180°, so g is
  first folded into the half plane θ ∈ [0°, 180°); there θ ≥ φ ⇔ sin(θ − φ) ≥ 0 ⇔
  g_y·cos φ − g_x·sin φ ≥ 0, and the bin counts the edges φ_k = 180°·k/bins, k = 1..bins−1,
  that θ has passed.

  Returns:
    int32 bins, the shape of `gx`.
  """
  flip = (gy < 0) | ((gy == 0) & (gx < 0))
  gx, gy = jnp.where(flip, -gx, gx), jnp.where(flip, -gy, gy)
  edges = np.pi * np.arange(1, bins) / bins
  cos, sin = jnp.asarray(np.cos(edges), jnp.float32), jnp.asarray(np.sin(edges), jnp.float32)
  edge_shape = (1,) * gx.ndim + (-1,)
  passed = cos.reshape(edge_shape) * gy[..., None] - sin.reshape(edge_shape) * gx[..., None] >= 0
  return jnp.sum(passed, axis=-1, dtype=jnp.int32)


def hog(image: Array, *, cell: int = 8, bins: int = 9) -> Array:
  """Histogram of oriented gradients of one image: per cell, the mean magnitude per orientation.

  On the grayscale image I: gradients g = (g_x, g_y) by forward differences, magnitude ‖g‖,
  unsigned orientation θ = atan2(g_y, g_x) mod 180° (so bin 0 holds horizontal gradients, the
  edges of vertical stripes). Pixel (i, j) adds ‖g‖ to bin ⌊θ·bins/180°⌋ of its cell; each
  cell's histogram is divided by cell² (the mean over the cell, the assignment's
  `uniform_filter`), and the cells' histograms are concatenated in row-major cell order,
  bins fastest: (H/cell)·(W/cell)·bins values, 144 on a 32×32 image.

  Differences from the assignment's code, which counts only gradients with g_x > 0 (it shifts
  atan2 by +90° and drops angles outside [0°, 180°)): every gradient is counted, with the
  orientation taken mod 180°.

  Args:
    image: `(H, W, 3)` RGB or `(H, W)` gray, uint8 or float; H and W multiples of `cell`.
    cell: the cell's side in pixels.
    bins: orientation bins over [0°, 180°).

  Returns:
    `((H/cell)·(W/cell)·bins,)` float32.
  """
  gray = to_gray(image)
  height, width = gray.shape
  if height % cell or width % cell:
    raise ValueError(f'image {height}×{width} is not a whole number of {cell}×{cell} cells')
  gx, gy = gradients(gray)
  magnitude = jnp.sqrt(gx * gx + gy * gy)
  rows, cols = np.indices((height, width))
  cell_of_pixel = (rows // cell) * (width // cell) + cols // cell  # a constant, row-major cells
  slot = cell_of_pixel * bins + orientation_bins(gx, gy, bins)
  total = jnp.bincount(slot.reshape(-1), weights=magnitude.reshape(-1),
                       length=(height // cell) * (width // cell) * bins)
  return total / cell**2


# ----------------------------------------------------------------------------- registry


@dataclasses.dataclass(frozen=True)
class Extractor:
  """One configured extractor.

  Attributes:
    fn: one image (`(H, W, 3)` or `(H, W)`) → `(dim,)` float32; pure and traceable.
    settings: everything that changes the output (it keys the feature cache).
    dim: the length of the output.
  """
  fn: Callable[[Array], Array]
  settings: dict
  dim: int

  @functools.cached_property
  def batched(self) -> Callable[[Array], Array]:
    """`jit(vmap(fn))`: `(B, ...)` images → `(B, dim)`; compiled once per batch shape."""
    return jax.jit(jax.vmap(self.fn))


EXTRACTORS: Registry[Callable[[tuple, object], Extractor]] = Registry('dataset.features')


def _is_rgb(image_shape: tuple) -> bool:
  return len(image_shape) == 3 and image_shape[2] == 3


def _positive_int(cfg, field: str, default: int) -> int:
  value = cfg.get(field, default)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ConfigError(f'dataset.{field}={value!r} must be a positive integer')
  return value


@EXTRACTORS.register('hue_hist')
def _hue_hist(image_shape: tuple, cfg) -> Extractor:
  """Hue histogram: `dataset.hue_bins` bins (10), fractions of the pixels. RGB images only."""
  bins = _positive_int(cfg, 'hue_bins', 10)
  if not _is_rgb(image_shape):
    raise DataError(f'dataset.features: hue_hist needs colour (H, W, 3) images, but the images '
                    f'are {_shape_text(image_shape)}; drop hue_hist (hog works on gray images)')
  return Extractor(fn=functools.partial(hue_histogram, bins=bins),
                   settings={'bins': bins, 'normalized': True}, dim=bins)


@EXTRACTORS.register('hog')
def _hog(image_shape: tuple, cfg) -> Extractor:
  """HOG with `dataset.hog_cell`-pixel cells (8) and `dataset.hog_bins` orientations (9).

  An image whose height or width is not a multiple of the cell size is refused (no silent
  cropping): choose a cell size that divides both.
  """
  cell = _positive_int(cfg, 'hog_cell', 8)
  bins = _positive_int(cfg, 'hog_bins', 9)
  if not (len(image_shape) == 2 or _is_rgb(image_shape)):
    raise DataError(f'dataset.features: hog needs (H, W) or (H, W, 3) images, but the images '
                    f'are {_shape_text(image_shape)}')
  height, width = image_shape[:2]
  if height % cell or width % cell:
    fits = [c for c in range(1, min(height, width) + 1) if height % c == 0 and width % c == 0]
    raise DataError(f'dataset.hog_cell={cell} does not divide the {height}×{width} images; '
                    f'choose one of: {", ".join(map(str, fits))}')
  return Extractor(fn=functools.partial(hog, cell=cell, bins=bins),
                   settings={'cell': cell, 'bins': bins, 'gray_weights': GRAY_WEIGHTS},
                   dim=(height // cell) * (width // cell) * bins)


@EXTRACTORS.register('pixels')
def _pixels(image_shape: tuple, cfg) -> Extractor:
  """The raw pixel values, flattened (to combine with the others: `('pixels', 'hog')`)."""
  del cfg
  return Extractor(fn=lambda image: jnp.asarray(image, jnp.float32).reshape(-1),
                   settings={}, dim=int(np.prod(image_shape)))


def _shape_text(image_shape: tuple) -> str:
  return '×'.join(map(str, image_shape))


def check_names(names) -> tuple[str, ...]:
  """`dataset.features` as a tuple of known names (a ConfigError lists the known ones).

  Accepts a tuple of names or a comma-separated string (`--config.dataset.features=hog,hue_hist`
  from the command line); an empty tuple or string means raw pixels.
  """
  if isinstance(names, str):
    names = (names,)
  if not isinstance(names, (tuple, list)) or not all(isinstance(n, str) for n in names):
    raise ConfigError(f'dataset.features={names!r} must be a tuple of names, e.g. '
                      f"('hog', 'hue_hist'); () keeps the raw pixels")
  parts = [p.strip(' ()[]\'"') for n in names for p in n.split(',')]
  parts = tuple(p for p in parts if p)
  if len(set(parts)) != len(parts):
    raise ConfigError(f'dataset.features={parts!r} names an extractor twice; name each once')
  for name in parts:
    EXTRACTORS.get(name)
  return parts


def combine(names: Sequence[str], image_shape: tuple, cfg) -> Extractor:
  """The extractors named in `names`, concatenated in that order into one `Extractor`."""
  names = check_names(names)
  image_shape = _normalize_shape(image_shape)
  parts = [EXTRACTORS.get(name)(image_shape, cfg) for name in names]

  def fn(image: Array) -> Array:
    image = image.reshape(image_shape)
    return jnp.concatenate([p.fn(image) for p in parts])
  return Extractor(fn=fn, dim=sum(p.dim for p in parts),
                   settings={name: p.settings for name, p in zip(names, parts)})


def _normalize_shape(image_shape: tuple) -> tuple:
  """`(H, W, 1)` images are gray: treated as `(H, W)`."""
  image_shape = tuple(int(s) for s in image_shape)
  if len(image_shape) == 3 and image_shape[2] == 1:
    return image_shape[:2]
  return image_shape


def default_batch_size() -> int:
  """Images per compiled call: 512 on CPU (the per-batch buffers stay in cache), 4,096 on an
  accelerator (fewer, fuller launches)."""
  return 512 if jax.default_backend() == 'cpu' else 4096


def extract(images: np.ndarray, extractor: Extractor, *,
            batch_size: Optional[int] = None) -> np.ndarray:
  """Applies `extractor.fn` to every image, on the device, in fixed-size batches.

  Every batch has `batch_size` images (the last one padded), so one compiled
  `jit(vmap(fn))` serves them all (and every later call with the same batch size: pass the
  same `batch_size` for every split); the data stay uint8 until they are on the device.

  Args:
    images: `(N, ...)` images, each reshapable to the extractor's image shape (flat is fine).
    extractor: from `combine`.
    batch_size: images per compiled call; None: min(N, `default_batch_size()`).

  Returns:
    `(N, extractor.dim)` float32 NumPy array.
  """
  n = int(images.shape[0])
  out = np.empty((n, extractor.dim), np.float32)
  if n == 0:
    return out
  batch_size = batch_size or min(n, default_batch_size())
  step = extractor.batched
  pending = []
  for start in range(0, n, batch_size):
    batch = images[start:start + batch_size]
    if len(batch) < batch_size:
      batch = np.concatenate([batch, np.zeros((batch_size - len(batch),) + batch.shape[1:],
                                              batch.dtype)])
    pending.append((start, step(batch)))  # dispatched asynchronously; collected below
    if len(pending) > 2:
      _collect(out, *pending.pop(0))
  for item in pending:
    _collect(out, *item)
  return out


def _collect(out: np.ndarray, start: int, features: Array) -> None:
  stop = min(start + features.shape[0], out.shape[0])
  out[start:stop] = np.asarray(features)[:stop - start]


__all__ = ['EXTRACTORS', 'Extractor', 'GRAY_WEIGHTS', 'check_names', 'combine',
           'default_batch_size', 'extract', 'gradients', 'hog', 'hue', 'hue_histogram',
           'orientation_bins', 'rgb_to_hsv', 'to_gray']
