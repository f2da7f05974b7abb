"""Shared pieces of the tool entry points (gradcheck, sanity, landscape): the --config flag.

`main.py` keeps its own copy of the override handling (it is the training entry point); the
tools share this one.
"""

import logging
import os
import re
import sys
from typing import Callable

from absl import app
from ml_collections import config_flags

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'configs', 'default.py')


def config_flag():
  """Defines --config (configs/*.py[:arg], default configs/default.py); returns its holder."""
  return config_flags.DEFINE_config_file('config', DEFAULT_CONFIG,
                                         'Experiment config file (configs/*.py[:arg]).',
                                         lock_config=True)


def run(main: Callable) -> None:
  """app.run(main), with an override of a field the config lacks reported in one line."""
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  try:
    app.run(main)
  except (AttributeError, KeyError) as e:  # raised by ml_collections while parsing flags
    overrides = [a.split('=')[0] for a in sys.argv[1:] if a.startswith('--config.')]
    if not overrides:
      raise
    name = re.search(r"'(\w+)'", str(e).replace('\\', ''))
    print(f'error: the config has no field {name.group(1) if name else str(e)!r} '
          f'(overrides given: {", ".join(overrides)}); check the config file\'s fields',
          file=sys.stderr)
    sys.exit(2)
