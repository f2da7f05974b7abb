"""The demo's JSON requests, checked field by field: a bad one is a `RequestError`, one line.

Every number must be finite (JSON's NaN and Infinity extensions are refused while parsing),
every shape the page's: W `(3, 2)`, b `(3,)`, points `(N, 2)` with N ≤ MAX_POINTS and one
label in {0, 1, 2} each.
"""

import dataclasses
import json
import math

import numpy as np

NUM_CLASSES = 3
NUM_FEATURES = 2
MAX_POINTS = 1024
MAX_BODY_BYTES = 256 * 1024  # 1024 points and everything else fit in a tenth of it
LOSSES = ('multiclass_svm', 'one_vs_all', 'crammer_singer', 'softmax_cross_entropy')
MAX_STEPS = 1_000_000


class RequestError(ValueError):
  """A request the API refuses (HTTP 400); the message is one line naming the fix."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One request's classifier, data and hyperparameters (float32 arrays, as trained)."""
  w: np.ndarray  # (C, D)
  b: np.ndarray  # (C,)
  x: np.ndarray  # (N, D)
  y: np.ndarray  # (N,) int32
  loss: str
  squared: bool
  margin: float
  reg: float
  lr: float

  @property
  def num_points(self) -> int:
    return int(self.y.shape[0])

  def classes_present(self) -> int:
    return int(np.unique(self.y).size)


def _refuse_constant(name: str):
  raise RequestError(f'{name} is not a finite number; send finite numbers only')


def parse_json(body: bytes) -> dict:
  """The request's JSON object (NaN, Infinity and anything but an object refused)."""
  try:
    data = json.loads(body.decode('utf-8'), parse_constant=_refuse_constant)
  except UnicodeDecodeError:
    raise RequestError('the request body is not UTF-8 text; send a JSON object') from None
  except json.JSONDecodeError as e:
    raise RequestError(f'malformed JSON ({e.msg} at line {e.lineno} column {e.colno}); '
                       f'send a JSON object') from None
  if not isinstance(data, dict):
    raise RequestError(f'the request is a JSON {type(data).__name__}, not an object; send '
                       f'{{"W": ..., "b": ..., "points": ..., "labels": ...}}')
  return data


def _finite(value, name: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise RequestError(f'{name}={json.dumps(value)[:40]} is not a number; send a finite number')
  try:
    value = float(value)  # an integer past float64's range overflows here
  except OverflowError:
    value = math.inf
  if not math.isfinite(value):
    raise RequestError(f'{name} is not a finite number; send finite numbers only')
  return value


def number(data: dict, name: str, *, low=None, strict=False) -> float:
  """A finite number field, optionally bounded below (`strict`: > low, else ≥ low)."""
  if name not in data:
    raise RequestError(f'the request has no field {name!r}; send it as a number')
  value = _finite(data[name], name)
  if low is not None and (value <= low if strict else value < low):
    raise RequestError(f'{name}={value:g} must be {">" if strict else ">="} {low:g}')
  return value


def matrix(data: dict, name: str, shape: tuple) -> np.ndarray:
  """A nested list of finite numbers of exactly `shape`, as float32."""
  if name not in data:
    raise RequestError(f'the request has no field {name!r}; send a list of shape {shape}')
  value = data[name]

  def walk(node, depth, where):
    if depth == len(shape):
      return _finite(node, f'{name}{where}')
    if not isinstance(node, list) or (shape[depth] is not None and len(node) != shape[depth]):
      got = f'a list of {len(node)}' if isinstance(node, list) else type(node).__name__
      want = '(N, 2)' if None in shape else str(shape)
      raise RequestError(f'{name}{where} is {got}; {name} must have shape {want}')
    return [walk(v, depth + 1, f'{where}[{i}]') for i, v in enumerate(node)]
  rows = walk(value, 0, '')
  with np.errstate(over='ignore'):
    out = np.asarray(rows, np.float32).reshape([len(value)] + [s for s in shape[1:]])
  if not np.all(np.isfinite(out)):
    raise RequestError(f'{name} holds a value beyond float32\'s range (±3.4e38); send smaller '
                       f'numbers')
  return out


def labels(data: dict, num_points: int) -> np.ndarray:
  """`labels`: one class id in 0..C-1 per point."""
  value = data.get('labels')
  if not isinstance(value, list) or len(value) != num_points:
    got = f'{len(value)} labels' if isinstance(value, list) else 'no list of labels'
    raise RequestError(f'the request has {got} for {num_points} points; send one label '
                       f'(0, 1 or 2) per point')
  for i, v in enumerate(value):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < NUM_CLASSES:
      raise RequestError(f'labels[{i}]={json.dumps(v)[:40]} is not a class; labels must be '
                         f'0, 1 or 2')
  return np.asarray(value, np.int32)


def problem(data: dict, *, step: bool = True) -> Problem:
  """The request's classifier, points and hyperparameters, every field checked (`lr` only
  for a step: an evaluation takes none)."""
  loss = data.get('loss')
  if loss not in LOSSES:
    raise RequestError(f'loss={json.dumps(loss)[:40]} is not known; choose one of: '
                       f'{", ".join(LOSSES)}')
  squared = data.get('squared', False)
  if not isinstance(squared, bool):
    raise RequestError(f'squared={json.dumps(squared)[:40]} must be true or false')
  points = data.get('points')
  if isinstance(points, list) and len(points) > MAX_POINTS:
    raise RequestError(f'{len(points)} points are too many; the demo takes at most '
                       f'{MAX_POINTS}: remove some')
  x = matrix(data, 'points', (None, NUM_FEATURES))
  return Problem(
      w=matrix(data, 'W', (NUM_CLASSES, NUM_FEATURES)), b=matrix(data, 'b', (NUM_CLASSES,)),
      x=x, y=labels(data, len(x)), loss=loss, squared=squared and loss != LOSSES[-1],
      margin=number(data, 'margin', low=0, strict=True), reg=number(data, 'reg', low=0),
      lr=number(data, 'lr', low=0, strict=True) if step else 0.0)


def trainable(p: Problem) -> None:
  """A step needs points of at least two classes."""
  if p.num_points == 0:
    raise RequestError('there are no points; add points of at least 2 classes to train')
  if p.classes_present() < 2:
    raise RequestError(f'all {p.num_points} points are of class {int(p.y[0])}; add points of '
                       f'another class to train')


def steps(data: dict) -> int:
  """`steps`: an integer count of gradient steps, 0 ≤ steps ≤ MAX_STEPS."""
  value = data.get('steps', 0)
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STEPS:
    raise RequestError(f'steps={json.dumps(value)[:40]} must be an integer in 0..{MAX_STEPS}')
  return value
