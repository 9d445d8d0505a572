"""The challenges' submission files from frame-level predictions.

Aff-Wild2 VA: ONE txt,
    image_location,valence,arousal
    <video>/00001.jpg,0.123456,-0.234567
one row per frame (5-digit, 1-based frame numbers as in cropped_aligned/),
values clipped to [-1, 1], 6 decimals, videos in sorted order.
DVD: one CSV per video, `<video>.csv`,
    Frame_Number,Label
    1,0
(1-based frame numbers, as the released frame files 00001.jpg; label = argmax
of the frame probabilities), plus one zip holding the CSVs.

Row counts: by default one row per decoded frame of each video. With an
organisers' sample file (`read_frame_list`: any file whose lines start with
`<video>/<number>.<ext>`, e.g. the Aff-Wild2 test sample) the rows follow it
exactly, video by video and frame by frame: frames past our last one take the
last prediction (padding), frames we have beyond its list are left out
(truncation). A video the list names that we have no predictions for, or a
frame count further from ours than the tolerance, is an error.
"""

from __future__ import annotations

import collections
import os
import re
import zipfile
from typing import Mapping

from absl import logging
import numpy as np

from input_pipeline import video_frames

AFFWILD2_HEADER = "image_location,valence,arousal"
DVD_HEADER = "Frame_Number,Label"
_ENTRY = re.compile(r"^\s*([^,]+)/(\d+)\.[A-Za-z0-9]+\s*$")


class SubmissionError(ValueError):
  """Predictions that cannot be written in the challenge's format; says what to do."""


def frame_name(video_id: str, number: int) -> str:
  """`<video>/00001.jpg` for 1-based frame `number`."""
  return f"{video_id}/{number:05d}.jpg"


def read_frame_list(path: str) -> dict[str, list[int]]:
  """video -> its 1-based frame numbers in the order of an organisers' sample file.

  A first line that names no frame (a header) is skipped; any other such line
  is an error naming the line.
  """
  frames: dict[str, list[int]] = collections.OrderedDict()
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      match = _ENTRY.match(line.split(",")[0])
      if match is None:
        if n == 1:
          continue
        raise SubmissionError(f"{path}:{n}: {line.strip()!r} does not start with "
                              "<video>/<frame number>.jpg; pass the organisers' sample file.")
      frames.setdefault(match.group(1), []).append(int(match.group(2)))
  if not frames:
    raise SubmissionError(f"{path} lists no frames (<video>/00001.jpg, ...).")
  return frames


def match_rows(video_id: str, num_frames: int, numbers: list[int] | None,
               tolerance: float) -> np.ndarray:
  """0-based frame of our predictions for each submission row of `video_id`.

  numbers: the sample file's 1-based frame numbers, or None (all our frames).
  """
  if numbers is None:
    return np.arange(num_frames)
  numbers = np.asarray(numbers, np.int64)
  allowed = video_frames.allowed_mismatch(num_frames, tolerance)
  if numbers.min() < 1:
    raise SubmissionError(f"the frame list numbers frames of {video_id} from "
                          f"{numbers.min()}; frame numbers start at 1 (00001.jpg).")
  if abs(len(numbers) - num_frames) > allowed or numbers.max() > num_frames + allowed:
    raise SubmissionError(
        f"the frame list asks for {len(numbers)} frames of {video_id} (up to frame "
        f"{numbers.max()}), we have predictions for its {num_frames} decoded frames: more than "
        f"the tolerance of {allowed} apart, so padding or cutting would misalign it. Check that "
        "the video file is the organisers' and the list is for this split, or raise "
        "--frame_count_tolerance.")
  return np.minimum(numbers - 1, num_frames - 1)   # past our end: the last prediction


def _rows(values: Mapping[str, np.ndarray], frame_list: Mapping[str, list[int]] | None,
          tolerance: float):
  """Yields (video, 1-based frame numbers, row values) in submission order."""
  if frame_list is None:
    for video_id in sorted(values):
      n = len(values[video_id])
      yield video_id, np.arange(1, n + 1), np.asarray(values[video_id])
    return
  unknown = [v for v in frame_list if v not in values]
  if unknown:
    raise SubmissionError(
        f"the frame list names {len(unknown)} videos we have no predictions for: "
        f"{', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}. Extract or prepare "
        "those videos into the evaluated split (their records and frame files), or pass the "
        "list of this split.")
  left_out = sorted(set(values) - set(frame_list))
  if left_out:
    logging.warning("%d videos with predictions are not in the frame list and are left out of "
                    "the submission: %s", len(left_out), ", ".join(left_out[:10]))
  for video_id, numbers in frame_list.items():
    rows = match_rows(video_id, len(values[video_id]), numbers, tolerance)
    yield video_id, np.asarray(numbers), np.asarray(values[video_id])[rows]


def write_affwild2(path: str, va: Mapping[str, np.ndarray],
                   frame_list: Mapping[str, list[int]] | None = None,
                   tolerance: float = 0.01) -> int:
  """Writes the single VA txt from {video: [N, 2]}; returns the number of rows."""
  count = 0
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    f.write(AFFWILD2_HEADER + "\n")
    for video_id, numbers, rows in _rows(va, frame_list, tolerance):
      rows = np.clip(rows, -1.0, 1.0)
      f.writelines(f"{frame_name(video_id, int(n))},{v:.6f},{a:.6f}\n"
                   for n, (v, a) in zip(numbers, rows))
      count += len(rows)
  os.replace(path + ".tmp", path)
  return count


def write_dvd(folder: str, zip_path: str, probabilities: Mapping[str, np.ndarray],
              frame_list: Mapping[str, list[int]] | None = None,
              tolerance: float = 0.01) -> dict[str, int]:
  """Writes `<folder>/<video>.csv` from {video: [N, K]} and zips them; returns rows per video."""
  counts = {}
  with zipfile.ZipFile(zip_path + ".tmp", "w", zipfile.ZIP_DEFLATED) as archive:
    for video_id, numbers, rows in _rows(probabilities, frame_list, tolerance):
      labels = rows.argmax(axis=1)
      text = DVD_HEADER + "\n" + "".join(f"{int(n)},{int(c)}\n" for n, c in zip(numbers, labels))
      path = os.path.join(folder, video_id + ".csv")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(path, "w") as f:
        f.write(text)
      archive.writestr(video_id + ".csv", text)
      counts[video_id] = len(labels)
  os.replace(zip_path + ".tmp", zip_path)
  return counts
