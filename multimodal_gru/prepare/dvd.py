"""DVD violence detection (ABAW fine-grained violence detection challenge).

The archive's own layout is not public; this reader expects (rename or link
the released files into it, or adapt `SPLITS` / `find` / `load_annotation`):

  videos/**/<id>.mp4 | .avi | ...
  annotations/train/<id>.csv
  annotations/val/<id>.csv

An annotation .csv is one of
  per frame:  header `frame,label`, then `<frame index>,<0 or 1>` lines;
              frames not listed are unannotated;
  segments:   header `start_frame,end_frame`, then one line per violent
              interval (inclusive); every other frame is non-violent.
Frame indices count decoded frames from 0. Listed frames may reach
`config.frame_count_tolerance` (at least 5 frames) past the decoded video's
end (they are dropped); beyond that, an error.

Per window: `label/class` = 1 if any annotated frame of the window is violent;
`label/step_class` [T_image] = the label of the frame behind each image step;
`label/valid` = 0 for unannotated steps. Windows with no annotated frame are
left out. Each annotation is one scored video (clip/video_id = `<id>`); its frame
file (input_pipeline/video_frames.py) holds the label of every decoded frame
(-1 = unannotated).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os

from typing import TYPE_CHECKING

import numpy as np

from input_pipeline import record_format
from input_pipeline import video_frames
from multimodal_gru.extract import decode

if TYPE_CHECKING:
  from multimodal_gru.extract import pipeline

NAME = "dvd"
TASK = "classification"
CLASS_NAMES = ("non-violent", "violent")
SPLITS = {"train": "train", "val": "eval"}   # annotation folder -> split

INSTRUCTIONS = """\
DVD (the violence detection dataset of the ABAW fine-grained violence detection challenge)
is distributed by the challenge organisers under an End User License Agreement.
  1. Request it through the ABAW competition page
     (https://affective-behavior-analysis-in-the-wild.github.io/) by signing its EULA.
  2. Put the files under MANUAL_DIR as
       MANUAL_DIR/videos/**/<id>.mp4 (or .avi, .mkv, ...)
       MANUAL_DIR/annotations/train/<id>.csv
       MANUAL_DIR/annotations/val/<id>.csv
     with per-frame `frame,label` rows or violent `start_frame,end_frame` segments
     (see multimodal_gru/prepare/dvd.py).
  3. python -m multimodal_gru.prepare --dataset=dvd --manual_dir=MANUAL_DIR --out=OUT_DIR
"""


@dataclasses.dataclass
class Annotation:
  """Violence per frame: `per_frame` (-1 = unannotated) or violent `segments`."""
  name: str
  per_frame: np.ndarray | None = None   # [num_frames] int, -1 / 0 / 1
  segments: np.ndarray | None = None    # [S, 2] inclusive frame ranges
  path: str = ""                        # the annotation file

  @property
  def extent(self) -> int:
    """Frames the annotation reaches: last listed / segment frame + 1."""
    if self.segments is not None:
      return int(self.segments[:, 1].max()) + 1 if len(self.segments) else 0
    return len(self.per_frame)

  def labels(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label [N] int, annotated [N] bool) of frame indices."""
    if self.segments is not None:
      inside = (frames[:, None] >= self.segments[:, 0]) & (frames[:, None] <= self.segments[:, 1])
      return inside.any(-1).astype(np.int64), np.ones(len(frames), bool)
    if not len(self.per_frame):
      return np.zeros(len(frames), np.int64), np.zeros(len(frames), bool)
    known = frames < len(self.per_frame)
    labels = np.where(known, self.per_frame[np.minimum(frames, len(self.per_frame) - 1)], -1)
    return np.maximum(labels, 0), labels >= 0


def load_annotation(path: str) -> Annotation:
  name = os.path.splitext(os.path.basename(path))[0]
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  header = [h.strip().lower() for h in rows[0]] if rows else []
  body = np.asarray([[int(float(v)) for v in r] for r in rows[1:] if r], np.int64).reshape(-1, 2)
  if header == ["frame", "label"]:
    if body.size and (body[:, 0].min() < 0 or not np.isin(body[:, 1], (0, 1)).all()):
      raise ValueError(f"{path}: frames must be >= 0 and labels 0 or 1")
    per_frame = np.full(body[:, 0].max() + 1 if body.size else 0, -1, np.int64)
    per_frame[body[:, 0]] = body[:, 1]
    return Annotation(name, per_frame=per_frame, path=path)
  if header == ["start_frame", "end_frame"]:
    if body.size and (body[:, 0] > body[:, 1]).any():
      raise ValueError(f"{path}: a segment ends before it starts")
    return Annotation(name, segments=body, path=path)
  raise ValueError(f"{path}: header must be 'frame,label' or 'start_frame,end_frame', "
                   f"got {','.join(header)!r}")


def layout_problem(manual_dir: str) -> str | None:
  """What is missing from the expected layout, or None."""
  for folder in SPLITS:
    if not os.path.isdir(os.path.join(manual_dir, "annotations", folder)):
      return f"missing folder {os.path.join(manual_dir, 'annotations', folder)}"
  if not decode.list_videos(os.path.join(manual_dir, "videos")):
    return f"no videos under {os.path.join(manual_dir, 'videos')}"
  return None


def find(manual_dir: str) -> tuple[dict[str, list[tuple[decode.VideoFile, Annotation]]], list[str]]:
  """(split -> [(video, annotation)], names of annotations without a video)."""
  paths = decode.list_videos(os.path.join(manual_dir, "videos"))
  by_name = {os.path.splitext(os.path.basename(p))[0]: video
             for p, video in zip(paths, decode.name_videos(paths))}
  items, missing = {}, []
  for folder, split in SPLITS.items():
    items[split] = []
    for path in sorted(glob.glob(os.path.join(manual_dir, "annotations", folder, "*.csv"))):
      annotation = load_annotation(path)
      if annotation.name not in by_name:
        missing.append(annotation.name)
        continue
      items[split].append((by_name[annotation.name], annotation))
  return items, missing


def extraction_unit(manual_dir: str, video: decode.VideoFile, annotation: Annotation,
                    config) -> tuple[decode.VideoFile, None]:
  """What to extract for `annotation`: its video, full frames."""
  del manual_dir, annotation
  if config.image.get("source", "frames") != "frames":
    raise ValueError(f"DVD has no face crops: config.image.source must be 'frames', got "
                     f"{config.image.source!r}")
  return video, None


def frame_labels(annotation: Annotation, num_frames: int, tolerance: float | None,
                 video_path: str) -> np.ndarray:
  """[num_frames] int64 label of every decoded frame, -1 = unannotated."""
  if annotation.extent > num_frames:
    video_frames.check_frame_count(annotation.extent, num_frames, tolerance,
                                   f"{annotation.path} (video {video_path})")
  labels, annotated = annotation.labels(np.arange(num_frames))
  return np.where(annotated, labels, video_frames.UNANNOTATED_CLASS).astype(np.int64)


def to_clips(annotation: Annotation, window: pipeline.Window) -> list[record_format.Clip]:
  first, last = window.frame_range
  labels, annotated = annotation.labels(np.arange(first, last + 1))
  if not annotated.any():
    return []
  step_class, valid = annotation.labels(window.image_frames)
  return [dataclasses.replace(window.clip, clip_id=f"{annotation.name}-w{window.index:04d}",
                              video_id=annotation.name, label=int(labels[annotated].max()),
                              step_class=step_class, valid=valid)]


def dataset_info() -> dict:
  return {"task": TASK, "num_classes": len(CLASS_NAMES), "class_names": list(CLASS_NAMES)}
