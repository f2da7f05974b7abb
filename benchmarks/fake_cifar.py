"""Writes a synthetic `cifar-10-batches-py` folder of the real size and format (random pixels).

For measuring load time and memory without the real data:
  python -m benchmarks.fake_cifar --out=/tmp/fake_cifar
  python -m hinge_jax.main --config=configs/cifar10_svm.py \\
      --config.dataset.data_dir=/tmp/fake_cifar --workdir=/tmp/hinge_jax/fake_cifar

Each file is a protocol-2 pickle of a dict with keys `batch_label`, `labels` (a list of
ints), `data` (a `(n, 3072)` uint8 array, channel-major rows) and `filenames`, written as
Python 2 wrote the original archive: byte strings as BINSTRING opcodes, so the files have
the original's size (31 MB a batch) and load the same way. Accuracy on random pixels is
chance (0.10): this is for timing only.
"""

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.py2_pickle import Py2Pickler  # noqa: E402 - as the tests write CIFAR's files

_OUT = flags.DEFINE_string('out', '/tmp/fake_cifar', 'Folder to create cifar-10-batches-py in.')
_PER_BATCH = flags.DEFINE_integer('per_batch', 10000, 'Images per batch file (real: 10,000).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')


def write_batch(path: str, rng: np.random.Generator, n: int, label: str) -> None:
  batch = {b'batch_label': label.encode(), b'labels': rng.integers(0, 10, n).tolist(),
           b'data': rng.integers(0, 256, (n, 3072), dtype=np.uint8),
           b'filenames': [f'img_{i}.png'.encode() for i in range(n)]}
  with open(path, 'wb') as f:
    Py2Pickler(f, protocol=2).dump(batch)


def main(argv):
  del argv
  folder = os.path.join(_OUT.value, 'cifar-10-batches-py')
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(_SEED.value)
  for i in range(1, 6):
    write_batch(os.path.join(folder, f'data_batch_{i}'), rng, _PER_BATCH.value,
                f'training batch {i} of 5')
  write_batch(os.path.join(folder, 'test_batch'), rng, _PER_BATCH.value, 'testing batch 1 of 1')
  names = [b'airplane', b'automobile', b'bird', b'cat', b'deer', b'dog', b'frog', b'horse',
           b'ship', b'truck']
  with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
    Py2Pickler(f, protocol=2).dump({b'label_names': names,
                                    b'num_cases_per_batch': _PER_BATCH.value, b'num_vis': 3072})
  print(folder)


if __name__ == '__main__':
  app.run(main)
