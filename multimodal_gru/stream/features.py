"""Incremental features of a stream: each unit is encoded once and kept in a ring buffer.

Offline extraction (extract/pipeline.py) samples each window on grids that
start at the window's start. A stream keeps the same grids anchored at stream
time 0 instead, so that every unit is encoded once, whichever windows it
falls in:
  video segments: segment j = `segment_frames` targets (j * stride + i) / video.fps;
  image steps:    step j = the frame nearest to j / image.fps (repeated frames skipped);
  captions:       of the keyframes that `sampling.select_keyframes` picks among the
                  window's image steps, cached per (image step, segment); their text
                  features cached per caption.
A target is resolved to the nearest frame decoded before the hop that needs it
(`advance(until)`), and the trailing window [start, end) takes the segments
that lie in it and the steps whose targets do. When the window's start lies
on both grids (e.g. the offline windows [k W, (k + 1) W) at the stream times
(k + 1) W with W a multiple of the grid periods) the window's features are
those of offline extraction, hence predict's scores.

A window that holds no complete segment (a stream younger than one segment,
or segments longer than the hop) gets a provisional segment over its own
frames, as offline extraction does for short windows (not cached).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Sequence

import numpy as np

from input_pipeline import record_format
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import sampling
from multimodal_gru.stream import source as source_lib

_EPS = 1e-6
STAGES = ("decode", "video", "image", "captioner", "text")


@dataclasses.dataclass
class Segment:
  index: int             # on the stream's segment grid (-1: provisional)
  start: float           # time of its first target
  last: float            # time of its last target
  centre: float          # (first frame time + last frame time) / 2, as offline
  feature: np.ndarray    # [D_video]
  logits: np.ndarray     # [400] Kinetics logits (the "kinetics" captions)


@dataclasses.dataclass
class Step:
  index: int             # on the image grid
  target: float          # index / image.fps
  time: float            # time of its frame
  frame_index: int
  rgb: np.ndarray        # [S, S, 3] uint8, for captions and change scores
  change: float          # sampling.change_scores against the previous step
  feature: np.ndarray    # [D_image]


class StreamFeatures:
  """Ring buffers of the encoded units of one stream, with the run's extractor's encoders."""

  def __init__(self, extractor: pipeline.Extractor, name: str = "stream",
               text_cache_size: int = 4096):
    self.extractor, self.name = extractor, name
    c = extractor.config
    self.window_seconds = float(c.window_seconds)
    self.video_fps, self.image_fps = float(c.video.fps), float(c.image.fps)
    self.segment_frames = int(c.video.segment_frames)
    self.segment_stride = int(c.video.segment_stride)
    self.segment_seconds = (self.segment_frames - 1) / self.video_fps
    self._frames: collections.deque[source_lib.Frame] = collections.deque()
    self.segments: collections.deque[Segment] = collections.deque()
    self.steps: collections.deque[Step] = collections.deque()
    self._next_segment = self._next_step = 0
    self._captions: dict[tuple[int, int], str] = {}
    self._text: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    self._text_cache_size = text_cache_size
    self.timings = dict.fromkeys(STAGES, 0.0)   # seconds since the last `take_timings`

  def take_timings(self) -> dict[str, float]:
    out, self.timings = self.timings, dict.fromkeys(STAGES, 0.0)
    return out

  @property
  def last_time(self) -> float | None:
    return self._frames[-1].time if self._frames else None

  def frame_period(self) -> float:
    """Median period of the buffered frames (the tail window's end, as offline)."""
    times = [f.time for f in self._frames]
    return float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / 25.0

  def add(self, frames: Sequence[source_lib.Frame]) -> None:
    for f in frames:
      self._frames.append(f)
      self.timings["decode"] += f.decode_seconds

  def _segment_targets(self, j: int) -> np.ndarray:
    return (j * self.segment_stride + np.arange(self.segment_frames)) / self.video_fps

  def advance(self, until: float) -> None:
    """Encodes the segments and image steps whose targets all lie before `until` (s)."""
    frames = [f for f in self._frames if f.time < until]
    if not frames:
      return
    times = np.array([f.time for f in frames])
    e = self.extractor
    new = []
    while self._segment_targets(self._next_segment)[-1] < until - _EPS:
      new.append(sampling.nearest_frames(times, self._segment_targets(self._next_segment)))
      self._next_segment += 1
    if new:
      indices = np.stack(new)   # [N, segment_frames]
      start = time.perf_counter()
      feats, logits = e.video(np.stack([[frames[i].rgb for i in row] for row in indices]))
      self.timings["video"] += time.perf_counter() - start
      first = self._next_segment - len(new)
      for k, row in enumerate(indices):
        targets = self._segment_targets(first + k)
        self.segments.append(Segment(first + k, targets[0], targets[-1],
                                     (times[row[0]] + times[row[-1]]) / 2, feats[k], logits[k]))
    targets = []
    while self._next_step / self.image_fps < until - _EPS:
      targets.append(self._next_step)
      self._next_step += 1
    if targets:
      nearest = sampling.nearest_frames(times, np.asarray(targets) / self.image_fps)
      chosen, seen = [], self.steps[-1].frame_index if self.steps else None
      for j, i in zip(targets, nearest):
        if frames[i].index != seen:   # distinct frames only, as sampling.frames_at_rate
          chosen.append((j, frames[i]))
          seen = frames[i].index
      if chosen:
        rgbs = np.stack([f.rgb for _, f in chosen])
        previous = [self.steps[-1].rgb] if self.steps else []
        change = sampling.change_scores(np.concatenate([previous, rgbs]) if previous else rgbs)
        change = change[len(previous):]
        start = time.perf_counter()
        feats = e.image(rgbs)
        self.timings["image"] += time.perf_counter() - start
        for (j, f), score, x in zip(chosen, change, feats):
          self.steps.append(Step(j, j / self.image_fps, f.time, f.index, f.rgb, float(score), x))
    self._evict(until)

  def _evict(self, until: float) -> None:
    """Drops what no window ending at or after `until` can use."""
    start = until - self.window_seconds - _EPS
    while self.segments and self.segments[0].start < start:
      self.segments.popleft()
    while self.steps and self.steps[0].target < start:
      self.steps.popleft()
    # Frames: the window's (provisional segments) and those of pending targets, plus one
    # before them (a left neighbour for nearest-frame resolution).
    keep = min(start, self._segment_targets(self._next_segment)[0],
               self._next_step / self.image_fps)
    while len(self._frames) > 1 and self._frames[1].time < keep:
      self._frames.popleft()
    if self.steps:
      first = self.steps[0].index
      self._captions = {k: v for k, v in self._captions.items() if k[0] >= first}

  def _provisional_segment(self, start: float, end: float) -> list[Segment]:
    frames = [f for f in self._frames if start - _EPS <= f.time < end]
    if not frames:
      return []
    times = np.array([f.time for f in frames])
    indices, centres = sampling.video_segments(times, start, end, self.video_fps,
                                               self.segment_frames, self.segment_stride)
    t0 = time.perf_counter()
    feats, logits = self.extractor.video(
        np.stack([[frames[i].rgb for i in row] for row in indices]))
    self.timings["video"] += time.perf_counter() - t0
    return [Segment(-1, times[row[0]], times[row[-1]], c, x, l)
            for row, c, x, l in zip(indices, centres, feats, logits)]

  def window(self, start: float, end: float) -> record_format.Clip:
    """The trailing window [start, end) as a Clip: features [T_m, D_m], timestamps, captions.

    Call `advance(end)` first.
    """
    e, k = self.extractor, self.extractor.config.keyframes
    segments = [s for s in self.segments if s.start >= start - _EPS and s.last < end - _EPS]
    if not segments:
      segments = self._provisional_segment(start, end)
    steps = [s for s in self.steps if start - _EPS <= s.target < end - _EPS]
    d = e.dims
    video = (np.stack([s.feature for s in segments]) if segments
             else np.zeros((0, d["video"]), np.float32))
    image = (np.stack([s.feature for s in steps]) if steps
             else np.zeros((0, d["image"]), np.float32))
    captions, text = [], np.zeros((0, d["text"]), np.float32)
    key_times = np.zeros((0,))
    if steps and segments:
      times = np.array([s.time for s in steps])
      scores = np.array([s.change for s in steps])
      scores[0] = np.inf   # the window's first step, as offline
      keys = sampling.select_keyframes(times, scores, k.max_count, k.threshold,
                                       k.min_gap_seconds, k.max_gap_seconds)
      key_segments = sampling.nearest_frames(np.array([s.centre for s in segments]), times[keys])
      captions = self._captions_of([steps[i] for i in keys], [segments[j] for j in key_segments])
      text = self._text_of(captions)
      key_times = times[keys]
    return record_format.Clip(
        clip_id=f"{self.name}-t{end:09.3f}", source=self.name,
        features={"video": video, "image": image, "text": text},
        timestamps={"video": np.array([s.centre for s in segments]),
                    "image": np.array([s.time for s in steps]), "text": key_times},
        captions=captions, video_id=self.name,
        frame_index=np.array([s.frame_index for s in steps], np.int64))

  def _captions_of(self, steps: list[Step], segments: list[Segment]) -> list[str]:
    keys = [(s.index, g.index) for s, g in zip(steps, segments)]
    todo = [i for i, key in enumerate(keys) if key[1] < 0 or key not in self._captions]
    if todo:
      start = time.perf_counter()
      made = self.extractor.captioner(np.stack([steps[i].rgb for i in todo]),
                                      np.stack([segments[i].logits for i in todo]))
      self.timings["captioner"] += time.perf_counter() - start
      fresh = dict(zip(todo, made))
      for i, caption in fresh.items():
        if keys[i][1] >= 0:
          self._captions[keys[i]] = caption
    else:
      fresh = {}
    return [fresh.get(i) or self._captions[key] for i, key in enumerate(keys)]

  def _text_of(self, captions: list[str]) -> np.ndarray:
    todo = list(dict.fromkeys(c for c in captions if c not in self._text))
    if todo:
      start = time.perf_counter()
      for c, x in zip(todo, self.extractor.text(todo)):
        self._text[c] = x
      self.timings["text"] += time.perf_counter() - start
      while len(self._text) > self._text_cache_size:
        self._text.popitem(last=False)
    for c in captions:
      self._text.move_to_end(c)
    return np.stack([self._text[c] for c in captions])

  def warm_up(self, frame_size: int, hop_seconds: float) -> float:
    """Compiles every encoder at the batch shapes a hop uses; returns the seconds spent."""
    per_hop = {"video": int(np.ceil(hop_seconds * self.video_fps / self.segment_stride)) + 1,
               "image": int(np.ceil(hop_seconds * self.image_fps)) + 1,
               "captions": int(self.extractor.config.keyframes.max_count)}
    return self.extractor.warm_up(per_hop, frame_size)
