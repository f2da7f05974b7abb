"""The static part of a run (`Spec`): what selects code and shapes, so a change recompiles."""

import dataclasses

import ml_collections
import numpy as np

from hinge_jax import strategies
from hinge_jax.datasets import Dataset


@dataclasses.dataclass(frozen=True)
class Spec:
  """Everything static about a run: it selects code and shapes (a change recompiles)."""
  strategy: str
  loss: str
  squared: bool
  reg: str
  regularize_bias: bool
  bias_trick: bool
  optimizer: str
  schedule: str
  num_steps: int
  decay_steps: int
  batch_size: int
  sampling: str
  num_train: int
  num_features: int
  num_classes: int
  full_batch: bool  # batch_size=0: every step sees the whole training set
  shared_data: bool  # every member has the same seed, so they share each minibatch
  max_norm: bool  # whether any member projects onto a max-norm ball
  num_candidates: int = 1  # random_search: candidates per step
  num_proposals: int = 1  # random_local_search: proposals per step
  fd_chunk: int = 256  # numerical_gradient: coordinates per vmapped batch
  memory_size: int = 10  # lbfgs: past steps remembered
  max_steps: int = 0  # the loop's cap (stop.max_steps; 0: num_steps)
  data_axis: str = ''  # inside `jax.shard_map`: the mesh axis the rows are split over
  data_shards: int = 1  # and its size (`sharded.py`)

  @property
  def last_step(self) -> int:
    """The step the loop ends at unless every member converges first."""
    return self.max_steps or self.num_steps

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, dataset: Dataset, hp: dict) -> 'Spec':
    steps_per_epoch = max(dataset.size('train') // max(int(config.batch_size), 1), 1)
    strategy = config.get('strategy', 'sgd')
    full_batch = int(config.batch_size) == 0 or strategies.get(strategy).full_batch
    return cls(
        strategy=strategy, loss=config.loss.name, squared=bool(config.loss.squared), reg=config.reg.name,
        regularize_bias=bool(config.reg.regularize_bias), bias_trick=dataset.bias_trick,
        optimizer=config.optimizer.name, schedule=config.optimizer.schedule,
        num_steps=int(config.num_steps),
        decay_steps=int(config.optimizer.decay_steps) or steps_per_epoch,
        batch_size=dataset.size('train') if full_batch else int(config.batch_size),
        sampling=config.sampling,
        num_train=dataset.size('train'), num_features=dataset.num_features,
        num_classes=dataset.num_classes, full_batch=full_batch,
        shared_data=bool(np.all(hp['seed'] == hp['seed'][0])),
        max_norm=bool(np.any(hp['max_norm'] > 0)),
        num_candidates=int(config.get('search', {}).get('num_candidates', 1)),
        num_proposals=int(config.get('search', {}).get('num_proposals', 1)),
        fd_chunk=int(config.get('numerical', {}).get('chunk', 256)),
        memory_size=int(config.optimizer.get('memory_size', 10)),
        max_steps=int((config.get('stop') or {}).get('max_steps', 0) or 0))
