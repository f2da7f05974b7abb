"""The kernels of a compiled XLA program, read from its optimized HLO text (`Compiled.as_text()`).

A kernel here is an instruction that XLA's GPU runtime launches on its own: a fusion, a
library call (custom-call) or a copy, in a computation the program executes (the entry, a
while loop's body and condition, a conditional's branches, a called computation), not in one
fused into a kernel. For each, the bytes it reads and writes are its operands' and output's
sizes: summed over a loop body they give the bytes a training step moves at least once, a
floor on its time at the card's memory bandwidth.
"""

import collections
import dataclasses
import re
from typing import Optional

_HEADER = re.compile(r'^(ENTRY )?%([\w.\-]+) \(')
_INSTR = re.compile(r'^(?:ROOT )?%([\w.\-]+) = (\(.*?\)|\S+) ([a-z][\w\-]*)\((.*)$')
_SHAPE = re.compile(r'(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64)\[([\d,]*)\]')
_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'bf16': 2, 'f16': 2, 's32': 4,
          'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8}
_CALLED = (('body', 'body'), ('condition', 'condition'), ('true_computation', 'true'),
           ('false_computation', 'false'))
KERNEL_OPS = ('fusion', 'custom-call', 'copy', 'copy-start')


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO shape string, tuples summed (`f32[10,3073]{1,0}` → 122,920)."""
  total = 0
  for dtype, dims in _SHAPE.findall(shape):
    n = 1
    for d in filter(None, dims.split(',')):
      n *= int(d)
    total += n * _BYTES[dtype]
  return total


@dataclasses.dataclass
class Kernel:
  computation: str  # where it runs: 'ENTRY', or the path of loop bodies/branches to it
  name: str
  op: str  # 'fusion:kLoop', 'fusion:__triton_nested_gemm_fusion', 'custom-call:…', 'copy'
  shape: str
  bytes: int  # output + operands


def _computations(text: str) -> dict:
  comps, current = {}, None
  for line in text.splitlines():
    m = _HEADER.match(line)
    if m:
      current = 'ENTRY' if m.group(1) else m.group(2)
      comps[current] = []
    elif current is not None and line.strip().startswith(('%', 'ROOT %')):
      comps[current].append(line.strip())
  return comps


def _kind(op: str, line: str) -> str:
  if op == 'fusion':
    m = re.search(r'"kind":"(__[\w]+)"', line) or re.search(r'kind=(\w+)', line)
    return f'fusion:{m.group(1)}' if m else 'fusion'
  if op == 'custom-call':
    m = re.search(r'custom_call_target="([^"]+)"', line)
    return f'custom-call:{m.group(1)}' if m else op
  return op


def _fused_reads(body: list, num_params: int) -> list:
  """Per parameter of a fused computation: the bytes it reads when every use is a gather or
  dynamic-slice from it (their outputs' sizes: a batch gathered from the whole dataset reads
  the batch), else None (the whole operand is read)."""
  names, uses = {}, collections.defaultdict(list)
  for line in body:
    m = _INSTR.match(line)
    if not m:
      continue
    iname, shape, op, rest = m.groups()
    if op == 'parameter':
      names[iname] = int(re.match(r'(\d+)', rest).group(1))
      continue
    args = re.findall(r'%([\w.\-]+)', rest.split('), ')[0])
    for pos, a in enumerate(args):
      if a in names:
        uses[a].append((op, pos, shape))
  read = [None] * num_params
  for pname, index in names.items():
    us = uses.get(pname, [])
    if index < num_params and us and all(op in ('gather', 'dynamic-slice') and pos == 0
                                         for op, pos, _ in us):
      read[index] = sum(shape_bytes(shape) for _, _, shape in us)
  return read


def kernels(text: str) -> list:
  """Every kernel the program launches, in program order, with the path to its computation."""
  comps = _computations(text)
  out = []

  def walk(name: str, path: str) -> None:
    shapes = {}
    for line in comps.get(name, []):
      m = _INSTR.match(line)
      if not m:
        continue
      iname, shape, op, rest = m.groups()
      shapes[iname] = shape
      if op in KERNEL_OPS:
        operands = re.findall(r'%([\w.\-]+)', rest.split('), ')[0])
        fused = re.search(r'calls=%([\w.\-]+)', rest) if op == 'fusion' else None
        read = (_fused_reads(comps.get(fused.group(1), []), len(operands)) if fused
                else [None] * len(operands))
        size = shape_bytes(shape) + sum(
            shape_bytes(shapes.get(o, '')) if r is None else r for o, r in zip(operands, read))
        out.append(Kernel(path, iname, _kind(op, line), shape, size))
      for key, label in _CALLED:
        called = re.search(key + r'=%([\w.\-]+)', rest)
        if called:
          walk(called.group(1), f'{path}/{label}')
      branches = re.search(r'branch_computations=\{([^}]*)\}', rest)
      if branches:
        for i, b in enumerate(branches.group(1).split(',')):
          walk(b.strip().lstrip('%'), f'{path}/branch{i}')
      if op == 'call':
        called = re.search(r'to_apply=%([\w.\-]+)', rest)
        if called:
          walk(called.group(1), f'{path}/call')
  walk('ENTRY', 'ENTRY')
  return out


def loop_summary(text: str, unroll: int, block: Optional[int] = None) -> dict:
  """Per training step (a loop body holds `unroll` steps): kernels, by kind, and bytes moved.

  The body is the while loop's (the training scan); its condition's kernels count too. A
  program without a loop (one step: XLA drops a loop of one iteration) is one step. `block`:
  the steps an iteration of the outer loop holds in a loop of loops (`scaled.py`'s blocks of
  steps): the inner loop's kernels count once a `unroll` steps, the outer's once a `block`.
  """
  ks = kernels(text)

  def depth(k):  # loops around the kernel: the path's bodies and conditions
    return sum(part in ('body', 'condition') for part in k.computation.split('/'))
  loop = [k for k in ks if depth(k) > 0]
  if not loop:
    loop, unroll = ks, 1
  inner = max(depth(k) for k in loop) if loop and block else None
  weight = {id(k): 1 / (unroll if inner is None or depth(k) == inner else block) for k in loop}
  by_kind = collections.Counter()
  for k in loop:
    by_kind[k.op] += weight[id(k)]
  return {'kernels_per_step': sum(weight.values()),
          'by_kind_per_step': dict(sorted(by_kind.items())),
          'bytes_per_step': sum(k.bytes * weight[id(k)] for k in loop),
          'outside_loop': sum(1 for k in ks if k.computation == 'ENTRY' and k not in loop)}
