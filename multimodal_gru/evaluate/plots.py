"""A PNG of a few videos' frame-level predictions against their labels."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def plot_videos(predictions: Mapping[str, object], task: str, png_path: str,
                video_ids: Sequence[str]) -> None:
  """One panel per video: predictions (solid) and labels (dashed, gaps = unannotated) over time.

  predictions: video_id -> `video.VideoPrediction`.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(len(video_ids), 1, figsize=(12, 2.4 * len(video_ids)), squeeze=False,
                           constrained_layout=True)
  for ax, video_id in zip(axes[:, 0], video_ids):
    p = predictions[video_id]
    if task == "regression":
      for i, name in enumerate(("valence", "arousal")):
        ax.plot(p.times, p.values[:, i], color=f"C{i}", label=name)
        if p.labels is not None:
          label = np.where(np.abs(p.labels[:, i]) <= 1, p.labels[:, i], np.nan)
          ax.plot(p.times, label, "--", color=f"C{i}", alpha=0.7, label=f"{name} label")
      ax.set_ylim(-1.05, 1.05)
    else:
      ax.plot(p.times, 1.0 - p.values[:, 0], color="C3", label="P(violent)")
      if p.labels is not None:
        ax.plot(p.times, np.where(p.labels >= 0, (p.labels > 0).astype(float), np.nan), "--",
                color="black", alpha=0.7, label="label")
      ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"{video_id} ({p.num_frames} frames, {p.num_windows} windows)", fontsize="small")
    ax.set_xlim(p.times[0], p.times[-1] if p.num_frames > 1 else p.times[0] + 1)
    ax.legend(loc="upper right", fontsize="x-small", ncol=4)
  axes[-1, 0].set_xlabel("time (s)")
  fig.savefig(png_path, dpi=80)
  plt.close(fig)
