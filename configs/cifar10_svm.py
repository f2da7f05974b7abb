"""CIFAR-10, multiclass SVM on raw pixels: assignment 1's `LinearSVM` run.

Command (DIR holds `cifar-10-batches-py`, or a TFDS data dir with cifar10 prepared by
`python -m hinge_jax.prepare --dataset=cifar10 --data_dir=DIR`):
  python -m hinge_jax.main --config=configs/cifar10_svm.py \
      --config.dataset.data_dir=DIR --workdir=/tmp/hinge_jax/cifar10_svm

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
Expected (LECTURE.md): initial loss ≈ 9 + 2.5e4·ΣW0² ≈ 780, final loss ≈ 5,
val accuracy ≈ 0.39 (0.37–0.41), test ≈ 0.37.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The assignment's SVM. `arg='full_test'` evaluates on all 10,000 test images."""
  c = default.get_config()
  c.seed = 0
  c.init_scale = 1e-3
  c.dataset.name = 'cifar10'
  c.dataset.num_train = 49000
  c.dataset.num_val = 1000
  c.dataset.num_test = 0 if arg == 'full_test' else 1000
  c.dataset.num_dev = 500
  c.dataset.order = 'canonical'
  c.dataset.center = True
  c.dataset.scale = 1.0
  c.dataset.bias_trick = True

  c.loss.name = 'multiclass_svm'
  c.loss.margin = 1.0
  c.reg.name = 'l2'
  c.reg.strength = 2.5e4
  c.reg.regularize_bias = True  # the assignment's reg·ΣW² covers the bias column too

  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 1e-7
  c.optimizer.schedule = 'constant'
  c.optimizer.decay_rate = 0.95
  c.optimizer.decay_steps = 0  # one epoch, when schedule=step
  c.strategy = 'sgd'
  c.batch_size = 200
  c.sampling = 'with_replacement'
  c.num_steps = 1500
  c.eval_every_steps = 500
  c.eval_batch_size = 8192
  return c
