"""MNIST (or Fashion-MNIST), multiclass SVM on raw pixels, through TFDS.

Command (DIR holds mnist prepared by `python -m hinge_jax.prepare --dataset=mnist
--data_dir=DIR`; leave data_dir out for TFDS's default directory):
  python -m hinge_jax.main --config=configs/mnist_svm.py \
      --config.dataset.data_dir=DIR --workdir=/tmp/hinge_jax/mnist_svm
  python -m hinge_jax.main --config=configs/mnist_svm.py:fashion_mnist \
      --config.dataset.data_dir=DIR --workdir=/tmp/hinge_jax/fashion_mnist_svm

Protocol (datasets/protocol.py): train = the first 55,000 training images, val = the next
5,000, test = all 10,000 test images, dev = 500; 28×28×1 pixels scaled to [0, 1] after
subtracting the training mean image; bias trick, L2 on W without the bias column. SGD with
momentum 0.9, batch 200, 3,000 steps (about 11 epochs), lr 0.01 decayed ×0.95 per epoch.

The first load decodes the 70,000 images once; later loads read the .npy cache. Expected:
val and test accuracy ≈ 0.91–0.92 for MNIST, ≈ 0.82–0.84 for Fashion-MNIST (what linear
classifiers reach on raw pixels; not yet run on the real data); initial loss ≈ 9 = (C − 1)·Δ.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """MNIST by default; `arg='fashion_mnist'` trains on Fashion-MNIST instead."""
  c = default.get_config()
  c.dataset.name = arg or 'mnist'
  c.dataset.num_train = 55000
  c.dataset.num_val = 5000
  c.dataset.num_test = 0  # all 10,000
  c.dataset.num_dev = 500
  c.dataset.order = 'canonical'
  c.dataset.center = True
  c.dataset.scale = 1 / 255
  c.dataset.bias_trick = True

  c.loss.name = 'multiclass_svm'
  c.loss.margin = 1.0
  c.reg.name = 'l2'
  c.reg.strength = 1e-4
  c.reg.regularize_bias = False

  c.optimizer.name = 'momentum'
  c.optimizer.learning_rate = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.schedule = 'step'
  c.optimizer.decay_rate = 0.95
  c.optimizer.decay_steps = 0  # one epoch
  c.batch_size = 200
  c.sampling = 'with_replacement'
  c.num_steps = 3000
  c.eval_every_steps = 1000
  return c
