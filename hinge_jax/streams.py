"""Named random streams of a seed: `init`, `data`, `search`, `landscape`.

`jax.random.key(seed)` is split once into streams by name, so each consumer draws from its own
stream and adding a consumer never shifts another's numbers. Per step, callers `fold_in` the
step number, so a resumed run draws the same numbers.
"""

import jax

STREAMS = {'init': 0, 'data': 1, 'search': 2, 'landscape': 3}


def stream_key(seed, name: str) -> jax.Array:
  """The key of one named random stream (init, data, search, landscape) of a seed."""
  return jax.random.fold_in(jax.random.key(seed), STREAMS[name])
