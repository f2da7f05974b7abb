"""Time to scikit-learn's optimum: hinge_jax's L-BFGS against LogisticRegression(lbfgs).

  python benchmarks/solvers.py [--cases=digits,hog,embeddings] [--repeats=5]
  python benchmarks/solvers.py --cases=embeddings --embed_n=100000 --sklearn_subset=4
  python benchmarks/solvers.py --cases=embeddings --embed_lambdas=256 --sklearn_subset=4 \
      --nosklearn_path  # case 3 with 256 λ (on a GPU)

Both solvers minimise the same objective, mean softmax cross-entropy + λ·ΣW² with an
unpenalized intercept (scikit-learn's C = 1/(2·λ·N), `probe.sklearn_c`), on the same
preprocessed float32 features. The reference optimum f*(λ) is the lowest float64 objective
any solver reached (scikit-learn with tol=1e-10; hinge_jax for --max_steps). Time to target:
- scikit-learn: from the call to `fit` to its first objective evaluation within 1e-6·f* of f*
  (scipy's L-BFGS-B evaluations are timestamped by wrapping `optimize.minimize`): a lower
  bound on any stopping rule's time. Cold: one `LogisticRegression` per λ. Warm:
  `LogisticRegressionCV` on a predefined train/val split (its warm-started path over C,
  refit=False), the per-λ times to target summed.
- hinge_jax: every λ one member of one vmapped program (`Trainer.run_chunk`, the product's
  path), W0 = 0; S = the first step at which every member is within 1e-6 (a calibration run
  of 1-step chunks). Digits and HOG: a fresh state trained S steps in one chunk, median of
  --repeats (compile excluded); embeddings: the sum of the calibration's 1-step chunk times.
  Embeddings also: each member leaving the program at its own step to target (`fit`'s
  compaction, driven by the oracle stop the scikit-learn rows get), and `Trainer.fit` stopping
  itself at `stop.tol` (--fit_tol, checked every step; its largest final gap printed).
FLOP floor: the objective evaluations the optimizer needed × 4·N·D·C (the forward and
backward products) ÷ this machine's measured matmul rate (float32; float64 for a float64
scikit-learn fit). Ratios come from one run on a shared machine: timings are noisy.
"""

import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

_CASES = flags.DEFINE_list('cases', ['digits', 'hog', 'embeddings'], 'Cases to run.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats (digits, hog).')
_MAX_STEPS = flags.DEFINE_integer('max_steps', 400, 'hinge_jax calibration cap (steps).')
_TARGET = flags.DEFINE_float('target', 1e-6, 'Relative gap to the reference optimum.')
_EMBED_N = flags.DEFINE_integer('embed_n', 100_000, 'Embeddings: training examples.')
_EMBED_D = flags.DEFINE_integer('embed_d', 512, 'Embeddings: dimension.')
_EMBED_C = flags.DEFINE_integer('embed_c', 100, 'Embeddings: classes.')
_EMBED_K = flags.DEFINE_integer('embed_lambdas', 16, 'Embeddings: λ values.')
_SUBSET = flags.DEFINE_integer('sklearn_subset', 0, 'Embeddings: time this many of the cold '
                               'scikit-learn fits (evenly spaced) and extrapolate (0: all).')
_PATH = flags.DEFINE_bool('sklearn_path', True, 'Embeddings: also LogisticRegressionCV\'s warm '
                          'path (hours for 256 λ).')
_THREADS = flags.DEFINE_list('sklearn_threads', ['1', '2'], 'BLAS threads for scikit-learn '
                              '(each a row; on a busy machine one thread can be far faster).')
_FIT_TOL = flags.DEFINE_float('fit_tol', 1e-7, 'Embeddings: stop.tol of the `Trainer.fit` row '
                               '(checked every step).')
flags.register_validator('fit_tol', lambda v: v > 0, message='--fit_tol must be > 0')
_OUT = flags.DEFINE_string('out', 'benchmarks/results/solvers.json', 'JSON output.')

import numpy as np  # noqa: E402
import threadpoolctl  # noqa: E402

STALL = 10  # calibration ends when no member's objective fell by 1e-9 over this many steps


