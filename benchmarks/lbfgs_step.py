"""L-BFGS's own work beside the objective's: one step of K members against one batched
`value_and_grad`, and the parts of the difference (docs/performance.md).

  python benchmarks/lbfgs_step.py [--n=2000] [--members=16,256] [--step_repeats=5]

Case 3's shape of benchmarks/solvers.py (synthetic embeddings, D = 512, C = 100, λ log-spaced
from 10⁻⁵ to 10⁻¹), from W0 = 0 after one step. Per member count, interleaved, median of
--step_repeats: `Trainer.run_chunk(state, i, 1)` (the product's step), the members'
`value_and_grad` on the same blocked full batch (`fullbatch.make_objective`), optax's
`scale_by_lbfgs` update (the direction from the memory) and a `jnp.where` over the L-BFGS
state (as a step's member selects do). Ratios are to `value_and_grad` of the same run.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

from benchmarks import solvers  # noqa: E402 - its flags (embed_*) are not used here

_N = flags.DEFINE_integer('n', 2000, 'Training rows.', lower_bound=1)
_MEMBERS = flags.DEFINE_list('members', ['16', '256'], 'Member counts (λ values).')
flags.register_validator('members', lambda v: all(m.isdigit() and int(m) > 0 for m in v),
                         message='--members must be positive integers, e.g. --members=16,256')
_REPEATS_STEP = flags.DEFINE_integer('step_repeats', 5, 'Timed calls of each, interleaved.',
                                     lower_bound=1)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from benchmarks import common
  from hinge_jax import fullbatch
  ds = solvers.embeddings_dataset(_N.value, 512, 100)
  rows = []
  for k in map(int, _MEMBERS.value):
    trainer = solvers.hinge_jax_trainer(ds, list(np.geomspace(1e-5, 1e-1, k)), 400)
    spec, hp = trainer.spec, trainer.hp
    state, _ = trainer.run_chunk(trainer.init(), 0, 1)
    x, y = fullbatch.blocks(trainer.data, spec.num_train)
    objective = fullbatch.make_objective(spec=spec)
    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(
        lambda p, h: objective(p, x, y, h))))
    memory = optax.scale_by_lbfgs(spec.memory_size)
    direction = jax.jit(jax.vmap(memory.update))
    copy = lambda tree: jax.tree.map(jnp.copy, tree)  # a chunk donates the state's buffers
    lbfgs_state, grads = copy(state.opt_state['lbfgs']), copy(state.opt_state['search'].grad)
    params = copy(state.params)
    keep = jnp.zeros((k,), bool)
    select = jax.jit(lambda a, b: jax.tree.map(
        lambda u, v: jnp.where(keep.reshape((-1,) + (1,) * (u.ndim - 1)), u, v), a, b))
    step = {'i': 1}

    def one_step():
      nonlocal state
      state, _ = trainer.run_chunk(state, step['i'], 1)
      step['i'] += 1
      jax.block_until_ready(state)
    fns = {'step': one_step,
           'value_and_grad': lambda: jax.block_until_ready(value_and_grad(state.params, hp)),
           'direction': lambda: jax.block_until_ready(direction(grads, lbfgs_state, params)),
           'select': lambda: jax.block_until_ready(select(lbfgs_state, lbfgs_state))}
    t = common.interleaved(fns, _REPEATS_STEP.value)
    base = t['value_and_grad']['median']
    gflop = 4 * _N.value * 512 * 100 * k / 1e9
    state_mb = sum(a.nbytes for a in jax.tree.leaves(lbfgs_state)) / 1e6
    rows.append([_N.value, k, f'{gflop / base:.0f}'] + [
        f'{t[name]["median"] * 1e3:.1f} ({t[name]["median"] / base:.2f})' for name in fns]
        + [f'{state_mb:.0f}'])
  common.print_table('ms (ratio to value_and_grad), median', [
      'N', 'members', 'v&g GFLOP/s', 'L-BFGS step', 'value_and_grad', 'direction (optax)',
      'select over state', 'state MB'], rows)
  common.write_json('benchmarks/results/lbfgs_step.json', {
      'benchmark': 'lbfgs_step', 'n': _N.value, 'rows': rows, 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
