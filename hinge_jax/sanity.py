"""The lecture's sanity checks, run at the start of every training run and on their own.

  python -m hinge_jax.sanity --config=configs/default.py [--workdir=DIR]

1. *Initial loss*: at W0 = init_scale·randn (scores ≈ 0) the data loss should be
   `losses.expected_initial_loss`: (C − 1)·Δ for the WW SVM (9 for ten classes), ln C for
   softmax (2.302). Within 10% counts as ok; a large `init_scale` or unscaled inputs break it.
2. *Raising λ raises the loss*: the objective at W0 for λ ∈ {0, λ, 10λ, 100λ, 1000λ} (λ from
   the config, or 1e-3 when it is 0) must not decrease and must end above where it started.
3. *Overfit*: `sanity.overfit_examples` training examples (the first ones), λ = 0,
   `sanity.overfit_steps` full-batch steps of the configured optimizer: the training accuracy
   should reach 100%. A report, not a proof: a too small learning rate also fails it.

`train_and_evaluate` calls `at_start` (when `sanity.enabled`), which prints the report and
writes `sanity.json` in the workdir. Nothing here stops a run; the CLI exits 1 when a check
is not ok.
"""

import dataclasses
import math
import os
import sys

from absl import flags

from hinge_jax import cli_utils, config_lib, datasets, io_utils, losses, results
from hinge_jax.datasets import Dataset
from hinge_jax.train import Trainer

TOLERANCE = 0.10  # relative distance of the initial loss from its expected value


def _with(config, **fields):
  """A copy of `config` with dotted fields replaced."""
  return config_lib.with_fields(config, fields)


def initial_and_lambda(config, dataset: Dataset) -> dict:
  """Checks 1 and 2: the data loss at W0, and the objective as λ grows (one vmapped program)."""
  base = float(config.reg.strength) or 1e-3
  strengths = [0.0, base, 10 * base, 100 * base, 1000 * base]
  members = [_with(config, **{'reg.strength': s}) for s in strengths]
  trainer = Trainer.create(members[0], dataset, members)
  ev = trainer.evaluate(trainer.init().params, 'train')
  value = float(ev['data_loss'][0])
  expected = losses.expected_initial_loss(config.loss.name, dataset.num_classes,
                                          float(config.loss.margin), bool(config.loss.squared))
  loss = [float(v) for v in ev['loss']]
  lam_ok = (config.reg.name == 'none' or
            (all(b >= a for a, b in zip(loss, loss[1:])) and loss[-1] > loss[0]))
  return {
      'initial_loss': {'value': value, 'expected': expected,
                       'ok': bool(math.isfinite(value)
                                  and abs(value - expected) <= TOLERANCE * expected)},
      'regularization': {'strengths': strengths, 'losses': loss, 'ok': bool(lam_ok),
                         'applies': config.reg.name != 'none'},
  }


def overfit(config, dataset: Dataset) -> dict:
  """Check 3: full-batch training on a tiny subset with λ = 0; reports the training accuracy."""
  n = min(int(config.sanity.overfit_examples), dataset.size('train'))
  steps = int(config.sanity.overfit_steps)
  tiny = dataclasses.replace(
      dataset, x={'train': dataset.x['train'][:n], 'val': dataset.x['train'][:0],
                  'test': dataset.x['train'][:0]},
      y={'train': dataset.y['train'][:n], 'val': dataset.y['train'][:0],
         'test': dataset.y['train'][:0]})
  strategy = config.strategy if config.strategy in ('sgd', 'gradient_descent') else 'sgd'
  c = _with(config, **{'reg.strength': 0.0, 'strategy': strategy, 'batch_size': 0,
                       'sampling': 'with_replacement', 'num_steps': steps,
                       'eval_every_steps': max(steps, 1)})
  trainer = Trainer.create(c, tiny, [c])
  state = trainer.init()
  if steps:
    state = trainer.fit(state)
  ev = trainer.evaluate(state.params, 'train')
  acc = float(ev['accuracy'][0])
  return {'examples': n, 'steps': steps, 'strategy': strategy,
          'optimizer': f'{config.optimizer.name} lr={config.optimizer.learning_rate:g}',
          'train_accuracy': acc, 'data_loss': float(ev['data_loss'][0]), 'ok': acc == 1.0}


def report(config, dataset: Dataset) -> dict:
  """All three checks; `ok` is True when every one is."""
  out = initial_and_lambda(config, dataset)
  out['overfit'] = overfit(config, dataset)
  out['ok'] = all(out[k]['ok'] for k in ('initial_loss', 'regularization', 'overfit'))
  return out


def format_report(r: dict, config) -> list[str]:
  """One line per check."""
  formula = {'multiclass_svm': '(C−1)·Δ', 'softmax_cross_entropy': 'ln C',
             'crammer_singer': 'Δ', 'one_vs_all': 'C·Δ'}.get(config.loss.name, '')
  il, reg, of = r['initial_loss'], r['regularization'], r['overfit']
  mark = lambda ok: 'ok' if ok else 'NOT OK'
  lines = [f'sanity: initial data loss {il["value"]:.4f}, expected ≈ {il["expected"]:.4f} '
           f'({formula}): {mark(il["ok"])}'
           + ('' if il['ok'] else ' (is init_scale small and the input scaled?)')]
  if reg['applies']:
    pairs = ', '.join(f'{s:g} → {v:.6f}' for s, v in zip(reg['strengths'], reg['losses']))
    lines.append(f'sanity: raising λ raises the loss ({pairs}): {mark(reg["ok"])}')
  else:
    lines.append('sanity: raising λ: n/a (reg.name=none)')
  lines.append(f'sanity: overfit {of["examples"]} examples with λ=0, {of["steps"]} full-batch '
               f'steps of {of["optimizer"]}: train accuracy {of["train_accuracy"]:.3f}, data '
               f'loss {of["data_loss"]:.4f}: {mark(of["ok"])}'
               + ('' if of['ok'] else ' (raise sanity.overfit_steps or the learning rate)'))
  return lines


def at_start(config, dataset: Dataset, workdir: str, log=print) -> dict | None:
  """The report at the start of a run: printed, and saved as `workdir/sanity.json`."""
  if not config.sanity.enabled:
    return None
  r = report(config, dataset)
  for line in format_report(r, config):
    log(line)
  io_utils.write_json(os.path.join(workdir, 'sanity.json'), r)
  return r


_CONFIG = None


def main(argv) -> None:
  del argv
  config, workdir = _CONFIG.value, flags.FLAGS.workdir
  config_lib.validate(config)
  dataset = datasets.load(config.dataset)
  r = report(config, dataset)
  if workdir:
    results.prepare_workdir(workdir)
    io_utils.write_json(os.path.join(workdir, 'sanity.json'), r)
  print('\n'.join(format_report(r, config)))
  sys.exit(0 if r['ok'] else 1)


def cli() -> None:
  """`python -m hinge_jax.sanity --config=... [--workdir=DIR]` (flags defined only here)."""
  global _CONFIG
  flags.DEFINE_string('workdir', '', 'If set, sanity.json is written there.')
  _CONFIG = cli_utils.config_flag()
  cli_utils.run(main)


if __name__ == '__main__':
  cli()