class Trace:
  """Timestamps every objective evaluation of scikit-learn's L-BFGS-B (one list per
  `optimize.minimize` call, i.e. per C along a path, of `(seconds, objective)`).

  `stop_at[i]`: once call i's objective is at or below it, the evaluation reports a zero
  gradient, so L-BFGS-B stops there at once (an oracle stopping rule: the fit ends the moment
  it reaches the target, and a path warm-starts the next C from that point).
  """

  def __init__(self, stop_at=None):
    import scipy.optimize
    from sklearn.linear_model import _logistic
    self._scipy, self._module, self.calls, self.stop_at = scipy.optimize, _logistic, [], stop_at

  def __getattr__(self, name):
    return getattr(self._scipy, name)

  def minimize(self, fun, x0, *args, **kwargs):
    record = []
    self.calls.append({'start': time.perf_counter(), 'evals': record})
    stop = None if self.stop_at is None else self.stop_at[len(self.calls) - 1]

    def timed(w, *a):
      value, grad = fun(w, *a)
      record.append((time.perf_counter(), float(value)))
      if stop is not None and value <= stop:
        grad = np.zeros_like(grad)
      return value, grad
    return self._scipy.minimize(timed, x0, *args, **kwargs)

  def __enter__(self):
    self._module.optimize = self
    return self

  def __exit__(self, *exc):
    self._module.optimize = self._scipy


def objective64(w, b, x, y, lam, rows=16384) -> float:
  """Mean softmax cross-entropy + λ·ΣW², in float64 on the host, `rows` examples at a time."""
  w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
  total = 0.0
  for i in range(0, len(y), rows):
    s = np.asarray(x[i:i + rows], np.float64) @ w.T + b
    top = s.max(axis=1, keepdims=True)
    lse = np.log(np.exp(s - top).sum(axis=1)) + top[:, 0]
    total += float(np.sum(lse - s[np.arange(len(s)), y[i:i + rows]]))
  return total / len(y) + lam * float(np.sum(w * w))


def matmul_rate(dtype, repeats=5, xla=False) -> float:
  """FLOP/s of a 2048² matmul in `dtype`, best of `repeats`: NumPy's BLAS, or with `xla` the
  engine hinge_jax's products run on."""
  a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(dtype)
  multiply = lambda: a @ a
  if xla:
    import jax
    product, a = jax.jit(lambda a: a @ a), jax.numpy.asarray(a)
    multiply = lambda: product(a).block_until_ready()
    multiply()  # compile
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    multiply()
    best = min(best, time.perf_counter() - t0)
  return 2 * 2048**3 / best


def first_within(evals, start, ref, target):
  """(seconds from `start`, evaluations) until an evaluation within `target` of `ref`."""
  for i, (t, v) in enumerate(evals):
    if v <= ref * (1 + target):
      return t - start, i + 1
  return None, len(evals)


def sklearn_cold(x, y, lams, dtype, indices, stop_at=None, tol=1e-10):
  """One LogisticRegression(lbfgs) per λ in `indices` (stopped at `stop_at[k]` if given):
  coefs, traces, and the seconds from the call to `fit` to its return."""
  from sklearn.linear_model import LogisticRegression
  xs, out = x.astype(dtype), {}
  for k in indices:
    model = LogisticRegression(C=1 / (2 * lams[k] * len(y)), tol=tol, max_iter=10_000)
    with Trace(None if stop_at is None else [stop_at[k]]) as trace:
      t0 = time.perf_counter()
      model.fit(xs, y)
      wall = time.perf_counter() - t0
    out[k] = {'W': model.coef_, 'b': model.intercept_, 'start': t0, 'wall': wall,
              'evals': trace.calls[-1]['evals'], 'n_iter': int(model.n_iter_[0])}
  return out


