"""The demo's export: the points and initial weights as an .npz, and a config file with which
`python -m hinge_jax.main` trains the same problem and reaches the page's weights.

The config is configs/default.py's with the page's choices written in: the npz dataset
beside the config file (no centring or scaling, all points in train), full-batch `sgd` at the
page's step size, the page's loss, Δ and λ (L2, bias not penalized), the initial W and b
from the same .npz (`init_params_path`), and as many steps as the page took since it last
changed anything (100 when it took none). The run's params.npz then holds the page's W.
"""

import base64
import datetime
import importlib.util
import io
import pprint

import ml_collections
import numpy as np

from hinge_jax import cli_utils, config_lib
from hinge_jax.demo import schema

NPZ_NAME = 'demo_points.npz'
CONFIG_NAME = 'demo_config.py'
STEPS_IF_NONE = 100

TEMPLATE = '''"""Exported by the hinge_jax demo on {date}.

{summary}.

Run (with {npz} in this file's folder):
  python -m hinge_jax.main --config={config} --workdir=/tmp/hinge_jax/demo
Its params.npz then holds the page's W and b after {steps} full-batch steps.
"""

import os

import ml_collections

HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(arg=None):
  del arg
  config = ml_collections.ConfigDict(CONFIG)
  config.dataset.path = os.path.join(HERE, {npz!r})
  config.init_params_path = config.dataset.path  # the page's initial W and b
  return config


CONFIG = {body}
'''


def default_config() -> ml_collections.ConfigDict:
  """configs/default.py's config (the file `hinge_jax.main` uses when given none)."""
  path = cli_utils.DEFAULT_CONFIG
  spec = importlib.util.spec_from_file_location('hinge_jax_demo_default_config', path)
  if spec is None:
    raise schema.RequestError(f'cannot export: {path} is missing; run the demo from a '
                              f'hinge_jax checkout')
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except OSError:
    raise schema.RequestError(f'cannot export: {path} is missing; run the demo from a '
                              f'hinge_jax checkout') from None
  return module.get_config()


def config_for(p: schema.Problem, steps: int) -> ml_collections.ConfigDict:
  """The default config with the page's problem written in (dataset.path set on loading)."""
  steps = steps or STEPS_IF_NONE
  config = config_lib.with_fields(default_config(), {
      'seed': 0, 'init_scale': 0.0,
      'dataset.name': 'npz', 'dataset.path': NPZ_NAME, 'dataset.num_classes': schema.NUM_CLASSES,
      'dataset.val_fraction': 0.0, 'dataset.test_fraction': 0.0, 'dataset.center': False,
      'dataset.scale': 1.0, 'dataset.bias_trick': False,
      'loss.name': p.loss, 'loss.margin': p.margin, 'loss.squared': p.squared,
      'reg.name': 'l2', 'reg.strength': p.reg, 'reg.regularize_bias': False,
      'reg.max_norm': 0.0,
      'optimizer.name': 'sgd', 'optimizer.learning_rate': p.lr,
      'optimizer.schedule': 'constant',
      'sanity.enabled': False, 'strategy': 'sgd', 'batch_size': 0,
      'sampling': 'with_replacement', 'num_steps': steps, 'eval_every_steps': steps,
      'checkpoint_every_steps': 0})
  with config.unlocked():
    config.init_params_path = NPZ_NAME
  return config


def npz_bytes(p: schema.Problem) -> bytes:
  """x_train, y_train, and the initial W, b (float32, as the page's request had them)."""
  buffer = io.BytesIO()
  np.savez(buffer, x_train=p.x, y_train=p.y, W=p.w, b=p.b)
  return buffer.getvalue()


def config_text(p: schema.Problem, steps: int) -> str:
  config = config_for(p, steps).to_dict()
  config.pop('init_params_path')
  squared = 'squared ' if p.squared else ''
  summary = (f'{p.num_points} points, {squared}{p.loss}, Δ={p.margin:g}, λ={p.reg:g}, '
             f'lr={p.lr:g}')
  return TEMPLATE.format(
      date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
      summary=summary, npz=NPZ_NAME, config=CONFIG_NAME, steps=config['num_steps'],
      body=pprint.pformat(config, width=96, sort_dicts=False))


def export(data: dict) -> dict:
  """`{"npz": base64, "config": text, "npz_name", "config_name", "steps"}` for a request
  holding the initial W and b, the points, the hyperparameters and `steps`."""
  p = schema.problem(data)
  schema.trainable(p)
  steps = schema.steps(data)
  return {'npz': base64.b64encode(npz_bytes(p)).decode('ascii'),
          'config': config_text(p, steps), 'npz_name': NPZ_NAME, 'config_name': CONFIG_NAME,
          'steps': steps or STEPS_IF_NONE}
