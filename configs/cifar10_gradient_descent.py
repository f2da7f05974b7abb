"""Strategy 3b, full-batch gradient descent (`jax.grad`) on CIFAR-10 raw pixels.

The assignment's SVM settings (lr 1e-7, λ = 2.5e4 on W including the bias column, W0 =
0.001·randn) with every step on all 49,000 training images instead of a batch of 200.
Needs the CIFAR-10 data (`dataset.name='cifar10'`).

Command:
  python -m hinge_jax.main --config=configs/cifar10_gradient_descent.py --workdir=/tmp/hinge_jax/c10_gd

Each step reads the whole training set: slow on a CPU. Expected: close to the mini-batch run
(configs/cifar10_sgd.py, test ≈ 0.36–0.38); not yet run on the real CIFAR-10.
"""

from configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.dataset.name = 'cifar10'
  c.dataset.scale = 1.0
  c.dataset.bias_trick = True
  c.loss.name = 'multiclass_svm'
  c.reg.strength = 2.5e4
  c.reg.regularize_bias = True  # the assignment's reg·ΣW² includes the bias column
  c.strategy = 'gradient_descent'
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 1e-7
  c.init_scale = 1e-3
  c.batch_size = 0
  c.num_steps = 1500
  c.eval_every_steps = 250
  c.eval_batch_size = 10000
  return c
