"""Strategy 1, random search, on CIFAR-10: the notes' 1,000 candidates W = 1e-4·randn.

Candidates are compared by the WW SVM data loss on the whole training set (the notes'
`L(X_train, Y_train, W)`), 100 at a time under `vmap`, over 10 steps. Needs the CIFAR-10 data
(`dataset.name='cifar10'`, see the datasets README section for preparing it).

Command:
  python -m hinge_jax.main --config=configs/cifar10_random_search.py --workdir=/tmp/hinge_jax/c10_rs

1,000 evaluations of the loss on 49,000 images. Expected: test accuracy ≈ 0.155 (the notes:
15.5%; chance 10%); seeds vary by about ±2 points.
"""

from configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.dataset.name = 'cifar10'
  c.dataset.scale = 1.0  # raw pixels, mean-subtracted
  c.dataset.bias_trick = True
  c.loss.name = 'multiclass_svm'
  c.reg.strength = 0.0  # the notes search on the data loss
  c.strategy = 'random_search'
  c.optimizer.name = 'sgd'  # unused by a search; 'sgd' + constant keeps the run warning-free
  c.search.scale = 1e-4
  c.search.num_candidates = 100
  c.batch_size = 0  # the whole training set
  c.num_steps = 10  # 10 × 100 = 1,000 candidates
  c.eval_every_steps = 5
  c.eval_batch_size = 10000
  return c
