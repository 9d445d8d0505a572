"""Which frames of a window feed each stream; all by frame time, so VFR is fine.

Every function takes the window's increasing frame times [N] (seconds) and
returns indices into them.
"""

from __future__ import annotations

import numpy as np


def nearest_frames(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """Index of the frame nearest to each target time; same shape as `targets`."""
  targets = np.asarray(targets, np.float64)
  if len(times) == 1:
    return np.zeros(targets.shape, np.int64)
  right = np.clip(np.searchsorted(times, targets), 1, len(times) - 1)
  left = right - 1
  return np.where(targets - times[left] <= times[right] - targets, left, right)


def video_segments(times: np.ndarray, start: float, end: float, fps: float, length: int,
                   stride: int) -> tuple[np.ndarray, np.ndarray]:
  """Segments of `length` frames resampled at `fps`, starting every `stride` frames.

  Returns (frame indices [S, length], centre times [S]); S >= 1. A window
  shorter than one segment gives one segment that repeats its last frames.
  """
  num_frames = max(1, int(np.floor((end - start) * fps + 1e-6)))
  num_segments = max(1, (num_frames - length) // stride + 1)
  positions = np.arange(num_segments)[:, None] * stride + np.arange(length)[None, :]
  indices = nearest_frames(times, start + positions / fps)
  centres = (times[indices[:, 0]] + times[indices[:, -1]]) / 2
  return indices, centres


def frames_at_rate(times: np.ndarray, start: float, end: float, fps: float) -> np.ndarray:
  """Distinct frames nearest to start, start + 1/fps, ... < end; at least one."""
  targets = start + np.arange(max(1, int(np.ceil((end - start) * fps - 1e-6)))) / fps
  return np.unique(nearest_frames(times, targets))


def change_scores(frames: np.ndarray, grid: int = 32) -> np.ndarray:
  """Mean absolute grey-level change to the previous frame, in [0, 1]; [N], first = inf.

  Frames [N, S, S, 3] uint8 are block-averaged to grid x grid first, so noise
  and small motion score low and cuts score high.
  """
  n, size = frames.shape[:2]
  block = max(1, size // grid)
  grey = frames[:, :block * grid, :block * grid].astype(np.float32).mean(-1)
  grey = grey.reshape(n, grid, block, grid, block).mean((2, 4)) / 255.0
  diffs = np.abs(np.diff(grey, axis=0)).mean((1, 2))
  return np.concatenate([[np.inf], diffs])


def select_keyframes(times: np.ndarray, scores: np.ndarray, max_count: int, threshold: float,
                     min_gap: float, max_gap: float) -> np.ndarray:
  """Keyframes among candidate frames with change `scores` (first = inf): sorted indices.

  Scene changes (score >= threshold, the strongest first, `min_gap` apart) plus
  a frame whenever `max_gap` seconds pass without one; then the `max_count`
  highest-scoring of these. The first candidate is always kept.
  """
  changes = []
  for i in np.argsort(-scores, kind="stable"):
    if scores[i] >= threshold and all(abs(times[i] - times[j]) >= min_gap for j in changes):
      changes.append(i)
  changes = set(changes) | {0}
  chosen, last = [], -np.inf
  for i, t in enumerate(times):
    if i in changes or t - last >= max_gap:
      chosen.append(i)
      last = t
  if len(chosen) > max_count:
    chosen = sorted(sorted(chosen, key=lambda i: -scores[i])[:max_count])
  return np.asarray(chosen, np.int64)
