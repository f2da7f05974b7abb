"""Redraws a run's pictures from its saved files: `python -m hinge_jax.plot --workdir=DIR`.

Reads `results.json`, `metrics.jsonl` and `params.npz` from the workdir and writes
`DIR/plots/*.png` (see `hinge_jax.plots`). A workdir without those files stops with one line.
"""

import os
import sys

from absl import app, flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'A finished run\'s directory.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  from hinge_jax import plots  # after flags: imports matplotlib
  workdir = _WORKDIR.value or ''
  missing = [f for f in ('results.json', 'metrics.jsonl', 'params.npz')
             if not os.path.isfile(os.path.join(workdir, f))]
  if not os.path.isdir(workdir) or missing:
    what = 'is not a directory' if not os.path.isdir(workdir) else f'has no {", ".join(missing)}'
    print(f'error: --workdir={workdir} {what}; give the workdir of a finished run',
          file=sys.stderr)
    sys.exit(2)
  try:
    paths = plots.draw_all(workdir)
  except (OSError, ValueError, KeyError) as e:
    print(f'error: cannot draw the plots of {workdir} ({type(e).__name__}: {e})', file=sys.stderr)
    sys.exit(2)
  for name, path in paths.items():
    print(f'{name}: {path}')


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)
