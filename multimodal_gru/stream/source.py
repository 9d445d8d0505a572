"""A video source decoded in a background thread into a bounded frame buffer.

Sources: a file, a network stream (rtsp://, http(s)://, udp://, ...), a
camera (/dev/videoN, read with v4l2) or a named pipe (e.g. MPEG-TS written by
another program). Frames are PyAV-decoded and resized as
in extraction (`decode.VideoReader`: square RGB of the run's frame size, times
in seconds from the first frame).

Drop rule: live sources (network, camera, pipe) and files paced with `realtime`
cannot wait for the consumer. The buffer holds at most `capacity` frames; a
frame that arrives at a full buffer evicts the OLDEST waiting frame, which is
counted in `dropped`. So the consumer never lags more than `capacity` frames
behind the source, and it always sees the newest frames. A file read as fast
as possible (no `realtime`) drops nothing: the decoder waits for room instead.

The source ends in one of three ways, each reported as a `Closed`: "end" (the
source has no more frames), "error" (it cannot be opened or decoding fails,
e.g. a file cut mid-way) or "stall" (no frame for `stall_seconds`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import stat
import threading
import time

import numpy as np

from multimodal_gru.extract import decode

_NETWORK = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_CAMERA = re.compile(r"^/dev/video\d+$")


@dataclasses.dataclass
class Frame:
  """One decoded frame."""
  index: int              # decoded frames counted from 0 (dropped ones included)
  time: float             # stream time: seconds from the first frame
  rgb: np.ndarray         # [S, S, 3] uint8
  decode_seconds: float   # time spent decoding and resizing it
  arrival: float          # time.monotonic() when it entered the buffer


@dataclasses.dataclass(frozen=True)
class Closed:
  """Why a source has no more frames."""
  reason: str    # "end" | "error" | "stall"
  message: str


def _is_pipe(source: str) -> bool:
  try:
    return stat.S_ISFIFO(os.stat(source).st_mode)
  except OSError:
    return False


def is_live(source: str) -> bool:
  """A network stream, a camera or a named pipe (not a regular file)."""
  return bool(_NETWORK.match(source) or _CAMERA.match(source)) or _is_pipe(source)


def open_options(source: str, stall_seconds: float) -> dict:
  """`av.open` keyword arguments for `source` (see decode.VideoReader)."""
  if _CAMERA.match(source):
    return {"format": "v4l2", "timeout": stall_seconds}
  if _NETWORK.match(source):
    options = {"rtsp_transport": "tcp"} if source.lower().startswith("rtsp") else {}
    # Open and read timeouts: a silent server ends the read instead of blocking forever.
    return {"options": options, "timeout": (max(stall_seconds, 10.0), stall_seconds)}
  if _is_pipe(source):   # start on the first packets: a pipe cannot be probed for seconds
    return {"options": {"probesize": "32", "analyzeduration": "0"}}
  return {}


def check_source(source: str) -> None:
  """Raises ValueError for a file or camera path that does not exist."""
  if not is_live(source) or _CAMERA.match(source):
    if not os.path.exists(source):
      raise ValueError(f"--source={source}: no such file or device (relative paths are taken "
                       f"from {os.getcwd()}; a network stream needs a scheme, e.g. rtsp://).")


class FrameSource:
  """Decodes `source` in a daemon thread; `poll` hands the buffered frames to the consumer.

  Use as a context manager, or `start()` then `close()`.
  """

  def __init__(self, source: str, frame_size: int, realtime: bool = False,
               buffer_seconds: float = 2.0, stall_seconds: float = 10.0):
    self.source, self.frame_size = source, frame_size
    self.live = is_live(source)
    self.realtime = realtime or self.live
    self.drops = self.realtime   # the drop rule of the module doc; else back-pressure
    self.buffer_seconds, self.stall_seconds = buffer_seconds, stall_seconds
    self.capacity = 1
    self.nominal_fps = 25.0
    self.dropped = 0
    self.decoded = 0
    self._buffer: collections.deque[Frame] = collections.deque()
    self._cond = threading.Condition()
    self._stop = threading.Event()
    self._closed: Closed | None = None
    self._last_frame = time.monotonic()
    self._thread = threading.Thread(target=self._run, name=f"decode:{source}", daemon=True)

  def __enter__(self) -> FrameSource:
    self.start()
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def start(self) -> None:
    self._last_frame = time.monotonic()
    self._thread.start()

  def close(self, timeout: float = 2.0) -> None:
    """Stops decoding; a thread blocked in a read is left to its timeout (it is a daemon)."""
    self._stop.set()
    with self._cond:
      self._cond.notify_all()
    if self._thread.is_alive() and threading.current_thread() is not self._thread:
      self._thread.join(timeout)

  def _finish(self, closed: Closed) -> None:
    with self._cond:
      if self._closed is None:
        self._closed = closed
      self._cond.notify_all()

  def _push(self, frame: Frame) -> None:
    with self._cond:
      if not self.drops:
        while len(self._buffer) >= self.capacity and not self._stop.is_set():
          self._cond.wait(0.1)
      elif len(self._buffer) >= self.capacity:
        self._buffer.popleft()   # the oldest waiting frame
        self.dropped += 1
      frame.arrival = time.monotonic()
      self._buffer.append(frame)
      self.decoded += 1
      self._cond.notify_all()

  def _run(self) -> None:
    try:
      reader = decode.VideoReader(self.source, self.frame_size,
                                  open_options(self.source, self.stall_seconds))
    except decode.VideoDecodeError as e:
      self._finish(Closed("error", str(e)))
      return
    with reader:
      self.nominal_fps = reader.nominal_fps
      self.capacity = max(2, int(round(self.buffer_seconds * reader.nominal_fps)))
      frames = reader.frames()
      wall_start = None
      try:
        while not self._stop.is_set():
          start = time.perf_counter()
          item = next(frames, None)
          if item is None:
            self._finish(Closed("end", f"{self.source}: end of stream after "
                                       f"{self.decoded + self.dropped} frames"))
            return
          index, t, rgb = item
          spent = time.perf_counter() - start
          if self.realtime and not self.live:   # pace a file at its own frame times
            now = time.monotonic()
            wall_start = now - t if wall_start is None else wall_start
            while not self._stop.is_set() and wall_start + t - time.monotonic() > 0:
              self._stop.wait(min(0.05, wall_start + t - time.monotonic()))
          self._push(Frame(index, t, rgb, spent, 0.0))
      except decode.VideoDecodeError as e:
        self._finish(Closed("error", str(e)))

  def poll(self, timeout: float | None = None) -> tuple[list[Frame], Closed | None]:
    """(frames buffered since the last poll, why the source closed or None).

    Waits up to `timeout` s (default `stall_seconds`) for a first frame. With
    no frame for `stall_seconds` since the last one, the source counts as
    stalled: the result is ([], Closed("stall", ...)) and decoding stops.
    """
    timeout = self.stall_seconds if timeout is None else timeout
    deadline = time.monotonic() + timeout
    with self._cond:
      while not self._buffer and self._closed is None:
        now = time.monotonic()
        if now - self._last_frame >= self.stall_seconds:
          self._closed = Closed("stall", f"{self.source}: no frame for {self.stall_seconds:g} s "
                                         f"(after {self.decoded} frames); check the source")
          break
        if now >= deadline:
          return [], None
        self._cond.wait(min(deadline, self._last_frame + self.stall_seconds) - now)
      frames = list(self._buffer)
      self._buffer.clear()
      self._cond.notify_all()
      if frames:
        self._last_frame = time.monotonic()
        return frames, None
      closed = self._closed
    if closed.reason == "stall":
      self._stop.set()
    return [], closed
