"""Several processes as one JAX program (`jax.distributed`): settings, start-up checks, writer,
a watchdog that stops the others in one line when a process dies, and the one home of
reductions across processes (`gathered`, `summed`, `agreed_min`/`agreed_max`, `to_host`).

Settings come from `--coordinator=host:port --num_processes=N --process_id=i`, or from Slurm's
environment (SLURM_NTASKS, SLURM_PROCID; JAX finds the coordinator in the node list). Before
JAX's own start-up (which aborts with a stack trace when it fails) the settings are checked
here, so bad input is one line: a coordinator that cannot be reached within the timeout, a
process count that disagrees with Slurm's, processes started with different configs.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import sys
import threading
import time
from typing import Mapping, Optional

import jax
import numpy as np
from absl import flags
from jax._src import distributed as jax_distributed  # its client: the key-value store
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hinge_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Settings:
  """How this process joins the others: None for the coordinator means JAX finds it (Slurm)."""
  coordinator: Optional[str]
  num_processes: int
  process_id: int
  timeout_s: int = 300  # to reach the coordinator and for every process to register
  heartbeat_s: int = 100  # JAX's own: a process silent this long ends the others (an abort)
  slurm: bool = False
  process_timeout_s: int = 30  # ours, below JAX's: a process silent this long, one line


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
  flags.DEFINE_integer('heartbeat_timeout_s', 100, 'Seconds after which JAX takes a silent '
                       'process as dead and aborts the others.', flag_values=flag_values)
  flags.DEFINE_integer('process_timeout_s', 30, 'Seconds after which a silent process (or an '
                       'unanswering coordinator) stops the others with one error line; below '
                       'half of --heartbeat_timeout_s.', flag_values=flag_values)


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
             process_timeout_s: int = 30,
             environ: Mapping[str, str] = os.environ) -> Optional[Settings]:
  """The settings the flags and the environment give; None for a single process."""
  if timeout_s <= 0 or heartbeat_s <= 0:
    raise UserError(f'--distributed_timeout_s={timeout_s} and --heartbeat_timeout_s='
                    f'{heartbeat_s} must be positive (seconds)')
  # JAX ends the others between half and all of its heartbeat timeout after a death (a C++
  # abort); the watchdog must speak first.
  if not 0 < process_timeout_s < heartbeat_s / 2:
    raise UserError(f'--process_timeout_s={process_timeout_s} must be positive and below half '
                    f'of --heartbeat_timeout_s={heartbeat_s} (seconds); lower it or raise '
                    f'--heartbeat_timeout_s')
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
    return Settings(coordinator, ntasks, procid, timeout_s, heartbeat_s, slurm=True,
                    process_timeout_s=process_timeout_s)
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
  return Settings(coordinator, num_processes, process_id, timeout_s, heartbeat_s,
                  process_timeout_s=process_timeout_s)


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


_ALIVE = 'hinge_jax/alive/'  # process_<i>: a beat counter, then 'done' or 'stopped'
_VERDICT = 'verdict'  # under _ALIVE: the line of the first process to see a death


class Watchdog:
  """Ends this process with one `error:` line, exit code 2, when another stops responding.

  On daemon threads (so it beats while the main thread waits inside a compiled program) each
  process bumps a counter in the coordination service's key-value store, served by process 0,
  and reads everyone's. A counter unchanged for `timeout_s` on this process's clock names a
  dead or stuck process; a store silent that long, a lost coordinator. The first verdict goes
  into the store, so every process prints the same line; process 0 ends last, since the
  others' store ends with it. JAX's own heartbeat would end them later, with a C++ abort.
  """

  def __init__(self, client, process_id: int, num_processes: int, timeout_s: float, *,
               clock=time.monotonic, sleep=time.sleep, end=os._exit):
    self.client, self.process_id, self.timeout_s = client, process_id, timeout_s
    self.num_processes = num_processes
    self.period = min(1.0, timeout_s / 10)
    self._clock, self._sleep, self._end = clock, sleep, end
    now = clock()
    self._answered = now  # the store's last answer
    self._seen = {i: (None, now) for i in range(num_processes) if i != process_id}
    self._verdict = None  # as last read from the store
    self._beats = 0
    self._stop = threading.Event()
    self._halting = threading.Lock()  # held until the process ends
    self._threads = [threading.Thread(target=f, name=f'hinge_jax_watchdog_{f.__name__}',
                                      daemon=True) for f in (self._beating, self._watching)]

  def start(self) -> 'Watchdog':
    for t in self._threads:
      t.start()
    return self

  def beat(self) -> None:
    """One round: this process's counter up, everyone's read (a store error raises)."""
    self._beats += 1
    self._set(f'process_{self.process_id}', str(self._beats))
    entries = self._entries()
    now = self._clock()
    self._answered, self._verdict = now, entries.get(_VERDICT)
    for i, (value, _) in self._seen.items():
      if entries.get(f'process_{i}') != value:
        self._seen[i] = (entries.get(f'process_{i}'), now)

  def verdict(self) -> Optional[str]:
    """The line to stop with, or None while every process responds."""
    now = self._clock()
    if self._verdict:
      return self._verdict
    if not self._answering(now):
      return (f'lost the coordinator (process 0): no answer for {self.timeout_s:g} s; '
              f'stopping - see its log')
    silent = [i for i, (value, since) in self._seen.items()
              if value != 'done' and now - since > self.timeout_s]
    if not silent:
      return None
    who = (f'process {silent[0]}' if len(silent) == 1 else
           f'processes {", ".join(map(str, silent))}')
    logs = 'its log' if len(silent) == 1 else 'their logs'
    return (f'{who} of {self.num_processes} stopped responding (no heartbeat for '
            f'{self.timeout_s:g} s); stopping the others - see {logs}')

  def _answering(self, now: float) -> bool:
    """Whether the store answered within the timeout (process 0's own always counts)."""
    return self.process_id == 0 or now - self._answered <= self.timeout_s

  def stop(self, *, done: bool) -> None:
    """Stops beating; `done` (every process ends together) tells the others not to wait for
    this one. Without it (this process alone failed), they stop after `timeout_s`."""
    self._stop.set()
    for t in self._threads:
      if t.ident is not None:  # started
        t.join(self.timeout_s)
    if done:
      with contextlib.suppress(Exception):
        self._set(f'process_{self.process_id}', 'done')

  def await_verdict(self) -> None:
    """Waits long enough for a verdict on any process that died before now (it ends this
    process); returns if none comes."""
    self._sleep(self.timeout_s + 3 * self.period + 1)

  def _set(self, name: str, value: str, overwrite: bool = True) -> None:
    self.client.key_value_set(_ALIVE + name, value, allow_overwrite=overwrite)

  def _entries(self) -> dict[str, str]:
    return {k.rpartition('/')[2]: v for k, v in self.client.key_value_dir_get(_ALIVE)}

  def _beating(self) -> None:
    while not self._stop.is_set():
      try:
        self.beat()
      except Exception as e:  # the coordinator's store is gone
        if not self._stop.is_set():
          reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
          self._halt(f'lost the coordinator (process 0): {reason}; stopping - see its log',
                     store=False)
      self._stop.wait(self.period)

  def _watching(self) -> None:
    while not self._stop.wait(self.period):
      line = self.verdict()
      if line:
        self._halt(line, store=self._answering(self._clock()))

  def _halt(self, line: str, *, store: bool) -> None:
    """Prints `error: line`, tells the others (through the store) and ends this process."""
    self._halting.acquire()  # never released: a second verdict waits for the end
    self._stop.set()  # no more beats over 'stopped'
    print(f'error: {line}', file=sys.stderr, flush=True)
    if store:  # bounded: a store that stops answering now must not keep this process alive
      tell = threading.Thread(target=self._tell_others, args=(line,), daemon=True)
      tell.start()
      tell.join(12 * self.period + 4)
    self._end(2)

  def _tell_others(self, line: str) -> None:
    with contextlib.suppress(Exception):  # the first verdict stands
      self._set(_VERDICT, line, overwrite=False)
    with contextlib.suppress(Exception):
      self._set(f'process_{self.process_id}', 'stopped')
    if self.process_id == 0:
      self._await_others()

  def _await_others(self) -> None:
    """Waits (a few beats at most) until the responding processes have stopped."""
    now = self._clock()
    waiting = {f'process_{i}' for i, (value, since) in self._seen.items()
               if value not in ('done', 'stopped') and now - since <= self.timeout_s}
    deadline = now + 10 * self.period + 2
    while waiting and self._clock() < deadline:
      with contextlib.suppress(Exception):
        entries = self._entries()
        waiting = {k for k in waiting if entries.get(k) not in ('done', 'stopped')}
      self._sleep(self.period / 2)
    self._sleep(self.period)  # their exits run after their 'stopped'


@contextlib.contextmanager
def watchdog(s: Optional[Settings]):
  """Watches the other processes while the block runs (nothing for a single process).

  A block that ends or exits (every process does, together) marks this process done. A
  collective that fails (a peer's connection reset: JaxRuntimeError) waits for the verdict
  first, so a dead peer is one line here too, not a traceback.
  """
  client = jax_distributed.global_state.client
  if s is None or client is None:
    yield None
    return
  dog = Watchdog(client, s.process_id, s.num_processes, s.process_timeout_s).start()
  try:
    yield dog
  except BaseException as e:
    if isinstance(e, jax.errors.JaxRuntimeError):
      dog.await_verdict()
    dog.stop(done=isinstance(e, SystemExit))
    raise
  dog.stop(done=True)


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
  every = gathered(mine)
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
      return _replicated(a)
    return np.asarray(a)
  return jax.tree.map(one, tree)


def _identity(a):  # one function for every gather: compiled once per shape and layout
  return a


def _replicated(a: jax.Array) -> np.ndarray:
  """`a` (laid over every process's devices by a NamedSharding) copied whole to the host once
  every local device holds it, unlike `multihost_utils.process_allgather` (docs/multihost.md)."""
  out = jax.jit(_identity, out_shardings=NamedSharding(a.sharding.mesh, P()))(a)
  return np.asarray(jax.block_until_ready(out).addressable_data(0))


def gathered(a) -> np.ndarray:
  """Every process's host array `a` stacked in process order, `(P, ...)`, its dtype kept (all
  processes must call it together); one process: `a[None]`."""
  a = np.asarray(a)
  if jax.process_count() == 1:
    return a[None]
  devices = np.asarray(jax.devices()).reshape(jax.process_count(), -1)
  by_process = NamedSharding(Mesh(devices, ('processes', 'local')), P('processes'))
  with jax.enable_x64(True):  # int64 and float64 cross as they are
    local = [jax.device_put(a[None], d) for d in jax.local_devices()]
    stacked = jax.make_array_from_single_device_arrays((len(devices), *a.shape), by_process, local)
    return _replicated(stacked).astype(a.dtype)


def summed(tree):
  """Every process's `tree` of host arrays added up, in process order, float64 kept (all
  processes must call it together); one process: the tree itself."""
  if jax.process_count() == 1:
    return tree
  return jax.tree.map(lambda a: np.sum(gathered(a), axis=0), tree)


def agreed_min(value: int) -> int:
  """The smallest of every process's `value` (free memory, say): a decision that shapes the
  program must be the same in every process. All processes must call it together."""
  if jax.process_count() == 1:
    return int(value)
  return int(gathered(np.int64(max(int(value), 0) >> 20)).min()) << 20  # in MiB


def agreed_max(value: int) -> int:
  """The largest of every process's small `value` (a signal number: every process stops at the
  same chunk when any got one). All processes must call it together."""
  return int(gathered(np.int64(value)).max())


def local_device(devices):
  """The first of `devices` this process can address (its memory can be asked)."""
  return next(d for d in devices if d.process_index == jax.process_index())
