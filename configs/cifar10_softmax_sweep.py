"""CIFAR-10, softmax on raw pixels: the assignment's learning-rate × regularization grid.

One command trains every member of the grid in one compiled program (vmapped over members,
sharded over the local devices) and picks the best by validation accuracy:

  python -m hinge_jax.main --config=configs/cifar10_softmax_sweep.py \
      --config.dataset.data_dir=DIR --workdir=/tmp/hinge_jax/cifar10_softmax_sweep

  # the finer 16 × 16 grid (256 members, log-spaced):
  python -m hinge_jax.main --config=configs/cifar10_softmax_sweep.py:fine \
      --config.dataset.data_dir=DIR --workdir=/tmp/hinge_jax/cifar10_softmax_sweep_fine

Grid: lr {1e-7,5e-7} × reg {2.5e4,5e4} (4 members); `:fine` is lr 10^[-8,-5.5] × reg 10^[3, 5.5],
16 values each. Everything else is configs/cifar10_softmax.py (batch 200, 1,500 steps, bias
trick, reg on W including the bias column). Outputs: sweep.csv / sweep.json (one row per member),
the best member's results.json / params.npz / metrics.jsonl, plots/sweep.png (validation
accuracy over log lr × log reg).

Expected (LECTURE.md): best val > 0.35, test ≈ 0.33–0.37.
"""

import ml_collections

from configs import cifar10_softmax, cifar10_svm_sweep


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The assignment's grid; `arg='fine'` the 16 × 16 log-spaced grid."""
  return cifar10_svm_sweep.with_grid(cifar10_softmax.get_config(), arg,
                                     name='cifar10_softmax_sweep', coarse_lrs='1e-7,5e-7',
                                     fine_lr_exps=(-8, -5.5))
