"""benchmarks/hlo_kernels.py: the kernels of a compiled program and the bytes they move; and
benchmarks/gpu_program.py's reading of `ptxas -v`."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import hlo_kernels

# A GPU-style optimized program, written out: a loop whose body gathers 4 rows from a
# (1000, 8) table, multiplies (a library call) and updates.
_PROGRAM = """
HloModule m

%fused_gather (param_0: f32[1000,8], param_1: s32[4]) -> f32[4,8] {
  %param_0 = f32[1000,8]{1,0} parameter(0)
  %param_1 = s32[4]{0} parameter(1)
  ROOT %gather.1 = f32[4,8]{1,0} gather(%param_0, %param_1), offset_dims={1}, slice_sizes={1,8}
}

%fused_add (param_0.1: f32[4,8], param_1.1: f32[4,8]) -> f32[4,8] {
  %param_0.1 = f32[4,8]{1,0} parameter(0)
  %param_1.1 = f32[4,8]{1,0} parameter(1)
  ROOT %add.1 = f32[4,8]{1,0} add(%param_0.1, %param_1.1)
}

%body (p: (s32[], f32[4,8], f32[1000,8], s32[4])) -> (s32[], f32[4,8], f32[1000,8], s32[4]) {
  %p = (s32[], f32[4,8]{1,0}, f32[1000,8]{1,0}, /*index=3*/s32[4]{0}) parameter(0)
  %c = f32[4,8]{1,0} get-tuple-element(%p), index=1
  %t = f32[1000,8]{1,0} get-tuple-element(%p), index=2
  %i = s32[4]{0} get-tuple-element(%p), index=3
  %n = s32[] get-tuple-element(%p), index=0
  %rows = f32[4,8]{1,0} fusion(%t, %i), kind=kLoop, calls=%fused_gather
  %mm = f32[4,8]{1,0} custom-call(%rows, %c), custom_call_target="__cublas$gemm"
  %new = f32[4,8]{1,0} fusion(%mm, %c), kind=kLoop, calls=%fused_add
  ROOT %out = (s32[], f32[4,8]{1,0}, f32[1000,8]{1,0}, /*index=3*/s32[4]{0}) tuple(%n, %new, %t, %i)
}

%cond (q: (s32[], f32[4,8], f32[1000,8], s32[4])) -> pred[] {
  %q = (s32[], f32[4,8]{1,0}, f32[1000,8]{1,0}, /*index=3*/s32[4]{0}) parameter(0)
  ROOT %lt = pred[] constant(true)
}

