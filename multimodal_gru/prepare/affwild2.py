"""Aff-Wild2 valence / arousal (ABAW VA Estimation Challenge).

Layout under --manual_dir (as released by the ABAW organisers):

  videos/**/<video>.mp4 | .avi          (batch1/, batch2/, ... subfolders are fine)
  annotations/VA_Estimation_Challenge/Train_Set/<name>.txt
  annotations/VA_Estimation_Challenge/Validation_Set/<name>.txt

  cropped_aligned/<name>/00001.jpg ...   (only for --image_source=cropped_aligned)

Each .txt has the header line `valence,arousal` and one line per video frame,
values in [-1, 1], -5 = not annotated. `<name>` is the video's name, or the
name plus `_left` / `_right` for videos with two annotated subjects. An
annotation may be `config.frame_count_tolerance` (at least 5 frames) longer or
shorter than the decoded video (cut / padded with -5); beyond that, an error.

Every annotation is one scored video: clip/video_id = `<name>`, and its frame
file (input_pipeline/video_frames.py) holds the annotation's -5-marked labels
for every decoded frame of the video.

With config.image.source = "cropped_aligned" (prepare --image_source) the image
stream reads the organisers' face crops `cropped_aligned/<name>/NNNNN.jpg`
(1-based frame numbers; `<video>` if there is no `<name>` folder) instead of
the frames; a frame without a crop (no face detected) takes the previous
frame's crop (the first crop before the first one). The video stream and the
captions stay on the full frames. Each annotation is then extracted on its own.

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
from PIL import Image

from input_pipeline import record_format
from input_pipeline import video_frames
from multimodal_gru.extract import decode

if TYPE_CHECKING:
  from multimodal_gru.extract import pipeline

NAME = "affwild2"
TASK = "regression"
ANNOTATIONS = os.path.join("annotations", "VA_Estimation_Challenge")
CROPS = "cropped_aligned"
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
  path: str = ""       # the annotation file


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
      items[split].append((video, Annotation(name, load_va(txt), txt)))
  return items, missing


class FaceCrops:
  """The face crops of one video as its image stream (a `pipeline.ImageSource`)."""

  def __init__(self, folder: str, size: int):
    names = {}
    for n in os.listdir(folder) if os.path.isdir(folder) else []:
      stem, ext = os.path.splitext(n)
      if stem.isdigit() and ext.lower() in (".jpg", ".jpeg", ".png"):
        names[int(stem)] = n
    if not names:
      raise ValueError(f"{folder}: no face crops (00001.jpg, ...). Put the organisers' "
                       f"{CROPS}/ folder under the manual dir, or prepare with "
                       "--image_source=frames.")
    self.folder, self.size, self._names = folder, size, names
    self.numbers = np.asarray(sorted(names))
    self.filled = 0   # image steps that took another frame's crop

  def crop_numbers(self, frame_indices: np.ndarray) -> np.ndarray:
    """1-based crop number used for each 0-based frame: the frame's, else the previous one's."""
    wanted = np.asarray(frame_indices) + 1
    before = np.searchsorted(self.numbers, wanted, side="right") - 1
    return self.numbers[np.maximum(before, 0)]

  def __call__(self, frame_indices: np.ndarray) -> np.ndarray:
    numbers = self.crop_numbers(frame_indices)
    self.filled += int((numbers != np.asarray(frame_indices) + 1).sum())
    return np.stack([self._load(int(n)) for n in numbers])

  def _load(self, number: int) -> np.ndarray:
    path = os.path.join(self.folder, self._names[number])
    with Image.open(path) as image:
      image = image.convert("RGB")
      side = min(image.size)
      left, top = (image.width - side) // 2, (image.height - side) // 2
      image = image.crop((left, top, left + side, top + side))
      return np.asarray(image.resize((self.size, self.size), Image.BILINEAR), np.uint8)


def extraction_unit(manual_dir: str, video: decode.VideoFile, annotation: Annotation,
                    config) -> tuple[decode.VideoFile, FaceCrops | None]:
  """What to extract for `annotation`: its video (full frames), or with face crops the
  video under the annotation's name together with its crops."""
  source = config.image.get("source", "frames")
  if source == "frames":
    return video, None
  if source != CROPS:
    raise ValueError(f"config.image.source must be 'frames' or {CROPS!r}, got {source!r}")
  folder = os.path.join(manual_dir, CROPS, annotation.name)
  if not os.path.isdir(folder):
    folder = os.path.join(manual_dir, CROPS, os.path.basename(video.video_id))
  if not os.path.isdir(folder):
    raise ValueError(f"No face crops for {annotation.path}: neither "
                     f"{os.path.join(manual_dir, CROPS, annotation.name)} nor {folder} exists. "
                     f"Put the organisers' {CROPS}/ folder under {manual_dir}, or prepare with "
                     "--image_source=frames.")
  return decode.VideoFile(annotation.name, video.path), FaceCrops(folder, config.frame_size)


def frame_labels(annotation: Annotation, num_frames: int, tolerance: float | None,
                 video_path: str) -> np.ndarray:
  """[num_frames, 2] float32 labels of every decoded frame, -5 = unannotated."""
  return video_frames.fit_labels(annotation.va, num_frames, tolerance,
                                 f"{annotation.path} (video {video_path})",
                                 video_frames.UNANNOTATED_VA)


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
                              video_id=annotation.name, va=va, valid=valid)]


def dataset_info() -> dict:
  return {"task": TASK, "label_names": ["valence", "arousal"]}
