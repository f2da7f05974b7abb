"""Image features: RGB→HSV, the hue histogram and HOG against independent references."""

import colorsys
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hinge_jax import features
from hinge_jax.errors import ConfigError, DataError


# Compiled once per shape: op-by-op (eager) runs of these compile every primitive on its own.
_hue_histogram = jax.jit(lambda image, bins: features.hue_histogram(image, bins=bins),
                         static_argnums=1)
_hog = jax.jit(lambda image, cell, bins: features.hog(image, cell=cell, bins=bins),
               static_argnums=(1, 2))


def _cfg(**kw) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict({'hog_cell': 8, 'hog_bins': 9, 'hue_bins': 10}, **kw))


# ----------------------------------------------------------------------------- references


def hog_loops(image: np.ndarray, cell: int = 8, bins: int = 9) -> np.ndarray:
  """Plain-Python HOG, one pixel at a time, float64: the algorithm of `features.hog`."""
  img = np.asarray(image, np.float64)
  if img.ndim == 3:
    w = features.GRAY_WEIGHTS
    img = img[..., 0] * w[0] + img[..., 1] * w[1] + img[..., 2] * w[2]
  height, width = img.shape
  hist = np.zeros((height // cell, width // cell, bins))
  for i in range(height):
    for j in range(width):
      gx = img[i, j + 1] - img[i, j] if j + 1 < width else 0.0
      gy = img[i + 1, j] - img[i, j] if i + 1 < height else 0.0
      angle = math.degrees(math.atan2(gy, gx)) % 180.0
      b = min(int(angle / (180.0 / bins)), bins - 1)
      hist[i // cell, j // cell, b] += math.hypot(gx, gy)
  return (hist / cell**2).reshape(-1)


def hue_hist_loops(image: np.ndarray, bins: int = 10) -> np.ndarray:
  """Hue histogram through Python's colorsys, one pixel at a time (fractions of the pixels)."""
  rgb = np.asarray(image, np.float64).reshape(-1, 3) / 255.0
  hist = np.zeros(bins)
  for r, g, b in rgb:
    hist[min(int(colorsys.rgb_to_hsv(r, g, b)[0] * bins), bins - 1)] += 1
  return hist / len(rgb)


# ----------------------------------------------------------------------------- colour


def test_rgb_to_hsv_matches_colorsys():
  rng = np.random.default_rng(0)
  pixels = np.concatenate([
      rng.uniform(0, 1, (2000, 3)),
      rng.integers(0, 256, (2000, 3)) / 255.0,  # uint8 values: exact ties are common
      np.repeat(rng.uniform(0, 1, (50, 1)), 3, axis=1),  # grays
      [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 1]],
  ])
  got = np.asarray(jax.jit(features.rgb_to_hsv)(pixels.astype(np.float32)))
  want = np.array([colorsys.rgb_to_hsv(*p) for p in pixels])
  dh = np.abs(got[:, 0] - want[:, 0])
  assert np.all(np.minimum(dh, 1 - dh) < 1e-5)  # hue is an angle: 0.99999 ≈ 0
  assert np.all((got[:, 0] >= 0) & (got[:, 0] < 1))
  np.testing.assert_allclose(got[:, 1:], want[:, 1:], atol=1e-6)


@pytest.mark.parametrize('rgb,bin_', [((255, 0, 0), 0), ((0, 255, 0), 3), ((0, 0, 255), 6),
                                      ((255, 255, 0), 1), ((0, 255, 255), 5)])
def test_solid_colour_puts_all_mass_in_its_hue_bin(rgb, bin_):
  image = np.broadcast_to(np.asarray(rgb, np.uint8), (16, 16, 3))
  hist = np.asarray(_hue_histogram(image, 10))
  want = np.zeros(10)
  want[bin_] = 1.0  # red: h = 0; yellow 1/6; green 1/3; cyan 1/2; blue 2/3 → ⌊10h⌋
  np.testing.assert_array_equal(hist, want)


def test_hue_histogram_sums_and_matches_colorsys():
  images = np.random.default_rng(1).integers(0, 256, (4, 12, 10, 3), dtype=np.uint8)
  hist = np.asarray(jax.jit(jax.vmap(features.hue_histogram))(images))
  counts = np.asarray(jax.jit(jax.vmap(lambda im: features.hue_histogram(im, normalized=False)))(
      images))
  np.testing.assert_allclose(hist.sum(axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(counts.sum(axis=1), 120)  # H·W pixels
  for image, h in zip(images, hist):
    np.testing.assert_allclose(h, hue_hist_loops(image), atol=1e-6)


def test_hue_does_not_depend_on_the_value_scale():
  image = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
  np.testing.assert_allclose(_hue_histogram(image, 7),
                             _hue_histogram(image.astype(np.float32) / 255, 7))


# ----------------------------------------------------------------------------- HOG


@pytest.mark.parametrize('shape,cell,bins', [((32, 32, 3), 8, 9), ((16, 24), 4, 9),
                                             ((8, 8), 2, 12)])
def test_hog_matches_a_plain_loop_implementation(shape, cell, bins):
  rng = np.random.default_rng(3)
  for image in (rng.integers(0, 256, shape).astype(np.uint8),
                rng.uniform(-1, 1, shape).astype(np.float32)):
    got = np.asarray(jax.jit(lambda im: features.hog(im, cell=cell, bins=bins))(image))
    want = hog_loops(image, cell, bins)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize('bins', [9, 4, 1])
def test_orientation_bins_match_atan2(bins):
  rng = np.random.default_rng(8)
  g = [rng.normal(size=(3000, 2)), [[1, 0], [-1, 0], [0, 1], [0, -1], [0, 0], [-2, -0.0]]]
  if bins == 9:  # small integer gradients (uint8 gray images) hit no 20° edge exactly; with
    g.append(rng.integers(-3, 4, (500, 2)))  # 4 bins, (1, 1) sits on the 45° edge: a tie
  g = np.concatenate(g).astype(np.float32)
  got = np.asarray(jax.jit(features.orientation_bins, static_argnums=2)(g[:, 0], g[:, 1], bins))
  want = [min(int((math.degrees(math.atan2(gy, gx)) % 180) / (180 / bins)), bins - 1)
          for gx, gy in g.astype(np.float64)]
  nonzero = np.any(g != 0, axis=1)  # the zero vector has no orientation (and no weight)
  np.testing.assert_array_equal(got[nonzero], np.asarray(want)[nonzero])


@pytest.mark.parametrize('shape,cell,bins', [((32, 32, 3), 8, 9), ((32, 32), 8, 9),
                                             ((8, 8), 4, 9), ((24, 16, 3), 8, 6)])
def test_hog_output_size(shape, cell, bins):
  out = jax.eval_shape(lambda im: features.hog(im, cell=cell, bins=bins),
                       np.zeros(shape, np.uint8))  # traced, not run
  assert out.shape == ((shape[0] // cell) * (shape[1] // cell) * bins,)
  assert features.combine(('hog',), shape, _cfg(hog_cell=cell, hog_bins=bins)).dim == out.shape[0]


def test_hog_on_cifar_sized_images_has_144_dimensions():
  assert features.combine(('hog',), (32, 32, 3), _cfg()).dim == 144
  assert features.combine(('hog', 'hue_hist'), (32, 32, 3), _cfg()).dim == 154


def _energy_by_bin(image, bins=9):
  return np.asarray(_hog(image, 8, bins)).reshape(-1, bins).sum(axis=0)


def test_vertical_stripes_put_their_energy_in_the_horizontal_gradient_bin():
  cols = np.arange(32)
  image = np.broadcast_to(np.where((cols // 2) % 2 == 1, 255, 0), (32, 32)).astype(np.uint8)
  energy = _energy_by_bin(image)
  assert energy[0] > 0 and np.all(energy[1:] == 0)  # θ = 0°: gradients along x
  energy = _energy_by_bin(image.T)  # horizontal stripes: gradients along y, θ = 90° (bin 4)
  assert energy[4] > 0 and energy.sum() == energy[4]


def test_diagonal_stripes_put_their_energy_at_45_degrees():
  i, j = np.mgrid[0:32, 0:32]
  image = (127 + 120 * np.sin(2 * np.pi * (i + j) / 6)).astype(np.float32)
  energy = _energy_by_bin(image)
  assert energy[2] > 0.9 * energy.sum()  # bin 2 = [40°, 60°); only the far edges differ


def test_gray_weights_follow_bt601():
  rgb = np.random.default_rng(4).uniform(0, 255, (8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(features.to_gray(rgb),
                             0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2],
                             rtol=1e-6)


# ----------------------------------------------------------------------------- registry


def test_extract_in_padded_batches_equals_one_image_at_a_time():
  images = np.random.default_rng(5).integers(0, 256, (37, 32 * 32 * 3), dtype=np.uint8)
  ex = features.combine(('hue_hist', 'hog', 'pixels'), (32, 32, 3), _cfg())
  got = features.extract(images, ex, batch_size=16)  # 16 + 16 + 5 (padded to 16)
  assert got.shape == (37, 10 + 144 + 3072) and got.dtype == np.float32
  for k in (0, 20, 36):
    im = images[k].reshape(32, 32, 3)
    want = np.concatenate([hue_hist_loops(im), hog_loops(im), im.reshape(-1)])
    np.testing.assert_allclose(got[k], want, rtol=1e-4, atol=1e-3)


def test_gray_images_with_a_channel_axis_are_gray():
  images = np.random.default_rng(6).integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
  ex = features.combine(('hog',), (16, 16, 1), _cfg())
  np.testing.assert_allclose(features.extract(images, ex),
                             np.stack([hog_loops(im[..., 0]) for im in images]), rtol=1e-4,
                             atol=1e-3)


def test_names_from_the_command_line():
  assert features.check_names('hog,hue_hist') == ('hog', 'hue_hist')
  assert features.check_names(('(hog', 'pixels)')) == ('hog', 'pixels')
  assert features.check_names(()) == () and features.check_names('') == ()


def test_a_new_extractor_can_be_registered():
  @features.EXTRACTORS.register('mean_intensity')
  def _mean(image_shape, cfg):
    return features.Extractor(fn=lambda im: jnp.mean(im.astype(jnp.float32))[None],
                              settings={}, dim=1)
  try:
    images = np.random.default_rng(7).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    out = features.extract(images, features.combine(('mean_intensity', 'hog'), (8, 8),
                                                    _cfg(hog_cell=4)))
    np.testing.assert_allclose(out[:, 0], images.reshape(5, -1).mean(axis=1), rtol=1e-6)
    assert out.shape == (5, 1 + 36)
  finally:
    features.EXTRACTORS._items.pop('mean_intensity')


@pytest.mark.parametrize('names,shape,cfg,error,needles', [
    (('hog', 'sift'), (32, 32, 3), {}, ConfigError,
     ("dataset.features='sift'", 'hog, hue_hist, pixels')),
    (('hog', 'hog'), (32, 32, 3), {}, ConfigError, ('twice',)),
    (('hog',), (30, 30, 3), {}, DataError,
     ('dataset.hog_cell=8', '30×30', '1, 2, 3, 5, 6, 10, 15, 30')),
    (('hue_hist',), (8, 8), {}, DataError, ('hue_hist needs colour', '8×8')),
    (('hue_hist',), (8, 8, 1), {}, DataError, ('hue_hist needs colour',)),
    (('hog',), (32, 32, 4), {}, DataError, ('32×32×4',)),
    (('hog',), (32, 32, 3), {'hog_cell': 0}, ConfigError, ('dataset.hog_cell=0', 'positive')),
    (('hue_hist',), (32, 32, 3), {'hue_bins': 2.5}, ConfigError, ('dataset.hue_bins=2.5',)),
])
def test_bad_requests_get_one_clear_line(names, shape, cfg, error, needles):
  with pytest.raises(error) as info:
    features.combine(names, shape, _cfg(**cfg))
  message = str(info.value)
  assert '\n' not in message
  for needle in needles:
    assert needle in message
