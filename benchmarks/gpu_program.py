"""What hinge_jax's training step becomes on a GPU, compiled here without one.

  python benchmarks/gpu_program.py [--target=h200] [--k=1] [--batch=200] [--steps=245]
                                   [--tuning=default] [--dump=FILE.txt] [--noptxas]

XLA compiles the real training program (`step.train_chunk`, CIFAR-shaped uint8 data) for a
described card with no card present (JAX's deviceless ahead-of-time compilation), and
`hlo_kernels` lists the kernels one training step launches and the bytes they read and
write. Per step, then: a floor on its time at the card's memory bandwidth, and the kernel
count that bounds a launch-bound step (a small model's step is ≈ 2 µs a kernel on an H200).
What the listing cannot show: the matmul configurations the autotuner picks on a real card
(here XLA's defaults), and command buffers (assembled after this program). Only
`benchmarks/gpu.py` on a GPU measures time.

Where the program runs `pallas/fused.py`'s kernels, it also lists what `ptxas -v` says of
each (registers and spills a thread) with its launch (grid, threads, shared memory) and the
programs an SM holds at once as registers and shared memory allow: a kernel that spills, or
holds one program an SM, shows it before a card is lent.

Needs the CUDA plugin, in its own environment (about 5.5 GB; no GPU or driver needed):

  python -m venv /tmp/venv-cuda && /tmp/venv-cuda/bin/pip install -r requirements.txt \\
      "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import NamedTuple, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

FLAGS = flags.FLAGS

# The fields XLA's GPU compiler reads from a device (xla/stream_executor DeviceDescription),
# from the vendors' data sheets for the SXM parts: 132 SMs, 50 MiB L2, compute capability 9.0.
_TARGET_CONFIG = """
gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132
  fpus_per_core: 128 block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: {bandwidth} l2_cache_size: 52428800
  clock_rate_ghz: 1.98 device_memory_size: {memory} shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 }} registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
runtime_version {{ major: 12 minor: 8 patch: 0 }}
device_description_str: "{name}"
"""
CARDS = {'h100': dict(name='NVIDIA H100 80GB HBM3', bandwidth=3_350_000_000_000,
                      memory=84_929_347_584, arch='sm_90a'),
         'h200': dict(name='NVIDIA H200', bandwidth=4_800_000_000_000,
                      memory=150_011_723_776, arch='sm_90a')}
# An SM of compute capability 9.0 (CUDA's occupancy rules): registers, shared memory (of
# which 1 KB a program is the system's), resident warps and programs.
SM = dict(registers=65536, shared=233472, shared_reserved=1024, warps=64, programs=32)
SMS = 132  # the H100's and H200's (SXM)


class CardProgram(NamedTuple):
  """`compile_for_card`'s result."""
  text: str  # the optimized HLO
  unroll: int  # steps a loop iteration runs
  fused_bytes: Optional[int]  # `fused.step_bytes` where the program runs 'step', else None
  kernels: tuple = ()  # `pallas_kernels`' rows, where asked for (`ptxas=True`)
  block: Optional[int] = None  # steps an outer iteration holds in a loop of loops (scaled.py)


class PallasKernel(NamedTuple):
  """One Pallas (Triton) kernel of a program compiled for a card, as `ptxas -v` and XLA's
  launch say."""
  name: str
  grid: tuple
  threads: int
  shared_bytes: int
  registers: int  # a thread's
  spill_bytes: int  # a thread's spill stores + loads
  programs_per_sm: int  # resident at once, as registers and shared memory allow

  @property
  def waves(self) -> float:
    """The grid's programs over what the card's `SMS` hold at once."""
    programs = 1
    for g in self.grid:
      programs *= g
    return programs / (SMS * max(self.programs_per_sm, 1))


