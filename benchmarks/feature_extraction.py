"""Feature-extraction throughput on random CIFAR-sized images (uint8, 32×32×3).

Command (from the repository root):
  python -m benchmarks.feature_extraction [--num_images=60000] [--batch_size=512]

Prints, per extractor combination, the seconds and images/s of `features.extract` after
one warm-up call (compilation excluded; it takes about a second).
"""

import time

from absl import app, flags
import jax
import ml_collections
import numpy as np

from hinge_jax import features

_NUM = flags.DEFINE_integer('num_images', 60000, 'Images to extract features from.')
_BATCH = flags.DEFINE_integer('batch_size', 0, 'Images per compiled call (0: the default, '
                              '512 on CPU, 4096 on an accelerator).')


def main(argv):
  del argv
  cfg = ml_collections.ConfigDict({'hog_cell': 8, 'hog_bins': 9, 'hue_bins': 10})
  batch = _BATCH.value or features.default_batch_size()
  images = np.random.default_rng(0).integers(0, 256, (_NUM.value, 32, 32, 3), dtype=np.uint8)
  print(f'{len(images)} random uint8 32×32×3 images, batches of {batch}, '
        f'on {jax.default_backend()}')
  for names in (('hog',), ('hue_hist',), ('hog', 'hue_hist')):
    extractor = features.combine(names, (32, 32, 3), cfg)
    features.extract(images[:batch], extractor, batch_size=batch)  # compile
    start = time.perf_counter()
    out = features.extract(images, extractor, batch_size=batch)
    seconds = time.perf_counter() - start
    print(f'{"+".join(names):>13}: {out.shape[0]} images → {out.shape[1]:>3} features in '
          f'{seconds:5.2f} s  ({out.shape[0] / seconds:,.0f} images/s)')


if __name__ == '__main__':
  app.run(main)
