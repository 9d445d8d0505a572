"""Evaluation metrics accumulated on the host over the WHOLE evaluation set.

The eval loop calls `acc.update(...)` once per batch with numpy arrays that
are already gathered from the devices, then `acc.compute()` once. No metric
is a mean of per-batch values: ranking metrics keep every masked prediction,
CCC merges exact per-batch moments (Chan et al.'s parallel update), so the
result equals the metric computed on all masked rows at once.

Conventions for degenerate input (documented, not raised):
  * accuracy / macro_f1 / MSE / CCC of an empty set: nan.
  * roc_auc and average_precision need positives and negatives. Binary: nan
    when only one class is present. Multiclass (macro one-vs-rest): the mean
    over the classes that have both positives and negatives; nan if none has.
  * CCC: nan when both series are constant and equal (0 / 0).
"""

from __future__ import annotations

import numpy as np


def _flatten_masked(arrays, mask, trailing_dims):
  """Flattens leading dims of each array and keeps rows where `mask` is True."""
  mask = np.asarray(mask, bool).reshape(-1)
  out = []
  for x, nd in zip(arrays, trailing_dims):
    x = np.asarray(x)
    x = x.reshape((-1,) + x.shape[x.ndim - nd:]) if nd else x.reshape(-1)
    if x.shape[0] != mask.shape[0]:
      raise ValueError(f"array with {x.shape[0]} rows for a mask of {mask.shape[0]}")
    out.append(x[mask])
  return out


