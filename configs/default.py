"""The default experiment: the multiclass (Weston–Watkins) SVM on scikit-learn's digits.

Command:
  python -m hinge_jax.main --config=configs/default.py --workdir=/tmp/hinge_jax/default

Expected: test accuracy ≈ 0.96
(scikit-learn's LinearSVC reaches 0.95–0.97 on such splits); initial loss ≈ 9 = (C − 1)·Δ.
Every field can be overridden from the command line, e.g. `--config.reg.strength=1e-3`.
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default config. `arg` is unused here; variants use it (`configs/x.py:arg`)."""
  del arg
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_scale = 1e-3  # W0 = init_scale · randn

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = 'digits'
  c.dataset.data_dir = ''  # image sets: holds cifar-10-batches-py or TFDS data ('': TFDS's)
  c.dataset.split_seed = 0  # the train/val/test permutation, independent of `seed`
  c.dataset.val_fraction = 0.15
  c.dataset.test_fraction = 0.15
  c.dataset.center = True  # subtract the training mean
  c.dataset.scale = 1 / 16  # digits' pixels are 0..16
  c.dataset.bias_trick = False  # True: constant-1 feature, the bias is W's last column
  c.dataset.path = ''  # npz: the file with x_train, y_train (and optionally val/test)
  c.dataset.num_classes = 0  # npz: 0 infers it from the labels; synthetic: the class count
  c.dataset.num_examples = 2000  # synthetic only
  c.dataset.num_features = 32  # synthetic only
  c.dataset.separation = 1.0  # synthetic only: spread of the class centres
  c.dataset.dtype = 'float32'  # synthetic only: or 'uint8' (pixel-like data)
  # Image sets with an official train/test split (cifar10, TFDS sets): datasets/protocol.py.
  c.dataset.num_train = 0  # the first N training images (0: all but val)
  c.dataset.num_val = 1000  # the next N training images
  c.dataset.num_test = 0  # the first N test images (0: all)
  c.dataset.num_dev = 0  # N random training images kept on the host (Dataset.x['dev'])
  c.dataset.order = 'canonical'  # the original files' order, or 'shuffled' (by split_seed)
  c.dataset.cache = True  # decoded arrays cached as .npy next to the data
  # Image features instead of raw pixels (hinge_jax/features.py): 'hog', 'hue_hist', 'pixels',
  # e.g. ('hog', 'hue_hist'); () = raw pixels. Features are standardized with the training
  # split's mean and std (center/scale above are then not used; bias_trick still is).
  c.dataset.features = ()
  c.dataset.hog_cell = 8  # HOG cell side in pixels; must divide the image height and width
  c.dataset.hog_bins = 9  # HOG orientation bins over [0°, 180°)
  c.dataset.hue_bins = 10  # hue histogram bins
  c.dataset.feature_cache_dir = ''  # '': <data_dir>/features if data_dir is set, else no cache

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
  c.optimizer.memory_size = 10  # lbfgs: past steps it remembers (full batch, smooth objectives)

  # Convergence, per member (hinge_jax/convergence.py): every check_every steps the full
  # training objective is measured; a member whose relative decrease over that window is
  # below tol (or whose gradient norm is below grad_tol) is frozen, and the run ends when all
  # are. results.json / sweep.csv report converged, steps, objective, grad_norm and
  # window_decrease for every run, stopped early or not.
  c.stop = ml_collections.ConfigDict()
  c.stop.tol = config_dict.placeholder(float)  # None: never stop on the decrease; > 0: on
  c.stop.grad_tol = config_dict.placeholder(float)  # None: off; > 0: stop when ‖∇‖ ≤ it
  c.stop.max_steps = 0  # the cap on steps (0: num_steps)
  c.stop.check_every = 0  # steps per window (0: eval_every_steps)

  # the lecture's sanity checks at the start of every run (hinge_jax/sanity.py)
  c.sanity = ml_collections.ConfigDict()
  c.sanity.enabled = True
  c.sanity.overfit_examples = 20  # train on this many examples with λ = 0 ...
  c.sanity.overfit_steps = 200  # ... for this many full-batch steps: 100% train accuracy?

  c.strategy = 'sgd'  # mini-batch SGD with the optimizer below; see hinge_jax/strategies.py
  # random_search / random_local_search (they ignore optimizer.*; see strategies.py)
  c.search = ml_collections.ConfigDict()
  c.search.scale = 1e-4  # random_search: candidate W = scale·randn (the notes' 1e-4)
  c.search.step_size = 1e-4  # random_local_search: proposal W + step_size·randn
  c.search.num_candidates = 100  # random_search: candidates evaluated together per step
  c.search.num_proposals = 1  # random_local_search: proposals per step (the best one is tried)
  # numerical_gradient: centered differences, then the optimizer's step
  c.numerical = ml_collections.ConfigDict()
  c.numerical.h = 1e-3  # float32 training: 1e-5 (the notes', in float64) is lost to rounding
  c.numerical.max_evals_per_step = 20000  # refuse a problem needing more (2 per parameter)
  c.numerical.chunk = 256  # coordinates evaluated together under vmap

  c.batch_size = 200  # 0: the whole training set every step (full-batch gradient descent)
  c.sampling = 'with_replacement'  # or 'epochs': shuffled passes
  c.num_steps = 1000
  c.eval_every_steps = 250
  c.eval_batch_size = 8192

  # A vmapped sweep over numeric fields (see hinge_jax/sweep.py); empty: a single run.
  c.sweep = ml_collections.ConfigDict()
  c.sweep.grid = ''  # 'optimizer.learning_rate=1e-2,1e-1; reg.strength=0,1e-3': product
  c.sweep.zip = ''  # fields varied together (same number of values), × grid
  c.sweep.random = ''  # 'optimizer.learning_rate=loguniform(1e-3,1); reg.strength=uniform(0,1e-2)'
  c.sweep.num_samples = 0  # random points
  c.sweep.seed = 0  # the random sweep's draws
  c.sweep.max_members = 4096  # larger sweeps need sweep.confirm=True
  c.sweep.confirm = False
  c.sweep.members_per_program = 0  # 0: as many as fit in device memory
  c.sweep.memory_budget_bytes = 0  # 0: read from the device
  c.sweep.devices = 0  # shard the members over the first N local devices (0: all)
  # Choices that change shapes or code, as separate runs: python -m launch.run (launch/).
  c.sweep.structural = ''  # 'loss.name=multiclass_svm,softmax_cross_entropy; batch_size=100,200'
  # The device mesh ('members', 'data'): see hinge_jax/mesh.py and docs/scaling.md.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1  # devices on the data axis (rows of the splits split over them); -1: as needed
  c.mesh.global_batch = False  # True: minibatches drawn over all rows, not per data shard
  c.mesh.device_bytes = 0  # a device's free memory for mesh.data=-1 (0: read from the device)
  c.checkpoint_every_steps = 500  # also at the end and on SIGINT/SIGTERM; 0: only those
  c.checkpoint_keep = 3  # the newest checkpoints kept in workdir/checkpoints/
  return c
