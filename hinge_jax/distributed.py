"""Several processes as one JAX program (`jax.distributed`): settings, start-up checks, writer.

Settings come from `--coordinator=host:port --num_processes=N --process_id=i`, or from Slurm's
environment (SLURM_NTASKS, SLURM_PROCID; JAX finds the coordinator in the node list). Before
JAX's own start-up (which aborts with a stack trace when it fails) the settings are checked
here, so bad input is one line: a coordinator that cannot be reached within the timeout, a
process count that disagrees with Slurm's, processes started with different configs.
"""

import dataclasses
import hashlib
import json
import os
import socket
import time
from typing import Mapping, Optional

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils

from hinge_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Settings:
  """How this process joins the others: None for the coordinator means JAX finds it (Slurm)."""
  coordinator: Optional[str]
  num_processes: int
  process_id: int
  timeout_s: int = 300  # to reach the coordinator and for every process to register
  heartbeat_s: int = 100  # a process silent this long is taken as dead; the others stop
  slurm: bool = False


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The multi-process flags of `hinge_jax.main` (all unset: one process, or Slurm's tasks)."""
  flags.DEFINE_string('coordinator', None, 'host:port of process 0, which serves the others '
                      '(multi-process runs; under Slurm taken from the job).',
                      flag_values=flag_values)
  flags.DEFINE_integer('num_processes', None, 'Processes in the run (under Slurm: SLURM_NTASKS).',
                       flag_values=flag_values)
  flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1 (under Slurm: '
                       'SLURM_PROCID).', flag_values=flag_values)
  flags.DEFINE_integer('distributed_timeout_s', 300, 'Seconds to reach the coordinator and for '
                       'every process to join.', flag_values=flag_values)
  flags.DEFINE_integer('heartbeat_timeout_s', 100, 'Seconds after which a silent process is '
                       'taken as dead and the others stop.', flag_values=flag_values)


def _slurm_tasks(environ: Mapping[str, str]) -> Optional[tuple[int, int]]:
  """(SLURM_NTASKS, SLURM_PROCID) inside a Slurm job step, else None."""
  if 'SLURM_JOB_ID' not in environ or 'SLURM_NTASKS' not in environ:
    return None
  try:
    return int(environ['SLURM_NTASKS']), int(environ.get('SLURM_PROCID', '0'))
  except ValueError:
    raise UserError(f'SLURM_NTASKS={environ["SLURM_NTASKS"]!r} / SLURM_PROCID='
                    f'{environ.get("SLURM_PROCID")!r} are not integers; run under srun')


def settings(coordinator: Optional[str], num_processes: Optional[int],
             process_id: Optional[int], *, timeout_s: int = 300, heartbeat_s: int = 100,
             environ: Mapping[str, str] = os.environ) -> Optional[Settings]:
  """The settings the flags and the environment give; None for a single process."""
  if timeout_s <= 0 or heartbeat_s <= 0:
    raise UserError(f'--distributed_timeout_s={timeout_s} and --heartbeat_timeout_s='
                    f'{heartbeat_s} must be positive (seconds)')
  slurm = _slurm_tasks(environ)
  if slurm is not None and slurm[0] > 1:
    ntasks, procid = slurm
    if num_processes is not None and num_processes != ntasks:
      raise UserError(f'--num_processes={num_processes} but Slurm started SLURM_NTASKS={ntasks} '
                      f'tasks; drop --num_processes or submit {num_processes} tasks '
                      f'(--ntasks / --ntasks-per-node)')
    if process_id is not None and process_id != procid:
      raise UserError(f'--process_id={process_id} but this is Slurm task SLURM_PROCID={procid}; '
                      f'drop --process_id under Slurm')
    return Settings(coordinator, ntasks, procid, timeout_s, heartbeat_s, slurm=True)
  given = {'--coordinator': coordinator, '--num_processes': num_processes,
           '--process_id': process_id}
  if all(v is None for v in given.values()):
    return None
  missing = [name for name, value in given.items() if value is None]
  if missing:
    raise UserError(f'a multi-process run needs --coordinator, --num_processes and '
                    f'--process_id; {", ".join(missing)} missing')
  if num_processes < 1 or not 0 <= process_id < num_processes:
    raise UserError(f'--process_id={process_id} must be in 0..{num_processes - 1} '
                    f'(--num_processes={num_processes})')
  host, _, port = coordinator.rpartition(':')
  if not host or not port.isdigit():
    raise UserError(f'--coordinator={coordinator!r} is not host:port, e.g. node0:12345')
  if num_processes == 1:
    return None
  return Settings(coordinator, num_processes, process_id, timeout_s, heartbeat_s)


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Returns once `address` accepts a TCP connection; after `timeout_s`, a UserError."""
  host, _, port = address.rpartition(':')
  host = host.strip('[]')
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=min(timeout_s, 5)):
        return
    except OSError as e:
      reason = e.strerror or type(e).__name__
    if time.monotonic() >= deadline:
      raise UserError(f'cannot reach the coordinator {address} after {timeout_s:g} s '
                      f'({reason}); start process 0 first, check host and port, or raise '
                      f'--distributed_timeout_s')
    time.sleep(0.2)


def initialize(s: Optional[Settings]) -> None:
  """Joins the run `s` describes (nothing for a single process); CPU collectives over gloo."""
  if s is None:
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if s.coordinator and s.process_id != 0:  # process 0 serves; the others wait for it here
    wait_for_coordinator(s.coordinator, s.timeout_s)
  try:
    jax.distributed.initialize(s.coordinator, s.num_processes, s.process_id,
                               initialization_timeout=s.timeout_s,
                               heartbeat_timeout_seconds=s.heartbeat_s)
  except (ValueError, TypeError, RuntimeError) as e:
    raise UserError(f'jax.distributed.initialize failed: {" ".join(str(e).split())}')


def fingerprint(config) -> str:
  """SHA-256 of the config as sorted JSON: equal configs, equal fingerprints."""
  text = json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()


def check_same_config(config) -> None:
  """Every process must run the same config: their fingerprints are compared (a UserError in
  every process, naming those that differ from process 0)."""
  if jax.process_count() == 1:
    return
  mine = np.frombuffer(bytes.fromhex(fingerprint(config)), np.uint32)
  every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
  differ = [i for i in range(len(every)) if not np.array_equal(every[i], every[0])]
  if differ:
    raise UserError(f'process(es) {", ".join(map(str, differ))} run a different config than '
                    f'process 0 (config fingerprints differ); start every process with the '
                    f'same --config and overrides')


def is_writer() -> bool:
  """Whether this process writes the workdir (process 0; the only one of a single process)."""
  return jax.process_index() == 0


def to_host(tree):
  """NumPy copies of a tree of arrays, also of arrays laid over other processes' devices
  (gathered from every process: all processes must call it together)."""
  def one(a):
    if isinstance(a, jax.Array) and not (a.is_fully_addressable or a.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)
  return jax.tree.map(one, tree)


def agreed_min(value: int) -> int:
  """The smallest of every process's `value` (free memory, say): a decision that shapes the
  program must be the same in every process. All processes must call it together."""
  if jax.process_count() == 1:
    return int(value)
  mib = np.asarray([max(int(value), 0) >> 20], np.int32)  # int32 in MiB: JAX's default ints
  return int(np.min(multihost_utils.process_allgather(mib))) << 20


def agreed_max(value: int) -> int:
  """The largest of every process's small `value` (a signal number: every process stops at the
  same chunk when any got one). All processes must call it together."""
  if jax.process_count() == 1:
    return int(value)
  return int(np.max(multihost_utils.process_allgather(np.asarray([value], np.int32))))


def local_device(devices):
  """The first of `devices` this process can address (its memory can be asked)."""
  return next(d for d in devices if d.process_index == jax.process_index())
