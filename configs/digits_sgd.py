"""Strategy 4, mini-batch SGD (batch 200, plain SGD) on digits: the last rung of the ladder.

configs/default.py is the same with momentum 0.9.

Command:
  python -m hinge_jax.main --config=configs/digits_sgd.py --workdir=/tmp/hinge_jax/sgd

Expected: test accuracy ≈ 0.98 (0.978 for seed 0).
"""

from configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.strategy = 'sgd'
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.5
  c.batch_size = 200
  c.num_steps = 1000
  c.eval_every_steps = 250
  return c
