"""The two-axis device mesh ('members', 'data') a run trains on, and its shardings.

Members are independent: the members axis needs no communication. The data axis splits the
splits by rows; full-batch sums (loss, dSᵀX, confusion counts) reduce over it with
`psum` inside `jax.shard_map`, which XLA lowers to its all-reduce. `mesh.data=1` (the
default) is a members-only mesh with the data replicated; `-1` takes the fewest data shards
for which a device's share of the data fits its memory.
"""

import dataclasses
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hinge_jax import distributed
from hinge_jax.errors import ConfigError

MEMBERS, DATA = 'members', 'data'
# The share of a device's free memory the data may take (the rest: state, eval chunks, XLA).
DATA_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a run's arrays lie on the devices.

  Attributes:
    mesh: the ('members', 'data') mesh, or None for a single device.
    members: the members axis of the state and hyperparameters, over 'members'.
    rows: the splits' rows, over 'data' (replicated over 'members').
    replicated: everything else (mean and scale; with no data axis, the splits too).
  """
  mesh: Optional[Mesh]
  members: Any
  rows: Any
  replicated: Any

  @property
  def data_shards(self) -> int:
    return 1 if self.mesh is None else int(self.mesh.shape[DATA])

  @property
  def member_shards(self) -> int:
    return 1 if self.mesh is None else int(self.mesh.shape[MEMBERS])


def device_bytes(device, override: int = 0) -> int:
  """Bytes `device` has free: `override` when set, else its allocator's limit less what is in
  use; a CPU device gets an equal share of the host's available memory."""
  if override:
    return int(override)
  stats = device.memory_stats() or {}
  if 'bytes_limit' in stats:
    return int(stats['bytes_limit'] - stats.get('bytes_in_use', 0))
  try:
    avail = os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError):
    avail = 8 << 30
  return int(avail / max(len(jax.local_devices(backend=device.platform)), 1))


def divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def data_shards(requested: int, num_devices: int, sharded_bytes: int, replicated_bytes: int,
                available: int, fraction: float = DATA_FRACTION) -> int:
  """The size of the data axis: `requested`, or for -1 the smallest divisor of `num_devices`
  whose share of `sharded_bytes` (plus the `replicated_bytes` every device holds) fits in
  `fraction` of `available`. One-line errors for a value that cannot work."""
  if requested == 0 or requested < -1:
    raise ConfigError(f'mesh.data={requested}: use a positive number of data shards, '
                      f'or -1 for as many as the training split needs')
  if requested > 0 and num_devices % requested:
    raise ConfigError(f'mesh.data={requested} does not divide the {num_devices} devices; use '
                      f'one of {divisors(num_devices)} or -1')
  budget = int(fraction * available)
  options = divisors(num_devices) if requested == -1 else [requested]
  for d in options:
    if -(-sharded_bytes // d) + replicated_bytes <= budget:
      return d
  d = options[-1]
  need = -(-sharded_bytes // d) + replicated_bytes
  more = (f'; set mesh.data to -1 or more shards (up to {num_devices})'
          if requested != -1 and d < num_devices else '; use more devices or a smaller split')
  raise ConfigError(f'the data need {need} bytes per device with mesh.data={d}, but a device '
                    f'has {budget} bytes for data ({fraction:g} of {available} free){more}')


def make_layout(devices: Sequence, num_members: int, data: int) -> Layout:
  """The layout of `num_members` members over `devices` with `data` shards on the data axis.

  The members axis takes the other `len(devices) // data` devices when the members divide
  evenly among them, else one (the rest of the devices stay idle). One member on one device
  and no data axis: a single-device layout (today's path, no mesh).
  """
  devices = list(devices)
  rest = len(devices) // data
  members = rest if num_members > 1 and rest > 1 and num_members % rest == 0 else 1
  if members * data == 1:
    one = jax.sharding.SingleDeviceSharding(devices[0])
    return Layout(mesh=None, members=one, rows=one, replicated=one)
  grid = np.asarray(devices[:members * data], dtype=object).reshape(members, data)
  mesh = Mesh(grid, (MEMBERS, DATA))
  return Layout(mesh=mesh, members=NamedSharding(mesh, P(MEMBERS)),
                rows=NamedSharding(mesh, P(DATA)), replicated=NamedSharding(mesh, P()))


def shards_for(config, devices: Sequence, sharded_bytes: int, replicated_bytes: int) -> int:
  """The data axis's size for `config.mesh` (absent: data=1) over `devices`, as `data_shards`
  decides it from the smallest free memory of any process (so all make the same layout)."""
  block = config.get('mesh') or {}
  requested = int(block.get('data', 1))
  override = int(block.get('device_bytes', 0) or 0)
  mine = distributed.local_device(devices)  # another process's device cannot be asked
  if requested == 1:  # today's layout: refused only where the device says it cannot hold it
    if override or 'bytes_limit' in (mine.memory_stats() or {}):
      data_shards(1, len(devices), sharded_bytes, replicated_bytes,
                  distributed.agreed_min(device_bytes(mine, override)), fraction=1.0)
    return 1
  available = distributed.agreed_min(device_bytes(mine, override))
  return data_shards(requested, len(devices), sharded_bytes, replicated_bytes, available)


def layout_for(config, devices: Optional[Sequence], num_members: int, sharded_bytes: int,
               replicated_bytes: int) -> Layout:
  """`make_layout` for `config.mesh` (`shards_for`) over `devices` (default: every
  process's devices, `jax.devices()`)."""
  devices = list(jax.devices() if devices is None else devices)
  return make_layout(devices, num_members,
                     shards_for(config, devices, sharded_bytes, replicated_bytes))