def sklearn_path(x, y, x_val, y_val, lams, stop_at):
  """LogisticRegressionCV over the λ grid on the train/val split: its warm-started path,
  each C stopped at `stop_at[k]`; returns per-λ fits, wall seconds, the λ it chose, model."""
  from sklearn.linear_model import LogisticRegressionCV
  from sklearn.model_selection import PredefinedSplit
  order = np.argsort(lams)[::-1]  # strong regularization (small C) first, as its path runs
  cs = [1 / (2 * lams[k] * len(y)) for k in order]
  fold = np.r_[np.full(len(y), -1), np.zeros(len(y_val), int)]
  model = LogisticRegressionCV(Cs=cs, cv=PredefinedSplit(fold), refit=False, tol=1e-10,
                               max_iter=10_000)
  with Trace([stop_at[k] for k in order]) as trace:
    t0 = time.perf_counter()
    model.fit(np.r_[x, x_val], np.r_[y, y_val])
    wall = time.perf_counter() - t0
  classes = sorted(model.coefs_paths_)  # class → (folds, len(cs), D + 1)
  paths = np.stack([model.coefs_paths_[k][0] for k in classes], axis=1)  # (len(cs), C, D + 1)
  out = {}
  for j, k in enumerate(order):
    out[int(k)] = {'W': paths[j][:, :-1], 'b': paths[j][:, -1],
                   'start': trace.calls[j]['start'], 'evals': trace.calls[j]['evals']}
  chosen_c = float(np.ravel(model.C_)[0])
  return out, wall, int(order[int(np.argmin([abs(c - chosen_c) for c in cs]))]), model


def hinge_jax_trainer(dataset, lams, steps):
  from configs import default
  from hinge_jax import sweep
  from hinge_jax.train import Trainer
  c = default.get_config()
  c.loss.name, c.reg.name, c.reg.regularize_bias = 'softmax_cross_entropy', 'l2', False
  c.optimizer.name, c.batch_size, c.init_scale = 'lbfgs', 0, 0.0
  c.num_steps = c.eval_every_steps = steps
  members = [sweep.member_config(c, {'reg.strength': float(lam)}) for lam in lams]
  return Trainer.create(c, dataset, members)


def hinge_jax_calibrate(trainer, x, y, lams, host_objective, max_steps):
  """1-step chunks from W0 = 0: per step its seconds, each member's objective (float64 on
  the host, or the device's float32 loss) and line-search evaluations; the final params."""
  import jax
  import optax
  state = trainer.init()
  jax.block_until_ready(state)
  trainer.run_chunk(trainer.init(), 0, 1)  # compile
  seconds, values, evals = [], [], []
  for step in range(max_steps):
    t0 = time.perf_counter()
    state, losses = trainer.run_chunk(state, step, 1)
    jax.block_until_ready(state)
    seconds.append(time.perf_counter() - t0)
    evals.append(np.asarray(optax.tree.get(state.opt_state, 'num_linesearch_steps')))
    if host_objective:
      w, b = np.asarray(state.params['W']), np.asarray(state.params['b'])
      values.append([objective64(w[k], b[k], x, y, lam) for k, lam in enumerate(lams)])
    else:
      values.append(np.asarray(trainer.evaluate(state.params, 'train')['loss'], np.float64))
    if step % 10 == 9:
      print(f'    step {step + 1}: {seconds[-1]:.2f} s, line-search evaluations '
            f'{evals[-1].min()}–{evals[-1].max()}', flush=True)
    if step >= STALL and np.all(values[-1 - STALL] - np.asarray(values[-1]) <= 1e-9 * np.abs(
        values[-1 - STALL])):  # no member still decreasing: stop calibrating
      break
  return np.asarray(seconds), np.asarray(values), np.asarray(evals), state


def executed_evaluations(trials, k: int) -> int:
  """Member-evaluations a lock-step run executes, from its `(steps, K)` trials: a step's first
  trial, and a retry while more than `lbfgs.retry_batch(K)` members are left, are over all K
  members; a retry of fewer is over that many (`lbfgs.members_step`); + K initial ones."""
  from hinge_jax import lbfgs
  few, total = lbfgs.retry_batch(k), k
  for row in np.asarray(trials):
    for t in range(1, int(row.max()) + 1):
      left = int((row >= t).sum())
      total += k if t == 1 or left > few else few
  return total