def softmax(logits: np.ndarray) -> np.ndarray:
  """Numerically stable softmax over the last axis, in float64."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def binary_roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
  """Area under the ROC curve; ties count one half (Mann-Whitney U). [N], [N] bool."""
  scores = np.asarray(scores, np.float64)
  positives = np.asarray(positives, bool)
  n_pos = int(positives.sum())
  n_neg = positives.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  # Average ranks (1-based) over tied scores.
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  group_start = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
  group_id = np.cumsum(group_start) - 1
  starts = np.flatnonzero(group_start)
  ends = np.r_[starts[1:], scores.size]             # exclusive
  mean_rank = (starts + 1 + ends) / 2.0             # mean of ranks starts+1 .. ends
  ranks = np.empty(scores.size)
  ranks[order] = mean_rank[group_id]
  u = ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def binary_average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
  """Sum over distinct thresholds of (recall step) x precision, like sklearn. [N], [N] bool."""
  scores = np.asarray(scores, np.float64)
  positives = np.asarray(positives, bool)
  n_pos = int(positives.sum())
  if n_pos == 0 or n_pos == positives.size:
    return float("nan")
  order = np.argsort(-scores, kind="mergesort")
  s, y = scores[order], positives[order]
  last_of_group = np.r_[s[1:] != s[:-1], True]      # one threshold per distinct score
  tps = np.cumsum(y)[last_of_group]
  predicted = np.flatnonzero(last_of_group) + 1
  precision = tps / predicted
  recall = tps / n_pos
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """Unweighted mean F1 over the classes present in labels or predictions (sklearn's default)."""
  if labels.size == 0:
    return float("nan")
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  tp = np.diag(confusion).astype(np.float64)
  fp = confusion.sum(axis=0) - tp
  fn = confusion.sum(axis=1) - tp
  present = (confusion.sum(axis=0) + confusion.sum(axis=1)) > 0
  denom = 2 * tp + fp + fn
  f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
  return float(f1[present].mean())


class ClassificationMetrics:
  """Accuracy, macro F1, ROC AUC and average precision over the whole set.

  Works for clip labels (logits [B, K], labels [B], mask [B]) and for frame
  labels (logits [B, T, K], labels [B, T], mask [B, T]); leading dims are
  flattened. `prefix` names the outputs, e.g. "step_" for frame-level ones.
  AUC / AP use p(class 1) when K == 2 and macro one-vs-rest otherwise.
  """

  def __init__(self, num_classes: int, prefix: str = ""):
    if num_classes < 2:
      raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    self.num_classes = num_classes
    self.prefix = prefix
    self._probs: list[np.ndarray] = []
    self._labels: list[np.ndarray] = []

  def update(self, logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> None:
    logits, labels = _flatten_masked((logits, labels), mask, (1, 0))
    if logits.shape[-1] != self.num_classes:
      raise ValueError(f"logits have {logits.shape[-1]} classes, expected {self.num_classes}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise ValueError(f"labels outside [0, {self.num_classes}): {np.unique(labels).tolist()}")
    self._probs.append(softmax(logits))
    self._labels.append(labels)

  @property
  def count(self) -> int:
    return sum(l.size for l in self._labels)

  def compute(self) -> dict[str, float]:
    k = self.num_classes
    probs = np.concatenate(self._probs) if self._probs else np.zeros((0, k))
    labels = np.concatenate(self._labels) if self._labels else np.zeros((0,), np.int64)
    predictions = probs.argmax(axis=-1)
    if k == 2:
      auc = binary_roc_auc(probs[:, 1], labels == 1)
      ap = binary_average_precision(probs[:, 1], labels == 1)
    else:
      aucs = [binary_roc_auc(probs[:, c], labels == c) for c in range(k)]
      aps = [binary_average_precision(probs[:, c], labels == c) for c in range(k)]
      auc, ap = (float(np.nanmean(v)) if not np.isnan(v).all() else float("nan")
                 for v in (aucs, aps))
    p = self.prefix
    return {
        f"{p}accuracy": float((predictions == labels).mean()) if labels.size else float("nan"),
        f"{p}macro_f1": macro_f1(predictions, labels, k),
        f"{p}roc_auc": auc,
        f"{p}average_precision": ap,
    }


class _Moments:
  """Exact running count / means / (co)variance sums of two series, per column."""

  def __init__(self, num_columns: int):
    self.n = 0
    self.mean_x = np.zeros(num_columns)
    self.mean_y = np.zeros(num_columns)
    self.m2_x = np.zeros(num_columns)     # sum of squared deviations
    self.m2_y = np.zeros(num_columns)
    self.c_xy = np.zeros(num_columns)     # sum of co-deviations
    self.sse = np.zeros(num_columns)      # sum of squared errors (x - y)^2

  def update(self, x: np.ndarray, y: np.ndarray) -> None:
    """x, y: [N, C] float64."""
    nb = x.shape[0]
    if nb == 0:
      return
    mx, my = x.mean(axis=0), y.mean(axis=0)
    dx, dy = x - mx, y - my
    n = self.n + nb
    delta_x, delta_y = mx - self.mean_x, my - self.mean_y
    w = self.n * nb / n
    self.m2_x += (dx * dx).sum(axis=0) + delta_x * delta_x * w
    self.m2_y += (dy * dy).sum(axis=0) + delta_y * delta_y * w
    self.c_xy += (dx * dy).sum(axis=0) + delta_x * delta_y * w
    self.mean_x += delta_x * nb / n
    self.mean_y += delta_y * nb / n
    self.sse += ((x - y) ** 2).sum(axis=0)
    self.n = n


def concordance_correlation(x: np.ndarray, y: np.ndarray) -> float:
  """CCC of two 1-D series with population (1/N) moments; reference formula."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.size == 0:
    return float("nan")
  cov = np.mean((x - x.mean()) * (y - y.mean()))
  denom = x.var() + y.var() + (x.mean() - y.mean()) ** 2
  return float(2 * cov / denom) if denom > 0 else float("nan")


class RegressionMetrics:
  """CCC and MSE of valence and arousal over every masked step of the set.

  update(pred [..., 2], target [..., 2], mask [...]); column 0 is valence,
  column 1 arousal. Memory is O(1): per-batch moments are merged exactly in
  float64.
  """

  NAMES = ("valence", "arousal")

  def __init__(self):
    self._moments = _Moments(len(self.NAMES))

  def update(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> None:
    pred, target = _flatten_masked((pred, target), mask, (1, 1))
    if pred.shape[-1] != 2 or target.shape[-1] != 2:
      raise ValueError(f"pred and target must end in 2 (valence, arousal): "
                       f"{pred.shape}, {target.shape}")
    self._moments.update(pred.astype(np.float64), target.astype(np.float64))

  @property
  def count(self) -> int:
    return self._moments.n

  def compute(self) -> dict[str, float]:
    mo = self._moments
    out: dict[str, float] = {}
    if mo.n == 0:
      ccc = np.full(2, np.nan)
      mse = np.full(2, np.nan)
    else:
      var_x, var_y, cov = mo.m2_x / mo.n, mo.m2_y / mo.n, mo.c_xy / mo.n
      denom = var_x + var_y + (mo.mean_x - mo.mean_y) ** 2
      ccc = np.divide(2 * cov, denom, out=np.full(2, np.nan), where=denom > 0)
      mse = mo.sse / mo.n
    for i, name in enumerate(self.NAMES):
      out[f"ccc_{name}"] = float(ccc[i])
    out["ccc_mean"] = float(ccc.mean())
    for i, name in enumerate(self.NAMES):
      out[f"mse_{name}"] = float(mse[i])
    return out
