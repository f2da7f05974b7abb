"""Small builders shared by the tests."""

import io
import json
import os
import pickle
import subprocess
import sys

import ml_collections
import numpy as np

from hinge_jax.datasets.base import finalize
from py2_pickle import Py2Pickler

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The suite compiles hundreds of small programs: LLVM's quickest level (the same HLO passes
# and float semantics, ~30 % less CPU for the suite). Every test process and subprocess runs
# under it, so results compared across processes come from the same code.
FAST_COMPILE = '--xla_backend_optimization_level=0'


def xla_flags(devices: int = 0) -> str:
  """XLA_FLAGS for a test process: FAST_COMPILE, and `devices` simulated CPU devices (0: one)."""
  return FAST_COMPILE + (f' --xla_force_host_platform_device_count={devices}' if devices else '')


def default_config(**overrides) -> ml_collections.ConfigDict:
  """configs/default.py with dotted-name overrides (`**{'reg.strength': 0.0}`)."""
  sys.path.insert(0, REPO)
  from configs import default
  from hinge_jax import config_lib
  return config_lib.with_fields(default.get_config(), overrides)


# results.json fields that differ between runs that must otherwise be equal
TIMING_KEYS = ('compile_time_s', 'run_time_s', 'wall_time_s', 'timing')


def without_timings(workdir) -> dict:
  """A run's results.json without its timings (`TIMING_KEYS`)."""
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  return {k: v for k, v in results.items() if k not in TIMING_KEYS}


def quiet(line):
  """A `log` that prints nothing."""
  del line


def array_dataset(x, y, num_classes, **kw):
  """A Dataset from in-memory arrays (everything in train unless val/test are given)."""
  xs = {'train': np.asarray(x)}
  ys = {'train': np.asarray(y)}
  for split in ('val', 'test'):
    if f'x_{split}' in kw:
      xs[split], ys[split] = kw.pop(f'x_{split}'), kw.pop(f'y_{split}')
  kw.setdefault('center', True)
  kw.setdefault('scale', 1.0)
  kw.setdefault('bias_trick', False)
  return finalize('arrays', xs, ys, num_classes=num_classes, **kw)


def run_main(*args, env=None, timeout=300, module='hinge_jax.main'):
  """Runs `python -m hinge_jax.main ARGS` (or another module) in the repo; returns the CompletedProcess."""
  full_env = dict(os.environ, **(env or {}))
  full_env['XLA_FLAGS'] = xla_flags()
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=full_env)


# ----------------------------------------------------------------------- data on disk

CIFAR_NAMES = [b'plane', b'car', b'bird', b'cat', b'deer', b'dog', b'frog', b'horse', b'ship',
               b'truck']


def channel_major_rows(images: np.ndarray) -> np.ndarray:
  """(n, 32, 32, 3) HWC images → CIFAR's rows: all red values, then green, then blue."""
  return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072)


def _dump(obj, f, style):
  if style == 'py2':  # bytes as Python 2 `str`, as in the archive
    Py2Pickler(f, protocol=2).dump(obj)
  else:  # Python 3 at protocol 2 writes bytes through _codecs.encode
    pickle.dump(obj, f, protocol=2)


def write_cifar_folder(root, *, seed=0, per_batch=30, num_test=20, style='py2'):
  """A small `cifar-10-batches-py` in the original format (data_batch_1..5, test_batch,
  batches.meta; pickled dicts with channel-major uint8 rows). Returns `(folder, written)`:
  the HWC images and labels written, keyed as `cifar.read_folder`'s arrays."""
  rng = np.random.default_rng(seed)
  folder = os.path.join(str(root), 'cifar-10-batches-py')
  os.makedirs(folder)
  written = {'train_images': [], 'train_labels': []}
  files = [(f'data_batch_{i}', per_batch) for i in range(1, 6)] + [('test_batch', num_test)]
  for name, n in files:
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    batch = {b'batch_label': name.encode(), b'labels': labels,
             b'data': channel_major_rows(images), b'filenames': [b'x.png'] * n}
    with open(os.path.join(folder, name), 'wb') as f:
      _dump(batch, f, style)
    if name == 'test_batch':
      written['test_images'], written['test_labels'] = images, np.array(labels)
    else:
      written['train_images'].append(images)
      written['train_labels'].append(np.array(labels))
  written['train_images'] = np.concatenate(written['train_images'])
  written['train_labels'] = np.concatenate(written['train_labels'])
  with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
    _dump({b'label_names': CIFAR_NAMES, b'num_vis': 3072}, f, style)
  return folder, written


