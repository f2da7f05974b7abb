"""The baselines the benchmarks race against, written from the standard math.

- `NumpyLinear`: the assignment's style. Vectorized WW-SVM / softmax loss with the
  hand-derived gradient, minibatches sampled with replacement (`np.random.choice`), the data
  preprocessed once to float32 (mean subtracted, bias column appended), `W -= lr·dW`.
- `torch_loop`: a PyTorch eager loop doing the same step with autograd (skipped when torch is
  not installed).
- scikit-learn's `SGDClassifier(loss='hinge', penalty='l2')`, one epoch (`partial_fit`).
"""

import numpy as np


def numpy_features(x_u8: np.ndarray, mean: np.ndarray) -> np.ndarray:
  """(N, D) uint8 → float32 (x − mean) with a bias column: what the assignment keeps in memory."""
  x = x_u8.astype(np.float32) - mean.astype(np.float32)
  return np.hstack([x, np.ones((len(x), 1), np.float32)])


def svm_loss_grad(w, x, y, reg):
  """Vectorized WW SVM (Δ = 1) + reg·ΣW², and its hand-derived gradient."""
  n = x.shape[0]
  scores = x @ w
  correct = scores[np.arange(n), y][:, None]
  margins = np.maximum(0, scores - correct + 1)
  margins[np.arange(n), y] = 0
  loss = margins.sum() / n + reg * np.sum(w * w)
  binary = (margins > 0).astype(x.dtype)
  binary[np.arange(n), y] = -binary.sum(axis=1)
  return loss, x.T @ binary / n + 2 * reg * w


def softmax_loss_grad(w, x, y, reg):
  """Vectorized softmax cross-entropy + reg·ΣW², and its gradient (probabilities − onehot)."""
  n = x.shape[0]
  scores = x @ w
  scores -= scores.max(axis=1, keepdims=True)
  p = np.exp(scores)
  p /= p.sum(axis=1, keepdims=True)
  loss = -np.log(p[np.arange(n), y]).mean() + reg * np.sum(w * w)
  p[np.arange(n), y] -= 1
  return loss, x.T @ p / n + 2 * reg * w


LOSS_GRAD = {'multiclass_svm': svm_loss_grad, 'softmax_cross_entropy': softmax_loss_grad}


def numpy_sgd(x, y, w, *, loss: str, steps: int, batch: int, lr: float, reg: float, seed=0):
  """The assignment's LinearClassifier.train loop."""
  rng = np.random.default_rng(seed)
  fn = LOSS_GRAD[loss]
  for _ in range(steps):
    idx = rng.choice(len(x), batch, replace=True)
    _, grad = fn(w, x[idx], y[idx], reg)
    w -= lr * grad
  return w


def torch_available() -> bool:
  try:
    import torch  # noqa: F401
    return True
  except ImportError:
    return False


def torch_sgd(x_u8, y, mean, w0, *, loss: str, steps: int, batch: int, lr: float, reg: float,
              seed=0):
  """A PyTorch eager loop: uint8 batch gathered, converted and centred each step, autograd."""
  import torch
  gen = torch.Generator().manual_seed(seed)
  x = torch.from_numpy(x_u8)
  yt = torch.from_numpy(y.astype(np.int64))
  mu = torch.from_numpy(mean.astype(np.float32))
  w = torch.from_numpy(w0.copy()).requires_grad_(True)
  n = x.shape[0]
  for _ in range(steps):
    idx = torch.randint(0, n, (batch,), generator=gen)
    xb = torch.cat([x[idx].float() - mu, torch.ones(batch, 1)], dim=1)
    yb = yt[idx]
    scores = xb @ w
    if loss == 'multiclass_svm':
      correct = scores.gather(1, yb[:, None])
      margins = torch.clamp(scores - correct + 1, min=0)
      margins = margins.scatter(1, yb[:, None], 0.0)
      data = margins.sum() / batch
    else:
      data = torch.nn.functional.cross_entropy(scores, yb)
    obj = data + reg * (w * w).sum()
    w.grad = None
    obj.backward()
    with torch.no_grad():
      w -= lr * w.grad
  return w.detach().numpy()
