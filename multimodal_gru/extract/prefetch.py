"""Decoding and frame sampling in background threads, ahead of the encoders.

`decoded_videos` yields the videos in order, each with an iterator over its
sampled windows; `threads` workers decode videos i, i + threads, ... each into
its own bounded queue of `depth` windows, so the encoders never wait on PyAV
while memory stays bounded (at most threads x (depth + 1) windows of frames,
whatever the videos' length). PyAV and numpy release the GIL while they work.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Mapping, Sequence

from multimodal_gru.extract import decode
from multimodal_gru.extract import pipeline

_WINDOW, _END, _ERROR = range(3)
_POLL_S = 0.2


class VideoWindows:
  """The sampled windows of one video as its worker produces them.

  Iterating raises the worker's exception (e.g. `decode.VideoDecodeError`) at
  the point where decoding failed; `timeline` holds every frame's time once the
  iteration has ended.
  """

  def __init__(self, video: decode.VideoFile, items: queue.Queue):
    self.video, self._items = video, items
    self.timeline: list[float] | None = None
    self._ended = False

  def __iter__(self) -> Iterator[pipeline.SampledWindow]:
    while not self._ended:
      kind, value = self._items.get()
      if kind == _WINDOW:
        yield value
        continue
      self._ended = True
      if kind == _ERROR:
        raise value
      self.timeline = value

  def drain(self) -> None:
    """Skips the rest of this video (after the consumer failed on one of its windows)."""
    if not self._ended:
      try:
        for _ in self:
          pass
      except Exception:  # pylint: disable=broad-except  # the video already failed
        pass


def decoded_videos(extractor: pipeline.Extractor, videos: Sequence[decode.VideoFile],
                   image_sources: Mapping[decode.VideoFile, pipeline.ImageSource] | None = None,
                   threads: int = 1, depth: int = 2) -> Iterator[VideoWindows]:
  """`VideoWindows` of each video, in order; decoding runs ahead in `threads` threads.

  Each yielded video must be iterated to its end (or the generator closed)
  before the next one is taken.
  """
  threads = max(1, min(threads, len(videos)))
  queues = [queue.Queue(maxsize=max(1, depth)) for _ in range(threads)]
  stop = threading.Event()

  def put(q: queue.Queue, item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=_POLL_S)
        return True
      except queue.Full:
        pass
    return False

  def work(k: int) -> None:
    for video in videos[k::threads]:
      timeline: list[float] = []
      try:
        source = image_sources[video] if image_sources is not None else None
        for sampled in extractor.sampled_windows(video.path, source, timeline):
          if not put(queues[k], (_WINDOW, sampled)):
            return
        item = (_END, timeline)
      except Exception as e:  # pylint: disable=broad-except  # reported with the video
        item = (_ERROR, e)
      if not put(queues[k], item):
        return

  workers = [threading.Thread(target=work, args=(k,), daemon=True, name=f"decode-{k}")
             for k in range(threads)]
  for w in workers:
    w.start()
  try:
    for i, video in enumerate(videos):
      yield VideoWindows(video, queues[i % threads])
  finally:
    stop.set()
    for w in workers:
      w.join()
