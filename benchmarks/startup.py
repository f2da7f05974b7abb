"""Startup cost: wall time of `python -m hinge_jax.main` on the default config, cold and warm.

  python benchmarks/startup.py [--quick] [--repeats=3]

Cold: a fresh, empty JAX compilation cache (`HINGE_JAX_CACHE_DIR`) for each run. Warm: the
cache filled by a previous run of the same config. Every run gets a fresh workdir (an existing
one would be resumed). Targets (2-core CPU): under 15 s cold and under 8 s warm.
"""

import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_QUICK = flags.DEFINE_bool('quick', False, 'One repeat.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Runs per condition.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/startup.json', 'JSON output.')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(cache_dir: str, workdir: str) -> tuple[float, float | None]:
  """Wall seconds of one run, and the compile seconds it reported in results.json."""
  import json
  env = dict(os.environ, HINGE_JAX_CACHE_DIR=cache_dir)
  env.pop('XLA_FLAGS', None)
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, '-m', 'hinge_jax.main', f'--workdir={workdir}'],
                        cwd=REPO, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if proc.returncode:
    raise SystemExit(f'run failed: {proc.stderr[-2000:]}')
  with open(os.path.join(workdir, 'results.json')) as f:
    return wall, json.load(f).get('compile_time_s')


def main(argv):
  del argv
  from benchmarks import common
  repeats = 1 if _QUICK.value else _REPEATS.value
  base = tempfile.mkdtemp(prefix='hinge_jax_startup_')
  cold, warm = [], []
  for i in range(repeats):
    cache = os.path.join(base, f'cache{i}')
    cold.append(run_once(cache, os.path.join(base, f'cold{i}')))
    warm.append(run_once(cache, os.path.join(base, f'warm{i}')))

  def stats(runs):
    walls = sorted(w for w, _ in runs)
    return {'median': walls[len(walls) // 2], 'min': walls[0], 'max': walls[-1], 'times': walls,
            'compile_s': [c for _, c in runs]}
  s_cold, s_warm = stats(cold), stats(warm)
  common.print_table(
      f'startup: python -m hinge_jax.main (default digits config), wall s median (min–max) of '
      f'{repeats}',
      ['condition', 'wall s', 'compile s (reported)', 'target'],
      [['cold cache', common.fmt(s_cold, 1, 2), ', '.join(f'{c:.2f}' for c in s_cold['compile_s']),
        '< 15 s'],
       ['warm cache', common.fmt(s_warm, 1, 2), ', '.join(f'{c:.2f}' for c in s_warm['compile_s']),
        '< 8 s']])
  for name, s, goal in (('cold', s_cold, 15), ('warm', s_warm, 8)):
    print(f'  {name}: {s["median"]:.2f} s (target < {goal} s) '
          f'{"met" if s["median"] < goal else "NOT met"}')
  common.write_json(_OUT.value, {'benchmark': 'startup', 'cold': s_cold, 'warm': s_warm,
                                 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
