"""Video decoding with PyAV: square RGB frames, their times, fixed-length windows.

Times are seconds from the first decoded frame, taken from each frame's pts, so
variable-frame-rate videos keep their real timing. Frame indices count decoded
frames from 0 (the numbering of per-frame annotation files).
"""

from __future__ import annotations

import dataclasses
import fractions
import glob
import os
from typing import Iterator, Sequence

import av
import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".3gp", ".ogv", ".ts", ".vob")


class VideoDecodeError(RuntimeError):
  """A file that cannot be opened or decoded as a video."""

  def __init__(self, path: str, message: str):
    super().__init__(f"{path}: {message}")
    self.path = path


def _reason(e: Exception) -> str:
  return getattr(e, "strerror", None) or str(e)


@dataclasses.dataclass
class DecodedWindow:
  """Frames of one window [start, end) of a video."""
  index: int                 # window number in the video
  start: float               # seconds
  end: float                 # seconds
  times: np.ndarray          # [N] float64 frame times, increasing
  frame_indices: np.ndarray  # [N] int64 frame numbers in the video
  frames: np.ndarray         # [N, S, S, 3] uint8 RGB


def square_rgb(frame: av.VideoFrame, size: int) -> np.ndarray:
  """Resizes the shorter side to `size` and centre-crops: [size, size, 3] uint8."""
  scale = size / min(frame.width, frame.height)
  width, height = max(size, round(frame.width * scale)), max(size, round(frame.height * scale))
  rgb = frame.reformat(width=width, height=height, format="rgb24",
                       interpolation="AREA").to_ndarray()
  top, left = (height - size) // 2, (width - size) // 2
  return rgb[top:top + size, left:left + size]


class VideoReader:
  """Decodes the first video stream of a file; raises `VideoDecodeError`.

  `open_options` go to `av.open` (e.g. format="v4l2" for a camera, options=
  {"rtsp_transport": "tcp"}, timeout=seconds) for live sources.
  """

  def __init__(self, path: str, size: int, open_options: dict | None = None):
    self.path, self.size = path, size
    try:
      self._container = av.open(path, **(open_options or {}))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
      raise VideoDecodeError(path, f"cannot open: {_reason(e)}") from e
    if not self._container.streams.video:
      self._container.close()
      raise VideoDecodeError(path, "no video stream")
    self._stream = self._container.streams.video[0]
    self._stream.thread_type = "AUTO"
    rate = self._stream.average_rate or self._stream.guessed_rate
    self.nominal_fps = float(rate) if rate else 25.0

  def __enter__(self) -> VideoReader:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self._container.close()

  def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yields (frame index, time in seconds, [S, S, 3] uint8) in presentation order."""
    first = last = None
    index = -1
    try:
      for index, frame in enumerate(self._container.decode(self._stream)):
        t = frame.time
        if t is None:   # no pts: continue at the nominal rate
          t = 0.0 if first is None else first + last + 1.0 / self.nominal_fps
        if first is None:
          first = t
        t -= first
        if last is not None and t <= last:   # repeated or out-of-order pts
          t = last + 1e-3
        last = t
        yield index, t, square_rgb(frame, self.size)
    except av.FFmpegError as e:
      raise VideoDecodeError(self.path,
                             f"decoding failed after {index + 1} frames: {_reason(e)}") from e
    if index < 0:
      raise VideoDecodeError(self.path, "no decodable video frames")


def iter_windows(path: str, size: int, window_seconds: float, min_window_seconds: float,
                 max_seconds: float = 0.0, stride_seconds: float | None = None,
                 timeline: list[float] | None = None) -> Iterator[DecodedWindow]:
  """Cuts a video into windows [k S, k S + W) (W = window, S = stride <= W); empty ones skipped.

  The last window ends one frame period after its last frame; it is dropped if
  shorter than `min_window_seconds`, unless it is the only window. With
  overlap (S < W) windows that would only repeat the last window's tail are
  not made. With `max_seconds` > 0 decoding stops there. `timeline`, if given,
  receives the time of every decoded frame (the video's frame count and times).
  """
  stride = window_seconds if stride_seconds is None else stride_seconds
  if not 0 < stride <= window_seconds:
    raise ValueError(f"window stride {stride} s must be in (0, window_seconds={window_seconds}]")
  with VideoReader(path, size) as reader:
    buffer: list[tuple[int, float, np.ndarray]] = []   # frames with time >= k * stride
    k = yielded = 0

    def window(end: float) -> DecodedWindow:
      return DecodedWindow(k, k * stride, end, np.asarray([f[1] for f in buffer], np.float64),
                           np.asarray([f[0] for f in buffer], np.int64),
                           np.stack([f[2] for f in buffer]))

    for index, t, rgb in reader.frames():
      if max_seconds > 0 and t >= max_seconds:
        break
      if timeline is not None:
        timeline.append(t)
      while t >= k * stride + window_seconds:   # window k is complete
        if buffer:
          yield window(k * stride + window_seconds)
          yielded += 1
        k += 1
        buffer = [f for f in buffer if f[1] >= k * stride]
        if not buffer:   # skip to the first window that holds t
          k = max(k, int((t - window_seconds) // stride) + 1)
          while k * stride > t:   # float rounding overshot
            k -= 1
      buffer.append((index, t, rgb))
    if buffer:
      times = [f[1] for f in buffer]
      period = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / reader.nominal_fps
      end = times[-1] + period if max_seconds <= 0 else min(times[-1] + period, max_seconds)
      if not yielded or end - k * stride >= min_window_seconds:
        yield window(end)


@dataclasses.dataclass(frozen=True)
class VideoFile:
  video_id: str   # unique name; clip ids are "{video_id}-w{k:04d}"
  path: str


def name_videos(paths: Sequence[str]) -> list[VideoFile]:
  """Names videos by their path relative to their common folder, without extension."""
  if not paths:
    return []
  root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
  return [VideoFile(os.path.splitext(os.path.relpath(os.path.abspath(p), root))[0]
                    .replace(os.sep, "/"), p) for p in paths]


def list_videos(patterns: str | Sequence[str]) -> list[str]:
  """Video files under folders (recursively) or matching globs, sorted, deduplicated."""
  if isinstance(patterns, str):
    patterns = [p for p in patterns.split(",") if p]
  found = set()
  for pattern in patterns:
    if os.path.isdir(pattern):
      for root, _, names in os.walk(pattern):
        found.update(os.path.join(root, n) for n in names
                     if os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS)
    else:
      found.update(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
  return sorted(found)


def write_video(path: str, frames: np.ndarray, fps: float,
                times: Sequence[float] | None = None, codec: str = "mpeg4") -> None:
  """Encodes [N, H, W, 3] uint8 RGB frames (H, W even) at `fps`, or at `times` (seconds, VFR)."""
  time_base = fractions.Fraction(1, 1000)
  if times is None:
    times = np.arange(len(frames)) / fps
  with av.open(path, "w") as container:
    stream = container.add_stream(codec, rate=round(fps))
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = stream.time_base = time_base
    for rgb, t in zip(frames, times):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
      frame.pts, frame.time_base = round(t / time_base), time_base
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
