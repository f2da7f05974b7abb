"""CIFAR-10, softmax (cross-entropy) on raw pixels: assignment 1's `Softmax` run.

Command (DIR holds `cifar-10-batches-py`, or a TFDS data dir with cifar10 prepared by
`python -m hinge_jax.prepare --dataset=cifar10 --data_dir=DIR`):
  python -m hinge_jax.main --config=configs/cifar10_softmax.py \
      --config.dataset.data_dir=DIR --workdir=/tmp/hinge_jax/cifar10_softmax

Protocol: train = the first 49,000 training images, val = the next 1,000, test = the first
1,000 test images (`--config.dataset.num_test=0` for all 10,000), dev = 500 random training
images (kept on the host for checks); mean image of train subtracted, pixels not rescaled,
bias trick (D = 3073) with the L2 penalty on all of W including the bias column, as the
assignment's `reg·ΣW²`. SGD with batch 200 sampled with replacement, 1,500 iterations,
W0 = 0.001·randn, lr 1e-7, reg 2.5e4, constant learning rate (the assignment's
`LinearClassifier.train` has no decay; its 0.95-per-epoch decay belongs to the two-layer net:
`--config.optimizer.schedule=step` turns it on).

The first load decodes the python files or TFDS records once; later loads read the .npy
cache.
Expected (LECTURE.md): initial loss ≈ ln 10 + 2.5e4·ΣW0² ≈ 770, final ≈ 2,
val accuracy ≈ 0.35 (LECTURE: > 0.35), test ≈ 0.33–0.37.
"""

import ml_collections

from configs import cifar10_svm


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The assignment's softmax: cifar10_svm.py with the cross-entropy loss."""
  c = cifar10_svm.get_config(arg)
  c.loss.name = 'softmax_cross_entropy'
  return c
