"""Strategy 1, random search, on digits: 1,000 candidates W = 1e-4·randn, keep the best.

The notes' settings (1,000 random W at scale 1e-4, compared by the loss on the whole training
set), drawn as 10 steps of 100 candidates evaluated together under `vmap`.

Command:
  python -m hinge_jax.main --config=configs/digits_random_search.py --workdir=/tmp/hinge_jax/rs

Expected: test accuracy ≈ 0.20 for seed 0 (chance 0.10); the loss stays ≈ 9 = (C − 1)·Δ
because every candidate is tiny.
"""

from configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.strategy = 'random_search'
  c.optimizer.name = 'sgd'  # unused by a search; 'sgd' + constant keeps the run warning-free
  c.search.scale = 1e-4
  c.search.num_candidates = 100
  c.batch_size = 0  # candidates compared on the whole training set, as in the notes
  c.num_steps = 10  # 10 × 100 = 1,000 candidates
  c.eval_every_steps = 5
  return c