def hinge_jax_leaving(trainer, needed):
  """From W0 = 0 again, each member leaving the program at its step to target (`needed`, from
  the lock-step calibration): `fit`'s compaction (`compaction.Part`) driven by an oracle stop.
  Returns (seconds without compiles, the smaller programs' compile seconds, final params)."""
  import jax
  from hinge_jax import compaction
  state, part, total = trainer.init(), None, 0.0
  compile_s = trainer.compile_time_s
  for step in range(max(needed)):
    frozen = np.asarray(needed) <= step
    shrunk = compaction.shrunk(trainer, frozen, len(needed) if part is None
                               else len(part.members))
    if shrunk is not None:
      part = compaction.Part.create(trainer, shrunk, {})
    t0 = time.perf_counter()
    if part is None:
      state, _ = trainer.run_chunk(state, step, 1)
    else:
      state, _ = part.run(trainer, state, step, 1)
    jax.block_until_ready(state)
    total += time.perf_counter() - t0
  compile_s = trainer.compile_time_s - compile_s
  return total - compile_s, compile_s, state.params


def hinge_jax_fit(trainer, tol):
  """From W0 = 0 again, `Trainer.fit` itself: `stop.tol` checked every step, converged members
  frozen and left behind by its compaction. Returns (seconds without compiles, compile
  seconds, the step each member stopped at, final params)."""
  import jax
  from hinge_jax.convergence import StopRule
  fit = dataclasses.replace(trainer, stop=StopRule(tol=tol, check_every=1), compile_time_s=0.0)
  state = fit.init()
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  state = fit.fit(state)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - t0
  return (seconds - fit.compile_time_s, fit.compile_time_s,
          fit.convergence_record.steps.tolist(), state.params)


def timed_run(trainer, steps, repeats):
  """Seconds of a fresh state trained `steps` steps in one chunk (compiled first)."""
  import jax
  trainer.run_chunk(trainer.init(), 0, steps)
  times = []
  for _ in range(repeats):
    state = trainer.init()
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    jax.block_until_ready(trainer.run_chunk(state, 0, steps))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), times


