"""Convergence, per member: when to stop, and how far from converged a run ended.

Every `stop.check_every` steps (0: `eval_every_steps`) the loop measures each member's full
training objective f (and, with `stop.grad_tol`, its gradient norm). A member has converged
when the relative decrease over the window, (f_before − f_now)/|f_before|, is at most
`stop.tol`, or when ‖∇f‖ ≤ `stop.grad_tol`; from then on it is frozen at that state, and the
run ends when every member has converged (or diverged), else at `stop.max_steps`. L-BFGS's
line search has f and ∇f at hand, and its memory predicts the next step's decrease, which
must be within `stop.tol` too (`lbfgs.current`): one small step is not convergence.

At the end, `final_fields` reports per member `converged`, `steps`, the objective and its
gradient norm recomputed in float64 on the host (for a hinge, the norm of the subgradient
`jax.grad` gives), and the last window's decrease: every run reports them, stopped or not.
"""

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hinge_jax import distributed, fullbatch
from hinge_jax.datasets import Dataset, rows
from hinge_jax.objective import penalty

Array = jax.Array
FIELDS = ('converged', 'steps', 'objective', 'grad_norm', 'window_decrease')  # per member
HOST_BLOCK_ROWS = 512  # rows per block of the float64 pass on the host


@dataclasses.dataclass(frozen=True)
class StopRule:
  """The `stop` block: tolerances (None: that test is off) and the window in steps."""
  tol: Optional[float] = None
  grad_tol: Optional[float] = None
  check_every: int = 0

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'StopRule':
    stop = config.get('stop') or {}
    every = int(stop.get('check_every', 0) or 0) or int(config.eval_every_steps)
    tol, grad_tol = stop.get('tol'), stop.get('grad_tol')
    return cls(tol=None if tol is None else float(tol),
               grad_tol=None if grad_tol is None else float(grad_tol), check_every=every)


@dataclasses.dataclass
class Convergence:
  """The host's record of K members' convergence, updated at every check (`check`)."""
  rule: StopRule
  previous: np.ndarray  # (K,) objective at the last check (NaN: none yet)
  window_decrease: np.ndarray  # (K,) relative decrease over the last window (NaN: none yet)
  grad_norm: np.ndarray  # (K,) gradient norm at the last check (NaN: not measured)
  converged: np.ndarray  # (K,) bool
  steps: np.ndarray  # (K,) the step it converged at, else the last step reached

  @classmethod
  def create(cls, rule: StopRule, k: int, start_step: int = 0) -> 'Convergence':
    nan = np.full(k, np.nan)
    return cls(rule, nan.copy(), nan.copy(), nan.copy(), np.zeros(k, bool),
               np.full(k, start_step, np.int64))

  def check(self, step: int, objective, grad_norm=None, predicted=None) -> np.ndarray:
    """Records the members' objective (and gradient norm) at `step`; returns the (K,) mask
    of members that converged here. Converged members keep their values. `predicted`: the
    next step's predicted decrease (L-BFGS), which `tol` must bound relative to f as well."""
    f = np.asarray(objective, np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
      decrease = (self.previous - f) / np.abs(self.previous)
    live = ~self.converged
    self.window_decrease = np.where(live, decrease, self.window_decrease)
    self.previous = np.where(live, f, self.previous)
    if grad_norm is not None:
      self.grad_norm = np.where(live, np.asarray(grad_norm, np.float64), self.grad_norm)
    done = np.zeros_like(live)
    if self.rule.tol is not None:
      small = self.window_decrease <= self.rule.tol  # NaN (no window yet, diverged): False
      if predicted is not None:  # and the next step's predicted decrease
        with np.errstate(invalid='ignore', divide='ignore'):
          small &= np.asarray(predicted, np.float64) / np.abs(f) <= self.rule.tol
      done |= small
    if self.rule.grad_tol is not None and grad_norm is not None:
      done |= self.grad_norm <= self.rule.grad_tol
    newly = live & done & np.isfinite(f)
    self.converged = self.converged | newly
    self.steps = np.where(self.converged & ~newly, self.steps, step)
    return newly

  def to_json(self) -> dict:
    """JSON-able (a checkpoint's `pending`); `from_json` reads it back."""
    as_list = lambda a: [None if not np.isfinite(v) else float(v) for v in a]
    return {'previous': as_list(self.previous), 'window_decrease': as_list(self.window_decrease),
            'grad_norm': as_list(self.grad_norm), 'converged': self.converged.tolist(),
            'steps': self.steps.tolist()}

  @classmethod
  def from_json(cls, rule: StopRule, saved: dict) -> 'Convergence':
    floats = lambda v: np.asarray([np.nan if x is None else x for x in v], np.float64)
    return cls(rule, floats(saved['previous']), floats(saved['window_decrease']),
               floats(saved['grad_norm']), np.asarray(saved['converged'], bool),
               np.asarray(saved['steps'], np.int64))


def _select(mask: Array, held, state):
  pick = lambda h, s: jnp.where(mask.reshape((-1,) + (1,) * (s.ndim - 1)), h, s)
  return jax.tree.map(pick, held, state)


select_members = jax.jit(_select)  # new buffers: the held copy survives a donating chunk


def _grad_norms(params, data, hp, *, spec):
  """(K,) ‖∇f‖ of every member's full training objective (float32, on the device)."""
  x, y = fullbatch.blocks(data, spec.num_train)
  objective = fullbatch.make_objective(spec=spec)

  def one(p, member_hp):
    g = jax.grad(objective)(p, x, y, member_hp)
    return jnp.sqrt(sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(g)))
  return jax.vmap(one)(params, hp)


