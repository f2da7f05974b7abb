"""Redraws a run's pictures from its saved files: `python -m hinge_jax.plot --workdir=DIR`.

Reads `results.json`, `metrics.jsonl` and `params.npz` from the workdir and writes
`DIR/plots/*.png` (see `hinge_jax.plots`). A workdir without those files stops with one line.
"""

from absl import flags

from hinge_jax import cli_utils, plots


def main(argv):
  del argv  # cli_utils.parse_flags refuses positional arguments
  for name, path in plots.redraw(flags.FLAGS.workdir or '').items():
    print(f'{name}: {path}')


def cli() -> None:
  """`python -m hinge_jax.plot`: the flag is defined here, so importing defines none."""
  flags.DEFINE_string('workdir', None, 'A finished run\'s directory.')
  flags.mark_flag_as_required('workdir')
  cli_utils.run(main)


if __name__ == '__main__':
  cli()
