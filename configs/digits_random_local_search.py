"""Strategy 2, random local search, on digits: W + 1e-4·randn, kept when the loss drops.

The notes' settings: W0 = 1e-3·randn, 1,000 iterations of one proposal at step 1e-4, each
compared by the loss on the whole training set. `--config.search.num_proposals=10` tries ten
proposals per iteration (vmapped) and keeps the best.

Command:
  python -m hinge_jax.main --config=configs/digits_random_local_search.py --workdir=/tmp/hinge_jax/rls

Expected: test accuracy ≈ 0.71 for seed 0 (random search: ≈ 0.20; chance 0.10).
"""

from configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.strategy = 'random_local_search'
  c.optimizer.name = 'sgd'  # unused by a search; 'sgd' + constant keeps the run warning-free
  c.init_scale = 1e-3
  c.search.step_size = 1e-4
  c.search.num_proposals = 1
  c.batch_size = 0  # proposals compared on the whole training set, as in the notes
  c.num_steps = 1000
  c.eval_every_steps = 250
  return c