def programs_per_sm(registers: int, threads: int, shared_bytes: int) -> int:
  """Programs (thread blocks) one compute-capability-9.0 SM holds at once: registers are
  allocated a warp at a time in units of 256 (8 a thread)."""
  warps = -(-threads // 32)
  by_registers = SM['registers'] // (-(-registers // 8) * 8 * 32) // warps
  by_shared = SM['shared'] // (shared_bytes + SM['shared_reserved'])
  return min(by_registers, by_shared, SM['warps'] // warps, SM['programs'])


_LAUNCH = re.compile(r'(hinge_jax_\w+) grid: \[([\d, ]+)\] threads: \[(\d+)[\d, ]*\]\s+'
                     r'shared_memory: (\d+) bytes')


def parse_ptxas(report: str) -> dict:
  """`{entry: (registers, spill bytes)}` from `ptxas -v`'s report."""
  out, entry = {}, None
  for line in report.splitlines():
    m = re.search(r"Compiling entry function '(\w+)'", line)
    if m:
      entry = m.group(1)
    m = re.search(r'(\d+) bytes spill stores, (\d+) bytes spill loads', line)
    if m and entry:
      out[entry] = (out.get(entry, (0, 0))[0], int(m.group(1)) + int(m.group(2)))
    m = re.search(r'Used (\d+) registers', line)
    if m and entry:
      out[entry] = (int(m.group(1)), out.get(entry, (0, 0))[1])
  return out


def find_ptxas() -> Optional[str]:
  """ptxas on PATH, else the one JAX's CUDA plugin installs (nvidia-cuda-nvcc), else None."""
  found = shutil.which('ptxas')
  if found:
    return found
  try:
    import nvidia.cuda_nvcc as nvcc  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  for root in list(getattr(nvcc, '__path__', [])):
    candidate = os.path.join(root, 'bin', 'ptxas')
    if os.access(candidate, os.X_OK):
      return candidate
  return None


def pallas_kernels(dump_dir: str, arch: str) -> tuple:
  """The Pallas kernels of the program XLA dumped into `dump_dir` (`xla_dump_to`): each
  kernel's PTX through `ptxas -v` for `arch`, with its launch from XLA's thunk sequence.
  Raises RuntimeError (one line) where ptxas is not found."""
  ptxas = find_ptxas()
  if ptxas is None:
    raise RuntimeError('ptxas not found: install the CUDA plugin (its nvidia-cuda-nvcc) or '
                       'put CUDA\'s bin on PATH')
  launches = {}
  for path in glob.glob(os.path.join(dump_dir, '*thunk_sequence.txt')):
    with open(path) as f:
      for m in _LAUNCH.finditer(f.read()):
        launches[m.group(1)] = (tuple(int(g) for g in m.group(2).split(',')),
                                int(m.group(3)), int(m.group(4)))
  found = {}
  for path in sorted(glob.glob(os.path.join(dump_dir, '*.ptx'))):
    with open(path) as f:
      if '.entry hinge_jax_' not in f.read():
        continue
    report = subprocess.run([ptxas, f'-arch={arch}', '-v', path, '-o', os.devnull],
                            capture_output=True, text=True, check=True).stderr
    found.update(parse_ptxas(report))
  rows = []
  for name, (registers, spills) in sorted(found.items()):
    grid, threads, shared = launches.get(name, ((0,), 0, 0))
    rows.append(PallasKernel(name, grid, threads, shared, registers, spills,
                             programs_per_sm(registers, threads, shared) if threads else 0))
  return tuple(rows)


def card_sharding(target: str):
  """A sharding that places an abstract array (`jax.ShapeDtypeStruct(..., sharding=...)`) on
  one card of kind `target` ('h100' or 'h200') that is not here: what XLA then compiles is
  that card's program (JAX's deviceless ahead-of-time compilation). Raises RuntimeError (one
  line) where JAX's CUDA plugin is not installed."""
  import jax
  from jax.experimental import topologies
  try:
    topology = topologies.get_topology_desc(
        platform='cuda', topology='1x1x1',
        target_config=_TARGET_CONFIG.format(**CARDS[target]))
  except Exception as e:  # noqa: BLE001 - the usual cause, in one line
    raise RuntimeError(f'cannot compile for a GPU here ({type(e).__name__}: '
                       f'{str(e).splitlines()[0]}); install the CUDA plugin as '
                       'benchmarks/gpu_program.py\'s docstring says, and where no NVIDIA driver '
                       'is installed set JAX_SKIP_CUDA_CONSTRAINTS_CHECK=1') from None
  mesh = topologies.make_mesh(topology, (1,), ('d',))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def compile_for_card(target: str, dataset, *, k: int = 1, batch: int = 200, steps: int = 245,
                     tuning=None, loss: str = 'multiclass_svm',
                     ptxas: bool = False) -> CardProgram:
  """hinge_jax's training program of `steps` steps on `dataset`, compiled by XLA for the card
  `target` ('h100' or 'h200') with no card present (`CardProgram`). `ptxas`: also its Pallas
  kernels' registers and spills (`pallas_kernels`). Raises RuntimeError (one line) where
  JAX's CUDA plugin (or, asked for, ptxas) is not installed."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from benchmarks import common
  from benchmarks.pallas import fused
  from hinge_jax import tuning as tuning_lib
  card = CARDS[target]
  on_card = card_sharding(target)
  tuning = tuning or tuning_lib.Tuning()

  # Trace as the GPU backend would (its defaults: loop unrolling, the guard, bfloat16 storage)
  backend = jax.default_backend
  jax.default_backend = lambda: 'gpu'
  try:
    trainer = common.hinge_jax_trainer(dataset, loss, steps, batch=batch,
                                       learning_rates=np.logspace(-8, -6, k),
                                       devices=jax.devices('cpu')[:1], tuning=tuning)
    tuning = trainer.tuning  # its member-dependent defaults decided (`Tuning.for_members`)
    abstract = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_card)
    state = jax.tree.map(abstract, trainer.init())
    data = jax.tree.map(abstract, trainer.data)
    hp = jax.tree.map(abstract, trainer.hp)
    chunk = trainer.chunk_program(steps)  # what Trainer.run_chunk runs
    start = jax.ShapeDtypeStruct((), jnp.int32, sharding=on_card)
    options = tuning.program_options(trainer.spec)  # as Trainer.compiled_chunk compiles it
    dump_dir = tempfile.mkdtemp(prefix='hinge_jax_ptx_') if ptxas else None
    if dump_dir:
      options['xla_dump_to'] = dump_dir
    try:
      text = chunk.lower(state, start, data, hp).compile(
          compiler_options=options or None).as_text()
      kernels = pallas_kernels(dump_dir, card['arch']) if dump_dir else ()
    finally:
      if dump_dir:
        shutil.rmtree(dump_dir, ignore_errors=True)
    unroll = tuning.unroll(steps)  # steps in the loop body (train_chunk unrolls full batch too)
    block = tuning.loop_block(trainer.spec)
    fused_bytes = None
    if (getattr(tuning, 'pallas', None)
        and tuning.pallas_mode(trainer.spec, tuning.guard_mode(trainer.spec)) == 'step'):
      fused_bytes = fused.step_bytes(trainer.spec, k, dataset.x['train'].dtype.itemsize,
                                     tuning.pallas_batch_rows or fused.ROWS)
  finally:
    jax.default_backend = backend
  return CardProgram(text, unroll, fused_bytes, kernels, block)


def main(argv):
  del argv
  import jax
  from benchmarks import common, hlo_kernels
  card = CARDS[FLAGS.target]
  variants = common.tuning_variants()
  if FLAGS.tuning not in variants:
    sys.exit(f'--tuning={FLAGS.tuning} is not one of: {", ".join(variants)}')
  tuning = variants[FLAGS.tuning]
  x, y, dataset = common.cifar_dataset()
  ptxas = FLAGS.ptxas and bool(getattr(tuning, 'pallas', None)) and find_ptxas() is not None
  try:
    program = compile_for_card(FLAGS.target, dataset, k=FLAGS.k, batch=FLAGS.batch,
                               steps=FLAGS.steps, tuning=tuning, ptxas=ptxas)
  except RuntimeError as e:
    sys.exit(str(e))
  text, unroll, fused_bytes, pallas = (program.text, program.unroll, program.fused_bytes,
                                       program.kernels)
  if FLAGS.dump:
    with open(FLAGS.dump, 'w') as f:
      f.write(text)

  kernels = hlo_kernels.kernels(text)
  in_loop = [k for k in kernels if k.computation != 'ENTRY'] or kernels  # no loop: one step
  summary = hlo_kernels.loop_summary(text, unroll, block=program.block)
  print(f'{card["name"]} (compiled without a card), jax {jax.__version__}; '
        f'K={FLAGS.k}, batch={FLAGS.batch or "full"}, tuning={FLAGS.tuning}, '
        f'{unroll} step(s) per loop iteration'
        + (f' (the outer loop\'s: {program.block})' if program.block else ''))
  common.print_table('kernels of one loop iteration', ['#', 'where', 'kernel', 'output', 'MB'],
                     [[i + 1, k.computation, k.op.replace('fusion:', ''), k.shape.split('{')[0][:40],
                       f'{k.bytes / 1e6:.2f}'] for i, k in enumerate(in_loop)])
  if pallas:
    common.print_table(
        f'the Pallas kernels (ptxas -v, {card["arch"]}; what an SM holds at once)',
        ['kernel', 'grid', 'threads', 'shared KB', 'registers', 'spilled B', 'per SM',
         'waves'],
        [[k.name, 'x'.join(map(str, k.grid)), k.threads, f'{k.shared_bytes / 1024:.1f}',
          k.registers, k.spill_bytes, k.programs_per_sm, f'{k.waves:.2f}'] for k in pallas])
  elif getattr(tuning, 'pallas', None) and FLAGS.ptxas:
    print('\n(ptxas not found: the Pallas kernels\' registers are not listed)')
  per_step_bytes = summary['bytes_per_step']
  if fused_bytes is not None:  # the listing counts the Pallas kernels' operands whole
    print(f'\nthe two Pallas kernels (fused.py) move about {fused_bytes / 1e6:,.2f} MB a step '
          f'(fused.step_bytes); the listing counts their operands whole: '
          f'{per_step_bytes / 1e6:,.1f} MB')
    per_step_bytes = fused_bytes
  floor = per_step_bytes / card['bandwidth']
  print(f'\nper step: {summary["kernels_per_step"]:.2f} kernels, {per_step_bytes / 1e6:,.1f} MB read '
        f'and written; floor at {card["bandwidth"] / 1e12:.2f} TB/s: {floor * 1e6:,.1f} µs')
  if FLAGS.batch:
    epoch = floor * 245
    print(f'an epoch (245 steps) ≥ {epoch * 1e3:.2f} ms on bandwidth alone; '
          f'≤ {FLAGS.k / epoch:,.0f} model-epochs/s')


if __name__ == '__main__':  # flags here: the module's functions import beside other scripts'
  flags.DEFINE_enum('target', 'h200', ['h100', 'h200'], 'The card to compile for.')
  flags.DEFINE_integer('k', 1, 'Members trained together (sharing minibatches).')
  flags.DEFINE_integer('batch', 200, 'Minibatch size; 0 = full batch.')
  flags.DEFINE_integer('steps', 245, 'Steps in the compiled chunk (an epoch: 245).')
  flags.DEFINE_string('tuning', 'default', 'A variant of common.tuning_variants().')
  flags.DEFINE_string('dump', None, 'Also write the optimized HLO here.')
  flags.DEFINE_bool('ptxas', True, 'List the Pallas kernels\' registers and spills '
                    '(ptxas -v), where the program has any and ptxas is found.')
  os.environ.setdefault('CUDA_VISIBLE_DEVICES', '-1')  # compile for the described card only
  os.environ.setdefault('JAX_SKIP_CUDA_CONSTRAINTS_CHECK', '1')  # no driver to check against
  app.run(main)
