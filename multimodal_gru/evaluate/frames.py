"""From per-step window outputs to one value per video frame, by time.

Each window's steps sit at known frames of the video (image/frame_index), hence
at known times. For every frame:
  * inside a window's step span (first to last step time), the window's
    outputs are interpolated linearly in time; where several windows cover the
    frame (overlapping windows), their values are averaged with equal weights;
  * between windows (a frame no window's span covers), the value is
    interpolated between the nearest steps of any windows;
  * before the first step and after the last one, the nearest step's value is
    held.
So a model whose step outputs are a linear function of time is recovered
exactly at every frame between the first and the last step.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
  """np.interp per column: x [M], xp [T] increasing, fp [T, C] -> [M, C]."""
  return np.stack([np.interp(x, xp, fp[:, c]) for c in range(fp.shape[1])], axis=1)


def map_to_frames(frame_times: np.ndarray,
                  windows: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
  """Per-frame values of one video.

  Args:
    frame_times: [N] increasing seconds of the video's frames.
    windows: per window (step times [T_w] increasing, step values [T_w, C]).

  Returns:
    [N, C] float64 (see the module doc).
  """
  frame_times = np.asarray(frame_times, np.float64)
  if not windows:
    raise ValueError("no windows to map onto the frames")
  channels = np.asarray(windows[0][1]).shape[1]
  total = np.zeros((len(frame_times), channels))
  weight = np.zeros(len(frame_times))
  for times, values in windows:
    times, values = np.asarray(times, np.float64), np.asarray(values, np.float64)
    if len(times) != len(values) or not len(times) or np.any(np.diff(times) <= 0):
      raise ValueError(f"window steps need increasing times, one per value: {len(times)} times, "
                       f"{len(values)} values")
    inside = (frame_times >= times[0]) & (frame_times <= times[-1])
    total[inside] += _interp(frame_times[inside], times, values)
    weight[inside] += 1
  out = np.empty_like(total)
  covered = weight > 0
  out[covered] = total[covered] / weight[covered, None]
  if not covered.all():   # between windows, before the first / after the last step
    times = np.concatenate([np.asarray(t, np.float64) for t, _ in windows])
    values = np.concatenate([np.asarray(v, np.float64) for _, v in windows])
    unique, inverse = np.unique(times, return_inverse=True)   # steps at the same time: mean
    counts = np.bincount(inverse, minlength=len(unique))
    means = np.stack([np.bincount(inverse, values[:, c], len(unique)) for c in range(channels)],
                     axis=1) / counts[:, None]
    out[~covered] = _interp(frame_times[~covered], unique, means)
  return out