ENTRY %main (a: f32[4,8], b: f32[1000,8], c: s32[4]) -> f32[4,8] {
  %a = f32[4,8]{1,0} parameter(0)
  %b = f32[1000,8]{1,0} parameter(1)
  %c = s32[4]{0} parameter(2)
  %z = s32[] constant(0)
  %copy.1 = f32[4,8]{1,0} copy(%a)
  %init = (s32[], f32[4,8]{1,0}, f32[1000,8]{1,0}, /*index=3*/s32[4]{0}) tuple(%z, %copy.1, %b, %c)
  %w = (s32[], f32[4,8]{1,0}, f32[1000,8]{1,0}, /*index=3*/s32[4]{0}) while(%init), condition=%cond, body=%body
  ROOT %r = f32[4,8]{1,0} get-tuple-element(%w), index=1
}
"""


def test_shape_bytes_counts_every_array_of_a_shape():
  assert hlo_kernels.shape_bytes('f32[10,3073]{1,0}') == 122_920
  assert hlo_kernels.shape_bytes('(f32[2]{0}, u8[3]{0}, /*index=2*/bf16[4,2]{1,0})') == 27
  assert hlo_kernels.shape_bytes('pred[]') == 1
  assert hlo_kernels.shape_bytes('token[]') == 0


def test_kernels_of_a_loop_and_the_bytes_they_move():
  kernels = hlo_kernels.kernels(_PROGRAM)
  assert [(k.computation, k.name, k.op) for k in kernels] == [
      ('ENTRY', 'copy.1', 'copy'),
      ('ENTRY/body', 'rows', 'fusion:kLoop'),
      ('ENTRY/body', 'mm', 'custom-call:__cublas$gemm'),
      ('ENTRY/body', 'new', 'fusion:kLoop')]
  by_name = {k.name: k.bytes for k in kernels}
  assert by_name['copy.1'] == 2 * 128
  assert by_name['rows'] == 128 + 128 + 16  # the 4 gathered rows, not the 32,000-byte table
  assert by_name['mm'] == 3 * 128
  assert by_name['new'] == 3 * 128
  summary = hlo_kernels.loop_summary(_PROGRAM, unroll=2)
  assert summary['kernels_per_step'] == 1.5 and summary['outside_loop'] == 1
  assert summary['bytes_per_step'] == (272 + 384 + 384) / 2
  assert summary['by_kind_per_step'] == {'custom-call:__cublas$gemm': 0.5, 'fusion:kLoop': 1.0}


def test_kernels_read_a_real_compiled_loop():
  """On XLA's own output (this machine's backend): the loop body is found and its gather
  fusion counts the rows it reads, not the table."""
  def f(x, table, idx):
    def body(c, i):
      return c + jnp.tanh(table[idx[i]] @ c.T).sum(), None
    return jax.lax.scan(body, x, jnp.arange(5))[0]
  text = jax.jit(f).lower(jnp.ones((4, 8)), jnp.ones((1000, 8)),
                          jnp.zeros((5, 4), jnp.int32)).compile().as_text()
  kernels = hlo_kernels.kernels(text)
  body = [k for k in kernels if k.computation == 'ENTRY/body']
  assert body and any(k.computation == 'ENTRY/condition' for k in kernels)
  assert max(k.bytes for k in body) < 1000 * 8 * 4  # no kernel is charged the whole table
  assert hlo_kernels.loop_summary(text, 1)['kernels_per_step'] >= len(body)


def test_a_program_without_a_loop_is_one_step():
  text = jax.jit(lambda a, b: jnp.tanh(a @ b).sum()).lower(
      jnp.ones((8, 8)), jnp.ones((8, 8))).compile().as_text()
  summary = hlo_kernels.loop_summary(text, unroll=4)
  assert summary['kernels_per_step'] == len(hlo_kernels.kernels(text)) >= 1
  assert summary['outside_loop'] == 0 and summary['bytes_per_step'] >= 2 * 8 * 8 * 4


def test_a_loop_of_loops_counts_the_outer_loops_kernels_once_a_block():
  """scaled.py's program: blocks of 4 steps (an inner loop, 2 steps an iteration) and a pass
  over the state after each block. Per step, an inner kernel counts 1/2 and an outer 1/4."""
  def f(w, xs):
    def step(w, x):
      return w + jnp.tanh(w @ x), None

    def block(w, xb):
      w = jax.lax.scan(step, w, xb, unroll=2)[0]
      return w / jnp.linalg.norm(w), None  # the fold
    return jax.lax.scan(block, w, xs)[0]
  text = jax.jit(f).lower(jnp.ones((8, 8)), jnp.ones((3, 4, 8, 8))).compile().as_text()
  kernels = hlo_kernels.kernels(text)
  depth = lambda k: sum(p in ('body', 'condition') for p in k.computation.split('/'))
  inner = [k for k in kernels if depth(k) == 2]
  outer = [k for k in kernels if depth(k) == 1]
  assert inner and outer
  summary = hlo_kernels.loop_summary(text, 2, block=4)
  assert summary['kernels_per_step'] == pytest.approx(len(inner) / 2 + len(outer) / 4)
  assert summary['bytes_per_step'] == pytest.approx(
      sum(k.bytes for k in inner) / 2 + sum(k.bytes for k in outer) / 4)
  flat = hlo_kernels.loop_summary(text, 2)  # without `block`, every loop kernel once a 2
  assert flat['kernels_per_step'] == pytest.approx((len(inner) + len(outer)) / 2)
def test_ptxas_report_and_occupancy_arithmetic():
  """What `gpu_program` reads from `ptxas -v`, and CUDA's occupancy rules for an sm_90 SM."""
  from benchmarks import gpu_program
  report = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'hinge_jax_backward_update' for 'sm_90a'
ptxas info    : Function properties for hinge_jax_backward_update
    1368 bytes stack frame, 1400 bytes spill stores, 1404 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 1368 bytes cumulative stack size
ptxas info    : Compiling entry function 'hinge_jax_scores' for 'sm_90a'
ptxas info    : Function properties for hinge_jax_scores
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 127 registers, used 1 barriers"""
  assert gpu_program.parse_ptxas(report) == {'hinge_jax_backward_update': (255, 2804),
                                             'hinge_jax_scores': (127, 0)}
  per_sm = gpu_program.programs_per_sm
  assert per_sm(127, 128, 29696) == 4  # 128 registers × 128 threads: 4 of 65,536
  assert per_sm(251, 256, 0) == 1  # 256 × 256 registers
  assert per_sm(128, 512, 0) == 1 and per_sm(92, 512, 0) == 1  # 96 × 512 × 2 > 65,536
  assert per_sm(32, 128, 100_000) == 2  # shared memory: 2 × (100,000 + 1,024) ≤ 233,472
  assert per_sm(16, 32, 0) == 32  # at most 32 programs
  k = gpu_program.PallasKernel('k', (80, 25), 256, 0, 251, 0, 1)
  assert k.waves == pytest.approx(2000 / 132)
