"""`python -m pytest benchmarks/pallas`: the Pallas kernels' tests, with tests/'s settings and
helpers (8 CPU devices, strict rank promotion, `helpers.default_config`)."""

import os
import sys

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, 'tests'))  # helpers.py
sys.path.insert(0, REPO)

import jax  # noqa: E402

jax.config.update('jax_numpy_rank_promotion', 'raise')
