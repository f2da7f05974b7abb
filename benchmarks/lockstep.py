"""Converged members leaving the program: a λ sweep trained by `Trainer.fit` to `stop.tol`,
with the compaction off and on, side by side (issue #24's lock-step waste).

  python benchmarks/lockstep.py --embed_n=10000 --repeats=1 [--tol=1e-7]

(--embed_n, --embed_lambdas, --max_steps and --repeats are benchmarks/solvers.py's flags.)

Case 3 of benchmarks/solvers.py (synthetic embeddings, D = 512, C = 100, 16 λ from 10⁻⁵ to
10⁻¹), L-BFGS from W0 = 0, `stop.tol` checked every step. Each variant runs once to compile,
then --repeats timed fits alternating off/on (--repeats=0: the first fits, compile
excluded); the table gives the median seconds (compile excluded), the steps each member
took and the largest relative difference of the final float64 objectives between the two.
"""

import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

from benchmarks import solvers  # noqa: E402 - its flags: embed_n, embed_lambdas, max_steps, repeats

_TOL = flags.DEFINE_float('tol', 1e-7, 'stop.tol: relative decrease over one step.')
_N, _K, _MAX, _REPEATS = solvers._EMBED_N, solvers._EMBED_K, solvers._MAX_STEPS, solvers._REPEATS

import numpy as np  # noqa: E402


def trainer_for(dataset, lams):
  from hinge_jax.convergence import StopRule
  return dataclasses.replace(solvers.hinge_jax_trainer(dataset, lams, _MAX.value),
                             stop=StopRule(tol=_TOL.value, check_every=1))


def main(argv):
  del argv
  import jax
  from hinge_jax import metadata
  ds = solvers.embeddings_dataset(_N.value, 512, 100)
  lams = list(np.geomspace(1e-5, 1e-1, _K.value))
  base = trainer_for(ds, lams)
  variants = {'off': dataclasses.replace(base, compact_min_flops=float('inf')),
              'on': dataclasses.replace(base, compact_min_flops=0.0, _compiled={})}
  scale = np.float32(ds.scale)
  x = ((ds.x['train'].astype(np.float32) - ds.mean) * scale).astype(np.float32)
  y = ds.y['train']
  times = {v: [] for v in variants}
  final = {}
  print(f'N={_N.value} D=512 C=100, {len(lams)} λ, stop.tol={_TOL.value:g} every step, '
        f'{jax.default_backend()}', flush=True)
  for repeat in range(_REPEATS.value + 1):  # the first fit of each compiles
    for name, trainer in variants.items():
      compile_before = trainer.compile_time_s
      t0 = time.perf_counter()
      state = trainer.fit(trainer.init())
      jax.block_until_ready(state)
      seconds = time.perf_counter() - t0 - (trainer.compile_time_s - compile_before)
      print(f'  {name} fit {repeat}: {seconds:.1f} s (+ {trainer.compile_time_s - compile_before:.1f} s '
            f'compile), steps {trainer.convergence_record.steps.tolist()}', flush=True)
      if repeat or not _REPEATS.value:  # --repeats=0: the first fits, compile excluded
        times[name].append(seconds)
      w, b = np.asarray(state.params['W']), np.asarray(state.params['b'])
      final[name] = [solvers.objective64(w[k], b[k], x, y, lam) for k, lam in enumerate(lams)]
  off, on = statistics.median(times['off']), statistics.median(times['on'])
  gap = max(abs(a - b) / abs(a) for a, b in zip(final['off'], final['on']))
  print('\n| compaction | seconds (median) | ratio to off |\n|---|---|---|')
  print(f'| off (all members to the end) | {off:.1f} | 1.00 |')
  print(f'| on (`Trainer.fit` default where it pays) | {on:.1f} | {on / off:.2f} |')
  print(f'\nfinal objectives, largest relative difference on vs off: {gap:.1e}')
  print(f'versions: {metadata.run_metadata().get("versions", "")}')


if __name__ == '__main__':
  app.run(main)
