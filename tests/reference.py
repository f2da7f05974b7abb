"""Plain NumPy, per-example, loop-based references for the losses and their subgradients.

Written from the lecture's formulas, independently of hinge_jax: one example at a time, with
explicit Python loops and the strict indicator 1[margin > 0].
"""

import math

import numpy as np


def ww_svm(s, y, margin=1.0, squared=False):
  total = 0.0
  for j in range(len(s)):
    if j == y:
      continue
    m = s[j] - s[y] + margin
    if m > 0:
      total += m * m if squared else m
  return total


def ww_svm_grad(s, y, margin=1.0, squared=False):
  g = np.zeros(len(s))
  for j in range(len(s)):
    if j == y:
      continue
    m = s[j] - s[y] + margin
    if m > 0:
      d = 2 * m if squared else 1.0
      g[j] += d
      g[y] -= d
  return g


def crammer_singer(s, y, margin=1.0, squared=False):
  rival = max(s[j] for j in range(len(s)) if j != y)
  m = rival - s[y] + margin
  m = m if m > 0 else 0.0
  return m * m if squared else m


def crammer_singer_grad(s, y, margin=1.0, squared=False):
  g = np.zeros(len(s))
  others = [j for j in range(len(s)) if j != y]
  rival = others[int(np.argmax([s[j] for j in others]))]  # first maximal competitor
  m = s[rival] - s[y] + margin
  if m > 0:
    d = 2 * m if squared else 1.0
    g[rival] += d
    g[y] -= d
  return g


def one_vs_all(s, y, margin=1.0, squared=False):
  total = 0.0
  for j in range(len(s)):
    t = 1.0 if j == y else -1.0
    m = margin - t * s[j]
    if m > 0:
      total += m * m if squared else m
  return total


def one_vs_all_grad(s, y, margin=1.0, squared=False):
  g = np.zeros(len(s))
  for j in range(len(s)):
    t = 1.0 if j == y else -1.0
    m = margin - t * s[j]
    if m > 0:
      g[j] = -t * (2 * m if squared else 1.0)
  return g


def softmax(s, y, margin=None, squared=None):
  shift = max(s)
  return -(s[y] - shift) + math.log(sum(math.exp(v - shift) for v in s))


def softmax_grad(s, y, margin=None, squared=None):
  e = np.exp(np.asarray(s) - max(s))
  p = e / e.sum()
  p[y] -= 1
  return p
