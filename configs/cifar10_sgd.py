"""Strategy 4, mini-batch SGD on CIFAR-10 raw pixels: the assignment's SVM run.

Batch 200 sampled with replacement, 1,500 iterations, lr 1e-7, λ = 2.5e4 (bias column
included), W0 = 0.001·randn. Needs the CIFAR-10 data (`dataset.name='cifar10'`).

Command:
  python -m hinge_jax.main --config=configs/cifar10_sgd.py --workdir=/tmp/hinge_jax/c10_sgd

Expected: val ≈ 0.39–0.41, test ≈ 0.36–0.38 (LECTURE.md's reference table).
"""

from configs import cifar10_gradient_descent


def get_config(arg=None):
  c = cifar10_gradient_descent.get_config(arg)
  c.strategy = 'sgd'
  c.batch_size = 200
  return c
