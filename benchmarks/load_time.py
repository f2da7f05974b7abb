"""Load time of an image dataset in a fresh process: cold (`--clear` removes the cache) or cached.

  python -m benchmarks.load_time --config=configs/cifar10_svm.py \\
      --config.dataset.data_dir=/tmp/fake_cifar --clear     # cold: decode + write the cache
  python -m benchmarks.load_time --config=configs/cifar10_svm.py \\
      --config.dataset.data_dir=/tmp/fake_cifar             # the next run: from the cache

Prints the seconds of `datasets.load` (read or decode, the protocol's cuts, the training
mean) and the peak RSS of this process.
"""

import resource
import shutil
import time

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config.')
_CLEAR = flags.DEFINE_bool('clear', False, 'Remove the cache first (a cold load).')


def main(argv):
  del argv
  from hinge_jax import datasets
  from hinge_jax.datasets import cifar, tfds_data
  cfg = _CONFIG.value.dataset
  data_dir = tfds_data.resolve_data_dir(cfg)
  folder = cifar.find_folder(data_dir) if cfg.name == 'cifar10' else None
  cache_dir = (f'{folder}/hinge_jax_cache' if folder else tfds_data.cache_dir(cfg.name, data_dir))
  if _CLEAR.value:
    shutil.rmtree(cache_dir, ignore_errors=True)
  t0 = time.perf_counter()
  ds = datasets.load(cfg)
  seconds = time.perf_counter() - t0
  print(f'{cfg.name}: train {ds.x["train"].shape} {ds.x["train"].dtype}; '
        f'{"cold" if _CLEAR.value else "cached"} load {seconds:.2f} s; '
        f'peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')


if __name__ == '__main__':
  app.run(main)