@functools.lru_cache(maxsize=None)
def grad_norm_program(spec):
  """`_grad_norms` jitted for `spec`."""
  return jax.jit(functools.partial(_grad_norms, spec=spec))


def host_parts(dataset: Dataset, dtype=np.float64, block: Optional[tuple] = None) -> tuple:
  """The training split (its rows `[start, stop)` when `block` is given) in `fullbatch.blocks`'
  layout, on the host, without copying it: the whole blocks of `HOST_BLOCK_ROWS` rows as a
  view, and the remaining rows as one padded block (label −1). Returns `(parts, mean,
  scale)`, `parts` a tuple of `(x blocks, labels)`."""
  start, stop = block or (0, dataset.size('train'))
  x = dataset.x['train'][start:stop]
  y = np.asarray(dataset.y['train'][start:stop], np.int32)
  n, d = x.shape
  whole = n // HOST_BLOCK_ROWS * HOST_BLOCK_ROWS
  parts = []
  if whole:
    parts.append((x[:whole].reshape(-1, HOST_BLOCK_ROWS, d),
                  y[:whole].reshape(-1, HOST_BLOCK_ROWS)))
  if n > whole:
    pad = HOST_BLOCK_ROWS - (n - whole)
    parts.append((np.concatenate([x[whole:], np.zeros((pad, d), x.dtype)])[None],
                  np.concatenate([y[whole:], np.full(pad, -1, np.int32)])[None]))
  return tuple(parts), np.asarray(dataset.mean, dtype), np.asarray(dataset.scale, dtype)


def objective_and_grad_norm_f64(params, hp: dict, dataset: Dataset, *, spec
                                ) -> tuple[np.ndarray, np.ndarray]:
  """(K,) full training objective and ‖∇‖ of every member, in float64 on the host's CPU.

  `params` and `hp` hold K members (`hp` as `config_lib.hyper_arrays(configs, np.float64)`
  gives it: the configs' exact λ, not its float32 rounding). The data loss is `fullbatch`'s
  blocked pass, so the gradient of a hinge is `jax.grad`'s subgradient.
  """
  cpu = jax.local_devices(backend='cpu')[0]  # this process's (another's cannot be read)
  with jax.enable_x64(True), jax.default_device(cpu):
    params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
    hp = {k: jnp.asarray(np.asarray(v, np.uint32 if k == 'seed' else np.float64))
          for k, v in hp.items()}
    # each process reads its rows only where the data axis spans processes (then no process
    # holds every row); else every process reads all, as one process does: the same bits
    spans = spec.data_shards > jax.local_device_count()
    block = rows.process_block(dataset.size('train')) if spans else None
    value, grad = partial_value_and_grad(params, hp, dataset, spec=spec, block=block,
                                         with_penalty=not spans or jax.process_index() == 0)
    if spans:
      value, grad = distributed.summed((value, grad))  # every process's rows, added
    return value, np.asarray(_norms(grad), np.float64)


@jax.jit
def _norms(grad):
  """(K,) norm of every member's gradient tree."""
  squares = (jnp.sum(g * g, axis=tuple(range(1, g.ndim))) for g in jax.tree.leaves(grad))
  return jnp.sqrt(sum(squares))


def partial_value_and_grad(params, hp: dict, dataset: Dataset, *, spec,
                           block: Optional[tuple], with_penalty: bool) -> tuple:
  """(K,) float64 data loss of the training rows `block`, `[start, stop)` (None: every row;
  its share of the mean over all N), and its gradient tree, plus the penalty's when
  `with_penalty`: the partial sums of processes' blocks add up to the objective and its
  gradient. Call under `jax.enable_x64`."""
  value, grad = _partial_program(spec, with_penalty)(params, host_parts(dataset, block=block), hp)
  return np.asarray(value, np.float64), jax.tree.map(lambda g: np.asarray(g, np.float64), grad)


@functools.lru_cache(maxsize=None)
def _partial_program(spec, with_penalty: bool):
  """`partial_value_and_grad`'s sums, jitted once per spec (any dtype): the penalty, then the
  data loss of each part of `host_parts` in order (each part's is its sum over all N rows)."""
  data_loss = fullbatch.make_objective(spec=spec)

  def one(p, data, member_hp):
    parts, mean, scale = data
    no_penalty = {**member_hp, 'reg_strength': jnp.zeros_like(member_hp['reg_strength'])}
    value, g = jax.value_and_grad(functools.partial(penalty, spec=spec))(p, member_hp)
    if not with_penalty:
      value, g = jnp.zeros_like(value), jax.tree.map(jnp.zeros_like, g)
    for x, y in parts:
      v, gp = jax.value_and_grad(data_loss)(p, (x, mean, scale), y, no_penalty)
      value, g = value + v, jax.tree.map(jnp.add, g, gp)
    return value, g
  return jax.jit(jax.vmap(one, in_axes=(0, None, 0)))


def final_fields(record: Optional[Convergence], params, hp: dict, dataset: Dataset, *, spec,
                 last_step: int) -> list[dict]:
  """Per member: `{converged, steps, objective, grad_norm, window_decrease}` (see the module).

  `record`: the loop's (None: a run that trained no step here, e.g. a finished run
  re-summarized without its record: nothing converged, `last_step` steps).
  """
  k = int(jax.tree.leaves(params)[0].shape[0])
  record = record or Convergence.create(StopRule(), k, last_step)
  value, norm = objective_and_grad_norm_f64(params, hp, dataset, spec=spec)
  out = []
  for j in range(k):
    finite = lambda v: float(v) if np.isfinite(v) else None
    out.append({'converged': bool(record.converged[j]), 'steps': int(record.steps[j]),
                'objective': finite(value[j]), 'grad_norm': finite(norm[j]),
                'window_decrease': finite(record.window_decrease[j])})
  return out
