"""Gathers every run of a launch into one table: `python -m launch.collect --workdir=BASE`.

Reads BASE/launch.json (written by launch.run) and each run's sweep.csv (a vmapped sweep) or
results.json (a single run); writes BASE/collected.csv and BASE/collected.json with the
structural values as leading columns, and prints the rows best-first by validation accuracy.
Then one status line per run: `done`, `failed` (with the run's `error:` line, read from its
launch.log or submitit log) or `missing` (never started, or still running). Exit codes: 0 when every run is
done (or with `--allow_incomplete`), 1 when a run failed or is missing, 2 for bad input.
"""

import csv
import glob
import io
import json
import os
import socket

from absl import flags

from hinge_jax import cli_utils, io_utils
from hinge_jax.errors import UserError
from hinge_jax.results import disk_errors

RESULT_KEYS = ('train_accuracy', 'val_accuracy', 'test_accuracy', 'final_loss', 'diverged',
               'seed')


def _error_line(log_path: str) -> str | None:
  """The run's last `error:`/`stopped:` line (else its last line) from its log; None if no log."""
  try:
    with open(log_path, errors='replace') as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return None
  for line in reversed(lines):
    if line.startswith(('error:', 'stopped:')):
      return line
  return lines[-1] if lines else f'no output in {log_path}'


def _holder(workdir: str) -> str | None:
  """Who holds the run's workdir lock (a run still going), or None; takes no lock itself."""
  try:
    with open(os.path.join(workdir, io_utils.LOCK_NAME)) as f:
      info = json.load(f)
    pid, host = int(info['pid']), str(info['host'])
  except (OSError, ValueError, KeyError, TypeError):
    return None  # no lock file: the run ended (or never started)
  if host == socket.gethostname():
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return None  # a killed run's lock file
    except PermissionError:
      pass
  return f'pid {pid} on host {host}'


def _submitit_log(base: str, workdir: str) -> str | None:
  """The stderr log of the submitit job that ran `workdir` (its pickled command names it)."""
  needle = f'--workdir={workdir}'.encode()
  for pickled in sorted(glob.glob(os.path.join(base, 'submitit', '*', '*_submitted.pkl'))):
    try:
      with open(pickled, 'rb') as f:
        if needle not in f.read():
          continue
    except OSError:
      continue
    logs = sorted(glob.glob(os.path.join(os.path.dirname(pickled), '*_log.err')))
    if logs:
      return logs[-1]
  return None


def run_status(run: dict, base: str = '') -> tuple[str, str, list[dict]]:
  """`(status, detail, rows)` of one run: done / failed (its error line) / missing.

  The error line comes from the run's launch.log (local executor) or its submitit log.
  """
  workdir, head = run['workdir'], {'run': run['name'], **run['values']}
  sweep_csv, results = os.path.join(workdir, 'sweep.csv'), os.path.join(workdir, 'results.json')
  try:
    if os.path.exists(sweep_csv):
      with open(sweep_csv) as f:
        return 'done', '', [{**head, **row} for row in csv.DictReader(f)]
    if os.path.exists(results):
      with open(results) as f:
        r = json.load(f)
      return 'done', '', [{**head, **{k: r.get(k) for k in RESULT_KEYS}}]
  except (OSError, ValueError) as e:
    detail = f'its results are unreadable ({type(e).__name__}: {e})'
    return 'failed', detail, [{**head, 'status': 'failed', 'error': detail}]
  holder = _holder(workdir)
  if holder:
    detail = f'still running ({holder})'
    return 'missing', detail, [{**head, 'status': 'missing'}]
  error = _error_line(os.path.join(workdir, 'launch.log'))
  job_log = None if error is not None else _submitit_log(base, workdir)
  if job_log:
    error = _error_line(job_log)
  if error is None and os.path.exists(os.path.join(workdir, 'config.json')):
    error = f'started, but wrote no results and left no log in {workdir}'
  if error is not None:
    return 'failed', error, [{**head, 'status': 'failed', 'error': error}]
  return 'missing', 'not started', [{**head, 'status': 'missing'}]


def _runs(base: str) -> list[dict]:
  manifest = os.path.join(base, 'launch.json')
  if not os.path.exists(manifest):
    raise UserError(f'{manifest} does not exist; run python -m launch.run --workdir={base} first')
  try:
    with open(manifest) as f:
      return json.load(f)['runs']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f'{manifest} is unreadable ({type(e).__name__}); rerun python -m '
                    f'launch.run --workdir={base} to write it again')


def statuses(base: str) -> list[tuple[str, str, str]]:
  """`(run name, status, detail)` of every run of the launch in `base`."""
  return [(run['name'], *run_status(run, base)[:2]) for run in _runs(base)]


def collect(base: str) -> list[dict]:
  """All rows of all runs under `base`, best validation accuracy first."""
  rows = [row for run in _runs(base) for row in run_status(run, base)[2]]

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
  with disk_errors(base, 'rerun python -m launch.collect'):
    io_utils.write_atomic(os.path.join(base, 'collected.csv'), buf.getvalue())
    io_utils.write_json(os.path.join(base, 'collected.json'), rows)
  return rows


def report(base: str, *, allow_incomplete: bool = False, out=print) -> int:
  """Writes and prints the table and each run's status; returns the exit code (0 or 1)."""
  rows = collect(base)
  for row in rows:
    out('  '.join(f'{k}={v}' for k, v in row.items()))
  out(f'{len(rows)} row(s) → {os.path.join(base, "collected.csv")}')
  states = statuses(base)
  for name, status, detail in states:
    out(f'{status:<8} {name}' + (f': {detail}' if detail else ''))
  bad = [(name, status) for name, status, _ in states if status != 'done']
  if not bad or allow_incomplete:
    return 0
  counts = ', '.join(f'{sum(s == k for _, s in bad)} {k}' for k in ('failed', 'missing')
                     if any(s == k for _, s in bad))
  out(f'error: {len(bad)} of {len(states)} run(s) did not finish ({counts}: '
      f'{", ".join(n for n, _ in bad)}); rerun them with python -m launch.run, or pass '
      f'--allow_incomplete to accept partial results')
  return 1


def main(argv):
  if len(argv) > 1:
    raise UserError(f'unexpected arguments: {" ".join(argv[1:])}; launch.collect takes only '
                    f'--workdir=BASE (and --allow_incomplete)')
  workdir = flags.FLAGS.workdir
  if not workdir:
    raise UserError('--workdir is required: the base directory given to launch.run')
  printed = []
  code = report(workdir, allow_incomplete=flags.FLAGS.allow_incomplete, out=printed.append)
  for line in printed:
    if line.startswith('error: '):
      cli_utils.fail(line[len('error: '):], code=code)
    print(line)


def cli() -> None:
  """`python -m launch.collect`: the flag is defined here, so importing defines none."""
  flags.DEFINE_string('workdir', None, 'The base directory given to launch.run.')
  flags.DEFINE_bool('allow_incomplete', False, 'Exit 0 even when a run failed or is missing '
                    '(their statuses are still listed).')
  cli_utils.run(main)


if __name__ == '__main__':
  cli()
