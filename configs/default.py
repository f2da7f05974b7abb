"""The default experiment: the multiclass (Weston–Watkins) SVM on scikit-learn's digits.

Command:
  python -m hinge_jax.main --config=configs/default.py --workdir=/tmp/hinge_jax/default

Runtime: about 10 s on a 2-core CPU (most of it compiling). Expected: test accuracy ≈ 0.96
(scikit-learn's LinearSVC reaches 0.95–0.97 on such splits); initial loss ≈ 9 = (C − 1)·Δ.
Every field can be overridden from the command line, e.g. `--config.reg.strength=1e-3`.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config. `arg` is unused here; variants use it (`configs/x.py:arg`)."""
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_scale = 1e-3  # W0 = init_scale · randn

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'digits'
  c.dataset.data_dir = ''
  c.dataset.split_seed = 0  # the train/val/test permutation, independent of `seed`
  c.dataset.val_fraction = 0.15
  c.dataset.test_fraction = 0.15
  c.dataset.center = True  # subtract the training mean
  c.dataset.scale = 1 / 16  # digits' pixels are 0..16
  c.dataset.bias_trick = False  # True: constant-1 feature, the bias is W's last row
  c.dataset.path = ''  # npz: the file with x_train, y_train (and optionally val/test)
  c.dataset.num_classes = 0  # npz: 0 infers it from the labels; synthetic: the class count
  c.dataset.num_examples = 2000  # synthetic only
  c.dataset.num_features = 32  # synthetic only
  c.dataset.separation = 1.0  # synthetic only: spread of the class centres
  c.dataset.dtype = 'float32'  # synthetic only: or 'uint8' (pixel-like data)

  c.loss = ml_collections.ConfigDict()
  c.loss.name = 'multiclass_svm'
  c.loss.margin = 1.0
  c.loss.squared = False

  c.reg = ml_collections.ConfigDict()
  c.reg.name = 'l2'
  c.reg.strength = 1e-3
  c.reg.regularize_bias = False
  c.reg.l1_ratio = 0.5  # elastic_net only
  c.reg.max_norm = 0.0  # > 0: project each class's weights onto ‖w‖₂ ≤ max_norm

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'momentum'
  c.optimizer.learning_rate = 0.05
  c.optimizer.momentum = 0.9
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0  # adamw only
  c.optimizer.schedule = 'constant'  # constant | step | exponential | cosine
  c.optimizer.decay_rate = 0.95
  c.optimizer.decay_steps = 0  # 0: one epoch (training-set size / batch size)

  c.strategy = 'sgd'  # mini-batch SGD with the optimizer below
  c.batch_size = 200  # 0: the whole training set every step (full-batch gradient descent)
  c.sampling = 'with_replacement'  # or 'epochs': shuffled passes
  c.num_steps = 1000
  c.eval_every_steps = 250
  c.eval_batch_size = 8192
  c.checkpoint_every_steps = 500  # also at the end and on SIGINT/SIGTERM; 0: only those
  c.checkpoint_keep = 3  # the newest checkpoints kept in workdir/checkpoints/
  return c
