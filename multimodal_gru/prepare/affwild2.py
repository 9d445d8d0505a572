"""Aff-Wild2 valence / arousal (ABAW VA Estimation Challenge).

Layout under --manual_dir (as released by the ABAW organisers):

  videos/**/<video>.mp4 | .avi          (batch1/, batch2/, ... subfolders are fine)
  annotations/VA_Estimation_Challenge/Train_Set/<name>.txt
  annotations/VA_Estimation_Challenge/Validation_Set/<name>.txt

Each .txt has the header line `valence,arousal` and one line per video frame,
values in [-1, 1], -5 = not annotated. `<name>` is the video's name, or the
name plus `_left` / `_right` for videos with two annotated subjects.

Per window: `label/va` [T_image, 2] is the label of the frame behind each image
step (the frame nearest the step's timestamp); `label/valid` is 0 where that
frame is unannotated or past the end of the annotation file. Windows without
any annotated step are left out.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

from typing import TYPE_CHECKING

import numpy as np

from input_pipeline import record_format
from multimodal_gru.extract import decode

if TYPE_CHECKING:
  from multimodal_gru.extract import pipeline

NAME = "affwild2"
TASK = "regression"
ANNOTATIONS = os.path.join("annotations", "VA_Estimation_Challenge")
SPLITS = {"Train_Set": "train", "Validation_Set": "eval"}   # annotation folder -> split

INSTRUCTIONS = f"""\
Aff-Wild2 is distributed by its authors under an End User License Agreement.
  1. Read and sign the EULA on https://ibug.doc.ic.ac.uk/resources/aff-wild2/ (the ABAW
     challenge page, https://affective-behavior-analysis-in-the-wild.github.io/, links it);
     you receive download links for the videos and the annotations.
  2. Put the files under MANUAL_DIR as
       MANUAL_DIR/videos/**/<video>.mp4 or .avi
       MANUAL_DIR/{ANNOTATIONS}/Train_Set/<video>.txt
       MANUAL_DIR/{ANNOTATIONS}/Validation_Set/<video>.txt
  3. python -m multimodal_gru.prepare --dataset=affwild2 --manual_dir=MANUAL_DIR --out=OUT_DIR
"""


@dataclasses.dataclass
class Annotation:
  name: str            # annotation file stem; clip ids are "{name}-w{k:04d}"
  va: np.ndarray       # [num_frames, 2] float32, -5 = not annotated


def load_va(path: str) -> np.ndarray:
  """[num_frames, 2] valence, arousal of one annotation file."""
  with open(path) as f:
    header = f.readline().strip().replace(" ", "").lower()
    if header != "valence,arousal":
      raise ValueError(f"{path}: first line must be 'valence,arousal', got {header!r}")
    va = np.loadtxt(f, delimiter=",", dtype=np.float32, ndmin=2)
  if va.size and va.shape[1] != 2:
    raise ValueError(f"{path}: expected 2 columns, got {va.shape[1]}")
  return va.reshape(-1, 2)


def layout_problem(manual_dir: str) -> str | None:
  """What is missing from the expected layout, or None."""
  for split_dir in SPLITS:
    if not os.path.isdir(os.path.join(manual_dir, ANNOTATIONS, split_dir)):
      return f"missing folder {os.path.join(manual_dir, ANNOTATIONS, split_dir)}"
  if not decode.list_videos(os.path.join(manual_dir, "videos")):
    return f"no videos under {os.path.join(manual_dir, 'videos')}"
  return None


def find(manual_dir: str) -> tuple[dict[str, list[tuple[decode.VideoFile, Annotation]]], list[str]]:
  """(split -> [(video, annotation)], names of annotations without a video)."""
  paths = decode.list_videos(os.path.join(manual_dir, "videos"))
  by_name = {os.path.splitext(os.path.basename(p))[0]: video
             for p, video in zip(paths, decode.name_videos(paths))}
  items, missing = {}, []
  for split_dir, split in SPLITS.items():
    items[split] = []
    for txt in sorted(glob.glob(os.path.join(manual_dir, ANNOTATIONS, split_dir, "*.txt"))):
      name = os.path.splitext(os.path.basename(txt))[0]
      video = by_name.get(name) or by_name.get(re.sub(r"_(left|right)$", "", name))
      if video is None:
        missing.append(name)
        continue
      items[split].append((video, Annotation(name, load_va(txt))))
  return items, missing


def to_clips(annotation: Annotation, window: pipeline.Window) -> list[record_format.Clip]:
  frames = window.image_frames
  inside = frames < len(annotation.va)
  va = np.zeros((len(frames), 2), np.float32)
  va[inside] = annotation.va[frames[inside]]
  valid = inside & np.all((va >= -1) & (va <= 1), axis=-1)
  if not valid.any():
    return []
  va[~valid] = 0.0
  return [dataclasses.replace(window.clip, clip_id=f"{annotation.name}-w{window.index:04d}",
                              va=va, valid=valid)]


def dataset_info() -> dict:
  return {"task": TASK, "label_names": ["valence", "arousal"]}
