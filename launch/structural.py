"""Structural sweeps: choices that change shapes or code expand into separate runs.

Declared beside the config, in the same text form as `sweep.grid`:

  config.sweep.structural = 'loss.name=multiclass_svm,softmax_cross_entropy; batch_size=100,200'

Values are separated by ',' (or by '|' when a value itself holds commas). Every combination
(product) becomes one `python -m hinge_jax.main` run in its own workdir under the base
workdir; each run may itself be a vmapped sweep (`sweep.grid`, ...).
"""

import dataclasses
import itertools
import re
import shlex
import sys

import ml_collections

from hinge_jax import config_lib, sweep
from hinge_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Run:
  """One structural combination: its values, its workdir and the command that runs it."""
  name: str
  values: dict
  workdir: str
  command: tuple

  def shell(self) -> str:
    return ' '.join(shlex.quote(part) for part in self.command)


def parse(text: str) -> list[tuple[str, list[str]]]:
  """'a=1,2; b=x|y,z' → [('a', ['1', '2']), ('b', ['x', 'y,z'])]."""
  axes = []
  for field, values in sweep.parse_axes(text, 'structural'):
    sep = '|' if '|' in values else ','
    values = [v.strip() for v in values.split(sep) if v.strip()]
    if not values:
      raise ConfigError(f'sweep.structural: {field} has no values')
    axes.append((field, values))
  return axes


def _slug(values: dict) -> str:
  text = '__'.join(f'{field}-{value}' for field, value in values.items())
  return re.sub(r'[^A-Za-z0-9._=-]+', '_', text)[:200]


def expand(config: ml_collections.ConfigDict, config_arg: str, base_workdir: str,
           overrides: tuple = ()) -> list[Run]:
  """The runs of the declared structural sweep (one run when nothing is declared)."""
  axes = parse(config.sweep.get('structural', ''))
  for field, _ in axes:
    config_lib.get_field(config, field)  # the field must exist
  combos = [dict(zip([f for f, _ in axes], vals))
            for vals in itertools.product(*[v for _, v in axes])] or [{}]
  runs = []
  for values in combos:
    name = _slug(values) or 'run'
    workdir = f'{base_workdir.rstrip("/")}/{name}'
    command = (sys.executable, '-m', 'hinge_jax.main', f'--config={config_arg}',
               f'--workdir={workdir}', *overrides, '--config.sweep.structural=',
               *[f'--config.{f}={v}' for f, v in values.items()])
    runs.append(Run(name=name, values=values, workdir=workdir, command=command))
  return runs
