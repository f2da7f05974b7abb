"""Training and evaluation: one compiled path for a single run and for a sweep of K members.

A single run is a sweep of one member. Every array in the training state has a leading
members axis; the numeric hyperparameters (`hp`, see `config_lib.HYPER_FIELDS`) are `(K,)`
arrays, so one compiled program trains every member under `jax.vmap`. Steps are fused with
`jax.lax.scan` in chunks of `eval_every_steps` (shorter where a checkpoint is due); the
Python loop runs once per chunk (`Trainer.fit`).

Randomness: `jax.random.key(seed)` is split into named streams (`stream_key`); the batch at
step t comes from `fold_in(data_stream, t)`, so it depends only on the seed and the step.

The pieces: `spec.Spec` (the static part of a run), `state` (state, data, draws), `step`
(a step and a chunk), `tuning` (backend-dependent defaults), `objective` (what is minimized),
`evaluation` (a split's sums per member).
"""

import dataclasses
import functools
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hinge_jax import compaction, config_lib, distributed, lbfgs, optim, sharded, strategies
from hinge_jax.convergence import Convergence, StopRule, grad_norm_program, select_members
from hinge_jax.datasets import Dataset
from hinge_jax.errors import ConfigError
from hinge_jax.evaluation import (EvalFields, PenaltyFields, eval_chunk, penalty_values,
                                  shared_program)
from hinge_jax.mesh import Layout, layout_for
from hinge_jax.objective import objective, penalty  # noqa: F401 - objective re-exported
# Re-exported: the names callers have imported from `hinge_jax.train`
from hinge_jax.spec import Spec
from hinge_jax.state import (DeviceData, TrainState, batch_indices, init_state,  # noqa: F401
                             initial_params_program, pad_features, state_from_params,
                             unpad_features)
from hinge_jax.step import (chunk_program, train_chunk, train_chunk_deferred,  # noqa: F401
                            train_step)
from hinge_jax.streams import STREAMS, stream_key  # noqa: F401
from hinge_jax.tuning import (ACCELERATOR_FEATURE_MULTIPLE, GUARDS,  # noqa: F401
                              PAD_SAFE_OPTIMIZERS, SCALED_MIN_MEMBERS, Tuning,
                              forward_feature_blocks)

