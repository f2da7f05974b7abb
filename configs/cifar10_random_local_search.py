"""Strategy 2, random local search, on CIFAR-10: the notes' W + 1e-4·randn, 1,000 iterations.

W0 = 1e-3·randn; each iteration proposes W + 1e-4·randn and keeps it when the WW SVM data loss
on the whole training set drops. Needs the CIFAR-10 data (`dataset.name='cifar10'`).

Command:
  python -m hinge_jax.main --config=configs/cifar10_random_local_search.py --workdir=/tmp/hinge_jax/c10_rls

2,000 losses on 49,000 images: slow on a CPU. Expected: test accuracy ≈ 0.214 (the notes: 21.4%;
random search 15.5%).
"""

from configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.dataset.name = 'cifar10'
  c.dataset.scale = 1.0
  c.dataset.bias_trick = True
  c.loss.name = 'multiclass_svm'
  c.reg.strength = 0.0
  c.strategy = 'random_local_search'
  c.optimizer.name = 'sgd'  # unused by a search
  c.init_scale = 1e-3
  c.search.step_size = 1e-4
  c.search.num_proposals = 1
  c.batch_size = 0
  c.num_steps = 1000
  c.eval_every_steps = 250
  c.eval_batch_size = 10000
  return c