def run_case(name, dataset, lams, *, repeats, host_objective, subset=0, path=True):
  """Both solvers on one case; returns its record (times, gaps, steps, floors, accuracy)."""
  target = _TARGET.value
  scale = np.float32(dataset.scale)
  prep = lambda s: ((dataset.x[s].astype(np.float32) - dataset.mean) * scale).astype(np.float32)
  x, y = prep('train'), dataset.y['train']
  n, d, c = x.shape[0], x.shape[1], dataset.num_classes
  flops_eval = 4 * n * d * c
  rec = {'case': name, 'N': n, 'D': d, 'C': c, 'lambdas': list(map(float, lams))}
  print(f'\n[{name}] N={n} D={d} C={c}, {len(lams)} λ', flush=True)

  trainer = hinge_jax_trainer(dataset, lams, _MAX_STEPS.value)
  secs, vals, evals, state = hinge_jax_calibrate(trainer, x, y, lams, host_objective,
                                                 _MAX_STEPS.value)
  w_hj, b_hj = np.asarray(state.params['W']), np.asarray(state.params['b'])
  hj_final = [objective64(w_hj[k], b_hj[k], x, y, lam) for k, lam in enumerate(lams)]
  print(f'  hinge_jax calibrated: {len(secs)} steps, {secs.sum():.1f} s', flush=True)

  k_all = list(range(len(lams)))
  step = max(len(lams) // subset, 1) if subset else 1
  idx = k_all[::step][:subset] if subset else k_all
  sklearn_cold(x[:200], y[:200], lams, np.float64, [0])  # warm-up: imports, thread pools
  with threadpoolctl.threadpool_limits(1):  # the reference: float64, run to tol=1e-10
    tight = sklearn_cold(x, y, lams, np.float64, idx)
  ref = list(hj_final)
  for k, f in tight.items():
    f['objective'] = objective64(f['W'], f['b'], x, y, lams[k])
    ref[k] = min(ref[k], f['objective'])
  ref = np.asarray(ref)
  rec['reference'] = ref.tolist()
  rec['reference_sklearn_tight'] = {int(k): f['objective'] for k, f in tight.items()}
  rec['hinge_jax_final_gap'] = ((np.asarray(hj_final) - ref) / ref).tolist()
  stop_at = ref * (1 + target)
  print(f'  references: {len(tight)} tight scikit-learn fits, '
        f'{sum(f["wall"] for f in tight.values()):.1f} s', flush=True)

  cold = {}  # variant → one {λ index: fit} per repeat, each fit stopped at the target
  variants = [(dt, th) for dt in ((np.float32, np.float64) if len(lams) == 1 else (np.float32,))
              for th in map(int, _THREADS.value)]
  for dtype, threads in variants:
    name_ = f'{np.dtype(dtype).name}, {threads} BLAS thread{"s" * (threads > 1)}'
    with threadpoolctl.threadpool_limits(threads):
      cold[name_] = [sklearn_cold(x, y, lams, dtype, idx, stop_at)
                     for _ in range(max(repeats, 1))]
    print(f'  sklearn cold {name_}: {len(idx)} fits × {len(cold[name_])}, '
          f'{sum(f["wall"] for run in cold[name_] for f in run.values()):.1f} s', flush=True)
  warm = None
  if path:
    xv = prep('val')
    with threadpoolctl.threadpool_limits(int(_THREADS.value[0])):
      warm, warm_wall, warm_choice, lrcv = sklearn_path(x, y, xv, dataset.y['val'], lams,
                                                        stop_at)
    print(f'  LogisticRegressionCV path: {warm_wall:.1f} s', flush=True)

  # hinge_jax: first step with every member within target
  within = np.all((vals - ref) / ref <= target, axis=1)
  steps = int(np.argmax(within)) + 1 if within.any() else None
  rec['hinge_jax_steps'] = steps
  needed = [int(np.argmax((vals[:, k] - ref[k]) / ref[k] <= target)) + 1
            if np.any((vals[:, k] - ref[k]) / ref[k] <= target) else None for k in k_all]
  rec['hinge_jax_steps_per_member'] = needed
  if steps is not None:
    member_evals = [1 + int(evals[:s, k].sum()) for k, s in enumerate(needed)]
    rec['hinge_jax_evals'] = member_evals
    rec['hinge_jax_flops'] = float(sum(member_evals) * flops_eval)
    rec['hinge_jax_trials'] = evals[:steps].tolist()
    rec['hinge_jax_executed_flops'] = float(
        executed_evaluations(evals[:steps], len(lams)) * flops_eval)
    if repeats:
      rec['hinge_jax_s'], rec['hinge_jax_times'] = timed_run(trainer, steps, repeats)
    else:
      rec['hinge_jax_s'] = float(secs[:steps].sum())
    if len(lams) > 1 and all(s is not None for s in needed):
      s, compile_s, params = hinge_jax_leaving(trainer, needed)
      w, b = np.asarray(params['W']), np.asarray(params['b'])
      gaps = [(objective64(w[k], b[k], x, y, lam) - ref[k]) / ref[k] for k, lam in enumerate(lams)]
      rec['hinge_jax_leaving'] = {'s': s, 'compile_s': compile_s, 'max_gap': max(gaps),
                                  'member_steps': int(sum(needed))}
      print(f'  hinge_jax, members leaving at the target: {s:.1f} s (+ {compile_s:.1f} s '
            f'compiling smaller programs), largest gap {max(gaps):.1e}', flush=True)
      s, compile_s, fit_steps, params = hinge_jax_fit(trainer, _FIT_TOL.value)
      w, b = np.asarray(params['W']), np.asarray(params['b'])
      gaps = [(objective64(w[k], b[k], x, y, lam) - ref[k]) / ref[k] for k, lam in enumerate(lams)]
      rec['hinge_jax_fit'] = {'s': s, 'compile_s': compile_s, 'tol': _FIT_TOL.value,
                              'max_gap': max(gaps), 'member_steps': fit_steps}
      print(f'  hinge_jax, `fit` to stop.tol={_FIT_TOL.value:g}: {s:.1f} s (+ {compile_s:.1f} s '
            f'compiling), steps {fit_steps}, largest gap {max(gaps):.1e}', flush=True)
  print(f'  hinge_jax: {steps} steps to {target:g}, '
        f'{rec.get("hinge_jax_s", float("nan")):.3f} s', flush=True)

  def to_target(fits):
    total_s, total_evals, missing = 0.0, 0, 0
    for k, f in fits.items():
      s, e = first_within(f['evals'], f['start'], ref[k], target)
      f['to_target_s'], f['to_target_evals'] = s, e
      missing += s is None
      total_s += s or 0.0
      total_evals += e
    return total_s, total_evals, missing
  rec['sklearn_cold'] = {}
  for dtype, runs in cold.items():
    totals = [to_target(fits) for fits in runs]
    gap = max((objective64(f['W'], f['b'], x, y, lams[k]) - ref[k]) / ref[k]
              for k, f in runs[0].items())
    s = statistics.median(t[0] for t in totals)
    e, missing = totals[0][1], max(t[2] for t in totals)
    scale_k = len(lams) / len(runs[0])
    rec['sklearn_cold'][dtype] = {'s': None if missing else s * scale_k,
                                  'measured_fits': sorted(runs[0]),
                                  'measured_s': s, 'times': [t[0] for t in totals],
                                  'evals': e * scale_k, 'missing': missing,
                                  'extrapolated': scale_k != 1, 'final_gap_max': gap,
                                  'n_iter': [f['n_iter'] for f in runs[0].values()]}
  if warm:
    s, e, missing = to_target(warm)
    rec['sklearn_path'] = {'s': warm_wall, 'to_target_sum_s': s, 'evals': e,
                           'missing': missing, 'chosen': warm_choice,
                           'gaps': [(objective64(f['W'], f['b'], x, y, lams[k]) - ref[k])
                                    / ref[k] for k, f in sorted(warm.items())]}
    xt, yt = prep('test'), dataset.y['test']
    val_hj = [float(np.mean(np.argmax(xv @ w_hj[k].T + b_hj[k], 1) == dataset.y['val']))
              for k in k_all]
    best = max(k_all, key=lambda k: (val_hj[k], -hj_final[k]))  # the sweep's rule
    rec['hinge_jax_chosen'] = best
    rec['hinge_jax_val_accuracy'] = val_hj
    rec['hinge_jax_test_accuracy'] = float(np.mean(
        np.argmax(xt @ w_hj[best].T + b_hj[best], 1) == yt))
    rec['sklearn_test_accuracy'] = float(np.mean(lrcv.predict(xt) == yt))
  rec['flops_per_eval'] = flops_eval
  return rec


def embeddings_dataset(n, d, c, seed=0):
  """Gaussian class clusters as (N, D) float32 embeddings; val and test of N/10 each."""
  from hinge_jax.datasets.base import finalize
  rng = np.random.default_rng(seed)
  centres = 0.1 * rng.standard_normal((c, d)).astype(np.float32)  # ≈ 3σ apart in 512-D
  x, y = {}, {}
  for split, size in (('train', n), ('val', n // 10), ('test', n // 10)):
    y[split] = rng.integers(0, c, size).astype(np.int32)
    x[split] = centres[y[split]] + rng.standard_normal((size, d), dtype=np.float32)
  return finalize('embeddings', x, y, num_classes=c, center=True, scale=1.0, bias_trick=False)


def main(argv):
  del argv
  from benchmarks import common
  from configs import default
  from hinge_jax import config_lib, datasets
  rate32, rate64 = matmul_rate(np.float32), matmul_rate(np.float64)
  rate_xla = matmul_rate(np.float32, xla=True)
  print(f'matmul: float32 {rate32 / 1e9:.1f} GFLOP/s, float64 {rate64 / 1e9:.1f} GFLOP/s '
        f'(NumPy\'s BLAS); float32 {rate_xla / 1e9:.1f} GFLOP/s (XLA)')
  records = []
  for case in _CASES.value:
    if case == 'digits':
      ds = datasets.load(default.get_config().dataset)
      records.append(run_case('digits', ds, [1e-3], repeats=_REPEATS.value,
                              host_objective=True, path=False))
    elif case == 'hog':
      cfg = config_lib.with_fields(default.get_config(), {
          'dataset.name': 'synthetic_images', 'dataset.num_examples': 51_000,
          'dataset.val_fraction': 1000 / 51_000, 'dataset.test_fraction': 1000 / 51_000,
          'dataset.features': ('hog', 'hue_hist'), 'dataset.scale': 1.0})
      ds = datasets.load(cfg.dataset)
      records.append(run_case('hog', ds, [1e-4], repeats=_REPEATS.value,
                              host_objective=True, path=False))
    elif case == 'embeddings':
      ds = embeddings_dataset(_EMBED_N.value, _EMBED_D.value, _EMBED_C.value)
      lams = list(np.geomspace(1e-5, 1e-1, _EMBED_K.value))
      records.append(run_case('embeddings', ds, lams, repeats=0, host_objective=False,
                              subset=_SUBSET.value, path=_PATH.value))
  rows = []
  for r in records:
    hj_floor = r.get('hinge_jax_flops', float('nan')) / rate32
    for label, s, evals, rate in (
        [('hinge_jax (one program)', r.get('hinge_jax_s'), None, rate32)]
        + ([('hinge_jax, members leave at the target', r['hinge_jax_leaving']['s'], None,
             rate32)] if 'hinge_jax_leaving' in r else [])
        + ([(f'hinge_jax `fit` to stop.tol={r["hinge_jax_fit"]["tol"]:g}',
             r['hinge_jax_fit']['s'], None, rate32)] if 'hinge_jax_fit' in r else [])
        + [(f'sklearn cold {dt}' + (' (extrap.)' if v['extrapolated'] else ''), v['s'],
            v['evals'], rate32 if dt.startswith('float32') else rate64)
           for dt, v in r['sklearn_cold'].items()]
        + ([('LogisticRegressionCV path', r['sklearn_path']['s'], r['sklearn_path']['evals'],
             rate32)] if 'sklearn_path' in r else [])):
      floor = hj_floor if evals is None else evals * r['flops_per_eval'] / rate
      leaving = r.get('hinge_jax_leaving', {}).get('s')
      fit_s = r.get('hinge_jax_fit', {}).get('s')
      ratio = lambda t: f'{t / s:.2f}' if t and s and evals is not None else ''
      if evals is None and 'hinge_jax_executed_flops' in r and label.endswith('program)'):
        label += f' [executed work: {r["hinge_jax_executed_flops"] / rate32:.1f} s]'
      rows.append([r['case'], len(r['lambdas']), label, f'{s:.3f}' if s else 'not reached',
                   f'{floor:.3f}', ratio(r.get('hinge_jax_s')), ratio(leaving), ratio(fit_s)])
  common.print_table(f'time to within {_TARGET.value:g} of the optimum (s); floor = FLOPs ÷ '
                     f'matmul rate; ratios: hinge_jax (lock step, members leaving, or `fit` '
                     f'stopping itself) ÷ row',
                     ['case', 'λs', 'solver', 'seconds', 'floor s', 'ratio', 'leaving', 'fit'],
                     rows)
  for r in records:
    if 'hinge_jax_flops' in r:
      print(f'{r["case"]}: the evaluations hinge_jax needs, at XLA\'s matmul rate: '
            f'{r["hinge_jax_flops"] / rate_xla:.1f} s')
    if 'hinge_jax_chosen' in r:
      print(f'{r["case"]}: λ chosen hinge_jax {r["lambdas"][r["hinge_jax_chosen"]]:.3g} '
            f'(test {r["hinge_jax_test_accuracy"]:.4f}), LogisticRegressionCV '
            f'{r["lambdas"][r["sklearn_path"]["chosen"]]:.3g} (test '
            f'{r["sklearn_test_accuracy"]:.4f})')
  common.write_json(_OUT.value, {'benchmark': 'solvers', 'target': _TARGET.value,
                                 'matmul_gflops': {'float32': rate32 / 1e9,
                                                   'float64': rate64 / 1e9,
                                                   'float32_xla': rate_xla / 1e9},
                                 'records': records, 'machine': common.machine()})


if __name__ == '__main__':
  app.run(main)