Array = jax.Array


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Trainer:
  """Compiled functions for one (config, dataset, members) setting, and the loop that uses them.

  Attributes:
    spec: the static part of the run.
    data: the splits on the device.
    hp: `(K,)` hyperparameter arrays.
    compile_time_s: seconds spent compiling (reported apart from training time).
    member_sharding: how the members axis is laid over devices (None: one device).
    tuning: speed settings of the training program (`Tuning`).
    reruns: chunks run twice: a deferred guard (`Tuning.guard`) found a member diverging.
  """
  spec: Spec
  data: DeviceData
  hp: dict
  eval_every: int
  compile_time_s: float = 0.0
  member_sharding: Any = None
  tuning: Tuning = Tuning()
  reruns: int = 0  # chunks a deferred guard found diverging and reran (`run_chunk`)
  stop: StopRule = StopRule()  # when a member has converged (`fit`)
  layout: Optional[Layout] = None  # the ('members', 'data') mesh (`mesh.py`)
  global_batch: bool = False  # mesh.global_batch: minibatches drawn over all rows
  convergence_record: Optional[Convergence] = None  # the last `fit`'s (`convergence.py`)
  # `fit` trains only the live members where that saves this many FLOPs a step (N·D·C each)
  compact_min_flops: float = compaction.COMPACT_MIN_FLOPS
  # compiled programs, shared by `with_hyper` and `with_tuning` copies (chunks keyed by tuning)
  _compiled: dict = dataclasses.field(default_factory=dict)

  @classmethod
  def create(cls, config: ml_collections.ConfigDict, dataset: Dataset, member_configs: list,
             *, devices=None, spec: Optional[Spec] = None,
             tuning: Optional[Tuning] = None) -> 'Trainer':
    """Puts data and the members' hyperparameters on the device(s).

    The devices (default: every process's, `jax.devices()`) form a ('members', 'data') mesh
    (`mesh.py`): `config.mesh.data` of them split every split's rows, and the members are
    sharded over the rest when they divide evenly among them (no data axis: the data are
    replicated and each device trains its share of the members with no communication).
    `spec` overrides the static settings (a sweep cut into programs shares one spec).
    `tuning`: speed settings of the training program (default `Tuning()`); its defaults that
    depend on the members a device trains are decided here (`Tuning.for_members`).
    """
    hp_np = config_lib.hyper_arrays(member_configs)
    spec = spec or Spec.create(config, dataset, hp_np)
    k = len(member_configs)
    split_bytes = sum(dataset.x[s].nbytes + dataset.y[s].nbytes for s in dataset.x)
    layout = layout_for(config, devices, k, split_bytes, 0)
    if layout.data_shards > 1:
      sharded.check_minibatches(config, spec, layout.data_shards)
    tuning = (tuning or Tuning()).for_members(spec, k // layout.member_shards)
    data = DeviceData.create(dataset, int(config.eval_batch_size), layout.replicated,
                             train_dtype=tuning.train_dtype(spec, dataset), rows=layout.rows,
                             shards=layout.data_shards)
    trainer = cls(spec=spec, data=data, hp={}, eval_every=int(config.eval_every_steps),
                  member_sharding=layout.members, layout=layout, tuning=tuning,
                  global_batch=bool((config.get('mesh') or {}).get('global_batch', False)),
                  stop=StopRule.from_config(config))
    return trainer.with_hyper(hp_np)

  def with_hyper(self, hp_np: dict) -> 'Trainer':
    """The same compiled programs and data for another set of members of the same count."""
    hp = {k: jax.device_put(np.asarray(v), self.member_sharding) for k, v in hp_np.items()}
    if self.hp and hp['seed'].shape != self.hp['seed'].shape:
      raise ValueError('with_hyper needs the same number of members')
    return dataclasses.replace(self, hp=hp)

  def with_tuning(self, tuning: Tuning) -> 'Trainer':
    """The same data, members and init/evaluation programs, training under `tuning` (its
    member-dependent defaults decided as `create` does). The data stay as stored: a
    `fullbatch_bf16` that would store them otherwise is refused."""
    k = self.num_members
    tuning = tuning.for_members(self.spec, k // self.layout.member_shards)
    if tuning.fullbatch_bf16 != self.tuning.fullbatch_bf16:
      raise ValueError('with_tuning keeps the stored data: create a Trainer for another '
                       'fullbatch_bf16')
    return dataclasses.replace(self, tuning=tuning, reruns=0)

  @property
  def num_members(self) -> int:
    return int(self.hp['seed'].shape[0])

  def init(self) -> TrainState:
    """The members' initial state. W0 comes from a program shared by every Trainer of these
    shapes in the process (`state.initial_params_program`); the rest is compiled once,
    shared by `with_hyper` and `with_tuning` copies."""
    first = 'init' not in self._compiled
    t0 = time.perf_counter()
    params = initial_params_program(self.spec, self.member_sharding)(self.hp)
    if first:
      self._compiled['init'] = jax.jit(
          functools.partial(state_from_params, spec=self.spec),
          out_shardings=self.member_sharding).lower(params, self.hp).compile()
      self.compile_time_s += time.perf_counter() - t0
    return self._compiled['init'](params, self.hp)

  def chunk_program(self, length: int, *, rerun: bool = False):
    """The jitted program of `length` steps (`step.chunk_program`; with a data axis, under
    `jax.shard_map`, `sharded.chunk_program`, unless minibatches are drawn globally: then XLA
    gathers each batch's rows from the shards), before compiling."""
    if self.layout.data_shards > 1 and (self.spec.full_batch or not self.global_batch):
      return sharded.chunk_program(self.spec, length, self.tuning, self.layout, self.data,
                                   rerun=rerun)
    return chunk_program(self.spec, length, self.tuning, rerun=rerun)

  def compiled_chunk(self, state: TrainState, length: int, *, rerun: bool = False):
    """The compiled program of `length` training steps (compiled once per length).

    A `jax.stages.Compiled`: its `as_text()` is XLA's optimized program, what to read to see
    how a step was fused (which kernels, which matmul library calls). Under a deferred guard
    (`Tuning.guard`) it is `train_chunk_deferred`'s program, and `rerun=True` gives the one
    that reruns a chunk that diverged (`train_chunk`'s).
    """
    key = ('chunk', length, rerun, self.tuning)
    if key not in self._compiled:
      t0 = time.perf_counter()
      fn = self.chunk_program(length, rerun=rerun)
      lowered = fn.lower(state, np.int32(0), self.data, self.hp)
      options = self.tuning.program_options(self.spec, rerun=rerun)
      try:
        self._compiled[key] = lowered.compile(compiler_options=options or None)
      except Exception as e:  # noqa: BLE001 - XLA's own error, rephrased in one line
        first = (str(e).strip().splitlines() or [''])[0]
        if not options or 'option' not in first:
          raise
        raise ValueError(f'XLA rejected tuning.compiler_options {options}: {first}; '
                         'fix the option name or value') from None
      self.compile_time_s += time.perf_counter() - t0
    return self._compiled[key]

  def run_chunk(self, state: TrainState, start: int, length: int) -> tuple[TrainState, Array]:
    """`length` steps from step `start`: `(state, (length, K) losses)`. Under a deferred guard
    it waits for the chunk's end check, and reruns the chunk under a per-step guard where a
    member diverged in it (`Tuning.guard`)."""
    # A NumPy scalar travels with the call's arguments; `jnp.int32(start)` would first run a
    # program of its own on the device, a conversion and a copy.
    args = (np.int32(start), self.data, self.hp)
    if self.tuning.guard_mode(self.spec) != 'deferred':
      return self.compiled_chunk(state, length)(state, *args)
    out, chunk_losses, exact = self.compiled_chunk(state, length)(state, *args)
    if bool(distributed.to_host(exact)):
      return out, chunk_losses
    self.reruns += 1
    return self.compiled_chunk(state, length, rerun=True)(state, *args)

  def evaluate(self, params, split: str) -> dict:
    """Per-member `loss` (data loss + λR), `accuracy` and `confusion` on a split (numpy)."""
    n = self.data.size(split)
    chunk, total = self.data.chunk, None
    key = ('eval', str(self.data.x[split].dtype))  # the training split may be stored apart
    if key not in self._compiled or 'penalty' not in self._compiled:
      t0 = time.perf_counter()
      spec = self.spec
      if self.layout.data_shards == 1:
        self._compiled[key] = shared_program(
            eval_chunk, EvalFields(spec.loss, spec.squared, spec.num_classes),
            params, self.data.x[split][:chunk], self.data.y[split][:chunk],
            jnp.ones((chunk,), bool), self.data, self.hp)
      else:
        self._compiled[key] = None  # `sharded.eval_program`s below
      if 'penalty' not in self._compiled:
        self._compiled['penalty'] = shared_program(
            penalty_values, PenaltyFields(spec.reg, spec.regularize_bias, spec.bias_trick),
            params, self.hp)
      self.compile_time_s += time.perf_counter() - t0
    sharded_key = ('eval', split)  # with a data axis: one program per split, sums over 'data'
    if self.layout.data_shards > 1 and sharded_key not in self._compiled:
      t0 = time.perf_counter()
      fields = EvalFields(self.spec.loss, self.spec.squared, self.spec.num_classes)
      self._compiled[sharded_key] = sharded.eval_program(
          eval_chunk, fields, self.layout, self.data, split).lower(
              params, self.data, self.hp).compile()
      self.compile_time_s += time.perf_counter() - t0
    for start in (range(0, max(n, 1), chunk) if self.layout.data_shards == 1 else ()):
      valid = jnp.arange(start, start + chunk) < n
      part = self._compiled[key](params, self.data.x[split][start:start + chunk],
                                 self.data.y[split][start:start + chunk], valid, self.data,
                                 self.hp)
      total = part if total is None else jax.tree.map(jnp.add, total, part)
    if self.layout.data_shards > 1:
      total = self._compiled[sharded_key](params, self.data, self.hp)
    total = distributed.to_host(total)  # (K,) per member, gathered from every process
    penalties = distributed.to_host(self._compiled['penalty'](params, self.hp))
    conf = total['confusion']
    with np.errstate(invalid='ignore', divide='ignore'):
      acc = np.trace(conf, axis1=1, axis2=2) / n if n else np.full(self.num_members, np.nan)
      data_loss = total['loss_sum'] / n if n else np.full(self.num_members, np.nan)
    return {'loss': data_loss + penalties, 'data_loss': data_loss, 'accuracy': acc,
            'confusion': conf}

  def fit(self, state: TrainState, *, start_step: int = 0,
          on_eval: Optional[Callable[[int, TrainState, dict], bool]] = None,
          chunk_every: int = 0,
          on_chunk: Optional[Callable[[int, TrainState, dict], bool]] = None,
          pending: Optional[dict] = None) -> TrainState:
    """Trains from `start_step` to `spec.last_step`, evaluating every `eval_every` steps.

    `on_eval(step, state, row)` receives each evaluation (`row` holds `(K,)` arrays); it
    returns False to stop early. Training also stops once every member has diverged.

    Convergence (`self.stop`, `convergence.py`): every `stop.check_every` steps each member's
    objective is checked (with L-BFGS, the value, gradient and predicted decrease its line
    search and memory give: no extra pass); a converged member is frozen at its state then
    (its later updates are discarded), and training stops once every member has converged or
    diverged. The record is left in `self.convergence_record`.

    Resumable runs: `chunk_every > 0` also ends a compiled chunk every `chunk_every` steps,
    and `on_chunk(step, state, pending)` runs after every chunk (after `on_eval`); it returns
    False to stop (a checkpoint and a signal check go there). `pending` holds the batch-loss
    sums of the evaluation period so far and the convergence record (`{'sum': [K], 'count':
    [K], 'convergence': {...}}`, JSON-able); passing it back with `start_step` resumes
    mid-period with the same `batch_loss` and windows as an uninterrupted run. Chunk
    boundaries depend only on the step, so they are the same however often a run is restarted.

    Once the members still training fit a program of half the size or less and dropping the
    rest saves `compact_min_flops` a step, the chunks train only them (`compaction.py`):
    a frozen member's evaluations are those of its frozen state, and it logs no batch loss.
    """
    step, last, every = start_step, self.spec.last_step, self.stop.check_every
    k = self.num_members
    acc = {'sum': np.zeros(k), 'count': np.zeros(k, np.int64)}
    record = Convergence.create(self.stop, k, start_step)
    if pending:
      acc = {'sum': np.asarray(pending['sum'], np.float64),
             'count': np.asarray(pending['count'], np.int64)}
      if pending.get('convergence'):
        record = Convergence.from_json(self.stop, pending['convergence'])
    self.convergence_record = record
    # the converged members' states (a resumed state holds them already)
    held = select_members(record.converged, state, state) if record.converged.any() else None
    part = None  # compaction.Part once only the live members train
    searched = self.spec.full_batch and self.spec.optimizer in optim.LINE_SEARCH_OPTIMIZERS
    evaluate = lambda split: (part or self).evaluate(state.params, split)
    grad_norms = lambda: (self._grad_norms(state.params) if part is None
                          else part.grad_norms(state.params))
    while step < last:
      length = min(self.eval_every - step % self.eval_every, every - step % every, last - step)
      if chunk_every > 0:
        length = min(length, chunk_every - step % chunk_every)
      if part is None:
        state, batch_losses = self.run_chunk(state, step, length)
        values = distributed.to_host(batch_losses).astype(np.float64)
      else:
        state, values = part.run(self, state, step, length)
      if held is not None:
        state = select_members(record.converged, held, state)
      step += length
      finite = np.isfinite(values)
      acc['sum'] = acc['sum'] + np.where(finite, values, 0.0).sum(axis=0)
      acc['count'] = acc['count'] + finite.sum(axis=0)
      stop = False
      train = None
      if step % every == 0 or step == last:
        if searched:  # the line search's value and gradient at the current params
          f, norms, predicted = distributed.to_host(lbfgs.current(
              state.params, state.opt_state, self.spec.memory_size))
          norms = None if self.stop.grad_tol is None else norms
        else:
          train, norms, predicted = evaluate('train'), grad_norms(), None
          f = train['loss']
        newly = record.check(step, f, norms, predicted)
        if newly.any():
          held = select_members(newly, state, state if held is None else held)
        frozen = record.converged | distributed.to_host(state.diverged)
        stop = bool(np.all(frozen))
        shrunk = None if stop or step >= last else compaction.shrunk(
            self, frozen, k if part is None else len(part.members))
        if shrunk is not None:  # the frozen members' values are final: kept
          train = evaluate('train') if train is None else train
          part = compaction.Part.create(self, shrunk, {'train': train, 'val': evaluate('val'),
                                                       'grad_norm': norms})
      if step % self.eval_every == 0 or step == last or stop:
        if train is None:
          train = evaluate('train')
        val = evaluate('val')
        row = {'step': step, 'loss': train['loss'], 'train_accuracy': train['accuracy'],
               'val_accuracy': val['accuracy'], 'val_loss': val['loss'],
               'batch_loss': np.where(acc['count'] > 0,
                                      acc['sum'] / np.maximum(acc['count'], 1), np.nan),
               'learning_rate': distributed.to_host(jax.vmap(functools.partial(
                   optim.learning_rate, self.spec.schedule, step - 1,
                   num_steps=self.spec.num_steps, decay_steps=self.spec.decay_steps))(self.hp)),
               'diverged': distributed.to_host(state.diverged)}
        acc = {'sum': np.zeros(k), 'count': np.zeros(k, np.int64)}
        if on_eval is not None and on_eval(step, state, row) is False:
          stop = True
        if bool(np.all(row['diverged'])):
          stop = True
      if on_chunk is not None and on_chunk(step, state, {
          'sum': acc['sum'].tolist(), 'count': acc['count'].tolist(),
          'convergence': record.to_json()}) is False:
        stop = True
      if stop:
        break
    return state

  def _grad_norms(self, params) -> Optional[np.ndarray]:
    """(K,) ‖∇f‖ of the full objective where `stop.grad_tol` asks for it, else None."""
    if self.stop.grad_tol is None:
      return None
    key = 'grad_norm'
    if key not in self._compiled:
      t0 = time.perf_counter()
      self._compiled[key] = grad_norm_program(self.spec).lower(
          params, self.data, self.hp).compile()
      self.compile_time_s += time.perf_counter() - t0
    return distributed.to_host(self._compiled[key](params, self.data, self.hp))


def check_fits(config: ml_collections.ConfigDict, dataset: Dataset) -> None:
  """Config values that depend on the data: batch size against the training set."""
  n = dataset.size('train')
  if config.batch_size == 0 and config.sampling == 'epochs':
    raise ConfigError('batch_size=0 (full batch) and sampling=epochs do not mix; '
                      'use sampling=with_replacement')
  if config.batch_size > n and not strategies.get(config.strategy).full_batch:
    raise ConfigError(f'batch_size={config.batch_size} is larger than the training set '
                      f'({n} examples); use batch_size <= {n}')
  strategies.check_budget(config, dataset.num_features * dataset.num_classes
                          + (0 if dataset.bias_trick else dataset.num_classes))