TFDS_LABEL_NAMES = {'cifar10': ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
                                'horse', 'ship', 'truck']}


def _png(image: np.ndarray) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format='PNG')
  return buffer.getvalue()


def tfds_builder(name: str, data_dir: str, splits: dict):
  """TFDS's own builder of `name` (its features, version and writer) whose split generators
  yield `splits` (split → (images, labels)) instead of downloading. Preparing with it writes a
  genuine ArrayRecord directory with dataset_info.json, without TensorFlow: the images go in
  as PNG bytes, which TFDS stores as they are. CIFAR's builders read the class names from the
  download; here they come from `TFDS_LABEL_NAMES`."""
  import tensorflow_datasets as tfds
  base = tfds.builder_cls(name)

  def examples(split, images, labels, with_id):
    for i, (image, label) in enumerate(zip(images, labels)):
      record = {'image': _png(image), 'label': int(label)}
      if with_id:  # numbered in the given order, as TFDS numbers CIFAR's original files
        record['id'] = f'{split}_{i:05d}'
      yield i, record

  class Local(base, skip_registration=True):
    name = base.name

    def _split_generators(self, dl_manager):
      del dl_manager
      with_id = 'id' in self.info.features
      if self.name in TFDS_LABEL_NAMES:
        self.info.features['label'].names = TFDS_LABEL_NAMES[self.name]
      return {split: examples(split, *arrays, with_id) for split, arrays in splits.items()}

  return Local(data_dir=data_dir, file_format='array_record')


def image_splits(shape, *, num_train, num_test, seed=0, num_classes=10):
  """Seeded random uint8 images and labels: {'train': (x, y), 'test': (x, y)}."""
  rng = np.random.default_rng(seed)
  return {split: (rng.integers(0, 256, (n,) + tuple(shape), dtype=np.uint8),
                  rng.integers(0, num_classes, n))
          for split, n in (('train', num_train), ('test', num_test))}


def prepare_tfds(name: str, data_dir: str, splits: dict, *, cache: bool = True) -> None:
  """`hinge_jax.prepare.prepare(name, data_dir)` as the command runs it, with TFDS's builder
  fed `splits` (see `tfds_builder`) and the TensorFlow check passed: prepare's own seams."""
  import pytest
  from hinge_jax import prepare
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(prepare, 'require_tensorflow', lambda: None)
    mp.setattr(prepare, 'make_builder',
               lambda tfds, n, d: tfds_builder(n, d, splits))
    prepare.prepare(name, str(data_dir), cache=cache, log=lambda *a: None)


def write_embeddings(folder, seed=1, n=(160, 400, 400), d=24, c=4):
  """Gaussian class clusters as float16 embeddings, written as x_<split>.npy / y_<split>.npy."""
  rng = np.random.default_rng(seed)
  centres = 0.6 * rng.standard_normal((c, d))
  folder.mkdir(exist_ok=True)
  out = {}
  for split, size in zip(('train', 'val', 'test'), n):
    y = np.arange(size) % c
    rng.shuffle(y)
    x = (centres[y] + rng.standard_normal((size, d))).astype(np.float16)
    np.save(folder / f'x_{split}.npy', x)
    np.save(folder / f'y_{split}.npy', y)
    out[split] = (x.astype(np.float64), y)
  return out
