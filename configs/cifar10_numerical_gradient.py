"""Strategy 3a, the numerical gradient, on CIFAR-10: refused, as the lecture predicts.

One step needs 2 × 30,730 loss evaluations on 49,000 images (one pair per parameter), more
than the default budget `numerical.max_evals_per_step=20000`, so the run stops before
training with one line:

  error: strategy=numerical_gradient needs 2·30730 = 61460 loss evaluations per step ...

That refusal is the lesson (use `jax.grad`: configs/cifar10_gradient_descent.py). To run it
anyway on a GPU, raise the budget: `--config.numerical.max_evals_per_step=70000`.

Command:
  python -m hinge_jax.main --config=configs/cifar10_numerical_gradient.py --workdir=/tmp/hinge_jax/c10_ng

Expected: exit code 2 and the line above, before any training.
"""

from configs import cifar10_gradient_descent


def get_config(arg=None):
  c = cifar10_gradient_descent.get_config(arg)
  c.strategy = 'numerical_gradient'
  c.numerical.h = 1e-3  # float32 training
  c.num_steps = 10
  c.eval_every_steps = 5
  return c
