"""Gathers every run of a launch into one table: `python -m launch.collect --workdir=BASE`.

Reads BASE/launch.json (written by launch.run) and each run's sweep.csv (a vmapped sweep) or
results.json (a single run); writes BASE/collected.csv and BASE/collected.json with the
structural values as leading columns, and prints the rows best-first by validation accuracy.
"""

import csv
import io
import json
import os

from absl import flags

from hinge_jax import cli_utils, io_utils
from hinge_jax.errors import UserError


def _run_rows(run: dict) -> list[dict]:
  workdir = run['workdir']
  sweep_csv = os.path.join(workdir, 'sweep.csv')
  if os.path.exists(sweep_csv):
    with open(sweep_csv) as f:
      return [{'run': run['name'], **run['values'], **row} for row in csv.DictReader(f)]
  results = os.path.join(workdir, 'results.json')
  if os.path.exists(results):
    with open(results) as f:
      r = json.load(f)
    keep = ('train_accuracy', 'val_accuracy', 'test_accuracy', 'final_loss', 'diverged', 'seed')
    return [{'run': run['name'], **run['values'], **{k: r.get(k) for k in keep}}]
  return [{'run': run['name'], **run['values'], 'status': 'missing'}]


def collect(base: str) -> list[dict]:
  """All rows of all runs under `base`, best validation accuracy first."""
  manifest = os.path.join(base, 'launch.json')
  if not os.path.exists(manifest):
    raise UserError(f'{manifest} does not exist; run python -m launch.run --workdir={base} first')
  with open(manifest) as f:
    runs = json.load(f)['runs']
  rows = [row for run in runs for row in _run_rows(run)]

  def val(row):
    try:
      return float(row.get('val_accuracy'))
    except (TypeError, ValueError):
      return -1.0
  rows.sort(key=val, reverse=True)
  columns = list(dict.fromkeys(k for row in rows for k in row))
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  io_utils.write_atomic(os.path.join(base, 'collected.csv'), buf.getvalue())
  io_utils.write_json(os.path.join(base, 'collected.json'), rows)
  return rows


def main(argv):
  del argv
  workdir = flags.FLAGS.workdir
  if not workdir:
    raise UserError('--workdir is required')
  rows = collect(workdir)
  for row in rows:
    print('  '.join(f'{k}={v}' for k, v in row.items()))
  print(f'{len(rows)} row(s) → {os.path.join(workdir, "collected.csv")}')


def cli() -> None:
  """`python -m launch.collect`: the flag is defined here, so importing defines none."""
  flags.DEFINE_string('workdir', None, 'The base directory given to launch.run.')
  cli_utils.run(main)


if __name__ == '__main__':
  cli()
