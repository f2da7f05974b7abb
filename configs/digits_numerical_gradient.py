"""Strategy 3a, following the numerical gradient, on digits (650 parameters).

Each step estimates every ∂L/∂W_ij by centered differences (h = `numerical.h`, 2 × 650 loss
evaluations on the whole training set, vmapped in chunks) and takes a plain gradient step.
Slow by nature: it exists to teach and to check; `strategy=gradient_descent` takes the same
steps with `jax.grad`. A problem needing more than `numerical.max_evals_per_step` evaluations
per step (CIFAR-10: 2 × 30,730) is refused with one line.

Command:
  python -m hinge_jax.main --config=configs/digits_numerical_gradient.py --workdir=/tmp/hinge_jax/ng

Expected: test accuracy ≈ 0.97 (0.974 for seed 0, the same as
configs/digits_gradient_descent.py to within float32 rounding).
"""

from configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.strategy = 'numerical_gradient'
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.5
  c.numerical.h = 1e-3  # float32: a smaller h loses the difference to rounding
  c.batch_size = 0
  c.num_steps = 200
  c.eval_every_steps = 50
  return c
