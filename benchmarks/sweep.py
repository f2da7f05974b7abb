"""Sweep scaling: K members trained in one vmapped program against K sequential single runs.

  python benchmarks/sweep.py [--quick] [--ks=1,4,16,64] [--steps=100] [--out=FILE.json]

CIFAR-shaped synthetic data (49,000 × 3,072 uint8 pixels + the bias feature, 10 classes),
batch 200, the WW SVM, shared seed (members share their minibatches), SGD. Both sides use
hinge_jax's real training path (`Trainer.run_chunk`: the compiled `lax.scan` of the training
step); compile time is excluded (one warm-up call). K sequential runs cost K × the single
run's time (K = 1), measured in the same process; all K are timed in alternating rounds
(`common.interleaved`), so machine noise falls on every K alike. Target (2-core CPU):
K = 64 at most 0.15× of 64 sequential. On a GPU, `--ks` up to 1024 also reports model-epochs
per second.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_QUICK = flags.DEFINE_bool('quick', False, 'Fewer steps and repeats (a smoke run).')
_KS = flags.DEFINE_list('ks', None, 'Member counts (default 1,4,16,64 on CPU; to 1024 on GPU).')
_STEPS = flags.DEFINE_integer('steps', 100, 'Steps per timed call.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats per K.')
_LOSS = flags.DEFINE_string('loss', 'multiclass_svm', 'Loss to train.')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/sweep.json', 'Where to write the table.')


def main(argv):
  del argv
  import jax
  import numpy as np
  from benchmarks import common
  on_gpu = jax.default_backend() != 'cpu'
  ks = [int(k) for k in (_KS.value or ([1, 4, 16, 64, 256, 1024] if on_gpu else [1, 4, 16, 64]))]
  steps = 20 if _QUICK.value else _STEPS.value
  repeats = 2 if _QUICK.value else _REPEATS.value
  x, y, dataset = common.cifar_dataset()
  if 1 not in ks:
    ks = [1] + ks  # the single run every ratio is taken against
  flops = 4 * 200 * dataset.num_features * 10  # per member and step: X·Wᵀ and dSᵀ·X
  rows, table = [], []

  def runner(k):
    trainer = common.hinge_jax_trainer(dataset, _LOSS.value, steps,
                                       learning_rates=np.logspace(-8, -6, k))
    return common.chunk_runner(trainer, steps)
  timed = common.interleaved({k: runner(k) for k in ks}, repeats)
  single = timed[1]
  for k in ks:
    t = timed[k]
    seq = k * single['median']
    ratio = t['median'] / seq
    epochs = k * steps * 200 / dataset.size('train') / t['median']
    gflops = k * flops * steps / t['median'] / 1e9
    rows.append({'k': k, 'vmapped_s': t, 'sequential_s': seq, 'ratio': ratio,
                 'per_step_ms': t['median'] / steps * 1e3, 'model_epochs_per_s': epochs,
                 'gflops': gflops})
    table.append([k, common.fmt(t), f'{seq * 1e3:.1f}', f'{ratio:.3f}',
                  f'{t["median"] / steps * 1e3:.2f}', f'{epochs:.1f}', f'{gflops:.0f}'])
  common.print_table(
      f'sweep scaling: {steps} steps, batch 200, {_LOSS.value}, uint8 CIFAR-shaped data, '
      f'{jax.default_backend()} ({jax.local_devices()[0].device_kind})',
      ['K', 'vmapped ms median (min–max)', f'K × single ms', 'ratio', 'ms/step',
       'model-epochs/s', 'GFLOP/s'], table)
  target = next((r for r in rows if r['k'] == 64), None)
  peak = None
  if not on_gpu:
    peak = common.peak_gflops(5)
    print(f'\nFLOPs/step {flops / 1e6:.1f} M per member (X·Wᵀ and dSᵀ·X); matmul peak here '
          f'{peak:.0f} GFLOP/s (NumPy 2048²)')
  if target and not on_gpu:
    floor = 64 * flops / (peak * 1e9)
    print(f'K = 64: {target["ratio"]:.3f}× of 64 sequential runs (target ≤ 0.15): '
          f'{"met" if target["ratio"] <= 0.15 else "NOT met"}; its matmuls alone need '
          f'≥ {floor * 1e3:.2f} ms/step at the peak, '
          f'{floor / (64 * single["median"] / steps):.3f}× of 64 sequential runs')
  common.write_json(_OUT.value, {'benchmark': 'sweep', 'steps': steps, 'repeats': repeats,
                                 'loss': _LOSS.value, 'flops_per_step_per_member': flops,
                                 'peak_gflops': peak, 'rows': rows,
                                 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
