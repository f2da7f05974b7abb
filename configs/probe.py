"""The linear-probe protocol: a softmax probe on your embeddings, λ chosen by validation accuracy.

Command (DIR holds x_train.npy, y_train.npy [, x_val.npy, y_val.npy, x_test.npy, y_test.npy],
or give a .npz with those keys; features (N, D) float16/float32/uint8, labels integers):

  python -m hinge_jax.main --config=configs/probe.py --config.dataset.path=DIR \
      --workdir=/tmp/hinge_jax/probe
  # refit on train + val at the chosen λ, then test:
  python -m hinge_jax.main --config=configs/probe.py:refit --config.dataset.path=DIR ...
  # the protocol on digits' pixels, no file needed:
  python -m hinge_jax.main --config=configs/probe.py --config.dataset.name=digits \
      --config.dataset.scale=0.0625 --workdir=/tmp/hinge_jax/probe_digits

16 λ log-spaced over [1e-6, 1e-1] (`probe.*`), one member each, trained together in one
program by L-BFGS on the full batch until the objective's relative decrease over a window of
10 steps is below 1e-9 (at most 1,000 steps). Features are centred; W0 = 0. Outputs:
probe.json (chosen λ, test accuracy), sweep.csv, plots/probe.png (hinge_jax/probe.py).

Expected on digits (2-core CPU, ≈ 30 s): λ = 4.6e-5 chosen, val 0.982, test 0.978.
"""

import ml_collections

from configs import default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The probe on `dataset.path`; `arg='refit'` refits on train + val at the chosen λ."""
  c = default.get_config()
  c.dataset.name = 'npy'
  c.dataset.path = ''  # a folder of x_train.npy, y_train.npy, ... or a .npz
  c.dataset.scale = 1.0
  c.dataset.center = True
  c.init_scale = 0.0  # W0 = 0: the objective is convex, the start does not matter

  c.loss.name = 'softmax_cross_entropy'
  c.reg.name = 'l2'
  c.reg.regularize_bias = False  # as scikit-learn's LogisticRegression's intercept
  c.optimizer.name = 'lbfgs'
  c.batch_size = 0  # L-BFGS takes the full batch
  c.num_steps = 1000  # the cap: members stop when converged (stop.*)
  c.eval_every_steps = 10
  c.stop.tol = 1e-9  # relative decrease of the objective over stop.check_every steps
  c.stop.check_every = 10
  c.sanity.enabled = False
  c.checkpoint_every_steps = 0

  c.probe = ml_collections.ConfigDict()
  c.probe.lambdas = ''  # explicit λ values '1e-5,1e-4,...' (overrides the log grid below)
  c.probe.lambda_min = 1e-6
  c.probe.lambda_max = 1e-1
  c.probe.num_lambdas = 16
  c.probe.refit = False  # True: retrain on train + val at the chosen λ's C, then test
  if arg == 'refit':
    c.probe.refit = True
  elif arg:
    raise ValueError(f"configs/probe.py:{arg} is not known; use 'refit'")
  return c
