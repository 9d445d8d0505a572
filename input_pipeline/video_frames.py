"""Per-video frame files: every frame's time and, for labelled splits, its label.

Records hold one label per image step; the challenges score every frame. So
extraction and preparation also write, per split and video,

  DIR/frames/{split}/{video_id}.npz
    times   float64 [N]     seconds of each decoded frame from the first (N = frame count)
    labels  (optional)      regression: float32 [N, 2] valence, arousal, -5 = unannotated
                            classification: int64 [N] class, -1 = unannotated

where `video_id` is the records' clip/video_id (Aff-Wild2: the annotation name,
e.g. `<video>_left`). `multimodal_gru.evaluate` maps predictions onto these
frames and scores them against these labels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import uuid
from typing import Iterable

import numpy as np

FOLDER = "frames"
UNANNOTATED_VA = -5.0    # Aff-Wild2's marker
UNANNOTATED_CLASS = -1
MIN_TOLERANCE_FRAMES = 5


class FrameCountError(ValueError):
  """A per-frame file whose length disagrees with its video beyond the tolerance."""


@dataclasses.dataclass
class VideoFrames:
  """The frames of one scored video."""
  video_id: str
  times: np.ndarray                  # [N] float64 seconds
  labels: np.ndarray | None = None   # [N, 2] float32 or [N] int64 (see the module doc)

  @property
  def num_frames(self) -> int:
    return len(self.times)

  def annotated(self) -> np.ndarray:
    """[N] bool: frames with a label (va in [-1, 1] / class >= 0)."""
    if self.labels is None:
      return np.zeros(self.num_frames, bool)
    if self.labels.ndim == 2:
      return np.all(np.abs(self.labels) <= 1, axis=1)
    return self.labels >= 0


def split_dir(data_dir: str, split: str) -> str:
  return os.path.join(os.path.expanduser(data_dir), FOLDER, split)


def _file(folder: str, video_id: str) -> str:
  if not video_id or video_id.startswith("/") or ".." in video_id.split("/"):
    raise ValueError(f"video id {video_id!r} cannot name a file under {folder}")
  return os.path.join(folder, video_id + ".npz")


def write_split(data_dir: str, split: str, videos: Iterable[VideoFrames]) -> str:
  """Replaces DIR/frames/{split}/ with one file per video; returns the folder."""
  final = split_dir(data_dir, split)
  tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
  for v in videos:
    path = _file(tmp, v.video_id)
    if os.path.exists(path):
      raise ValueError(f"two videos of split {split!r} are both named {v.video_id!r}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arrays = {"times": np.asarray(v.times, np.float64)}
    if v.labels is not None:
      if len(v.labels) != len(v.times):
        raise ValueError(f"{v.video_id}: {len(v.labels)} labels for {len(v.times)} frames")
      arrays["labels"] = v.labels
    np.savez(path, **arrays)
  os.makedirs(tmp, exist_ok=True)
  if os.path.exists(final):
    shutil.rmtree(final)
  os.replace(tmp, final)
  return final


def merge_parts(data_dir: str, split: str, part_dirs: list[str]) -> str:
  """Replaces DIR/frames/{split}/ with the union of that folder in each of `part_dirs`
  (moved, not copied); returns the folder. Two parts naming one video is an error."""
  final = split_dir(data_dir, split)
  tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
  os.makedirs(tmp)
  for part in part_dirs:
    source = split_dir(part, split)
    for root, _, names in os.walk(source):
      for name in names:
        relative = os.path.relpath(os.path.join(root, name), source)
        target = os.path.join(tmp, relative)
        if os.path.exists(target):
          raise ValueError(f"two parts of split {split!r} both hold {relative} "
                           f"({part} and an earlier one)")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(root, name), target)
  if os.path.exists(final):
    shutil.rmtree(final)
  os.replace(tmp, final)
  return final


def read_split(data_dir: str, split: str) -> dict[str, VideoFrames]:
  """video_id -> VideoFrames of DIR/frames/{split}/ ({} if the folder does not exist)."""
  folder = split_dir(data_dir, split)
  out = {}
  for root, _, names in os.walk(folder):
    for name in sorted(names):
      if not name.endswith(".npz"):
        continue
      path = os.path.join(root, name)
      video_id = os.path.relpath(path, folder)[:-len(".npz")].replace(os.sep, "/")
      with np.load(path) as z:
        out[video_id] = VideoFrames(video_id, z["times"],
                                    z["labels"] if "labels" in z else None)
  return out


def allowed_mismatch(num_frames: int, tolerance: float) -> int:
  """Frames a per-frame file may differ from its video by: max(5, tolerance x N)."""
  return max(MIN_TOLERANCE_FRAMES, math.ceil(tolerance * num_frames))


def check_frame_count(count: int, num_frames: int, tolerance: float | None, what: str) -> None:
  """Raises FrameCountError naming `what` (file and video) when an annotation of
  `count` frames and a video of `num_frames` differ by more than
  `allowed_mismatch(num_frames, tolerance)`; tolerance None: no check."""
  if tolerance is None:
    return
  allowed = allowed_mismatch(num_frames, tolerance)
  if abs(count - num_frames) > allowed:
    raise FrameCountError(
        f"{what}: {count} annotated frames, but the video decodes to {num_frames} frames "
        f"(more than the tolerance of {allowed} apart). The annotation belongs to another cut "
        "of the video: use the video file of the release, or raise "
        "--config.frame_count_tolerance (a fraction of the frames) to accept it.")


def fit_labels(labels: np.ndarray, num_frames: int, tolerance: float | None, what: str,
               unannotated: float | int) -> np.ndarray:
  """`labels` cut, or padded with `unannotated`, to `num_frames` rows (after
  `check_frame_count`)."""
  check_frame_count(len(labels), num_frames, tolerance, what)
  out = np.full((num_frames,) + labels.shape[1:], unannotated, labels.dtype)
  n = min(num_frames, len(labels))
  out[:n] = labels[:n]
  return out
