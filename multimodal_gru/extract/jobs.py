"""Extracting many videos: resumable per-video cache, progress, bad files skipped.

Each finished video is saved as `{out}/extract_cache/{config fingerprint}/{key}.npz`
(its windows and the times of all its frames); a rerun with the same config
skips it. Undecodable or failing videos are logged and reported, never fatal.
Splits are then written from the cache: the shards, and per video the frame
file of `input_pipeline.video_frames`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import traceback
import uuid
from typing import Callable, Container, Iterable, Iterator, Mapping, Sequence

from absl import logging
import ml_collections
import numpy as np

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import video_frames
from multimodal_gru.extract import decode
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import prefetch
from multimodal_gru.extract import progress as progress_lib

MODALITIES = record_format.MODALITIES
# Fields that do not change the features, left out of the cache fingerprint.
_NOT_IN_FINGERPRINT = ("num_shards", "batch_size", "frame_count_tolerance", "decode_threads",
                       "prefetch_windows", "warm_up")
_CACHE_VERSION = 2   # 2: timelines and video metadata


def fingerprint(extractor: pipeline.Extractor) -> str:
  """Changes with everything that changes the features, incl. a captioner fallback."""
  def strip(d):
    return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items()
            if k not in _NOT_IN_FINGERPRINT
            and not (k == "compute_dtype" and v == "float32")}   # caches made before the field
  key = {"config": strip(extractor.config.to_dict()), "captions": extractor.captioner.source,
         "version": _CACHE_VERSION}
  return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def cache_dir(out_dir: str, extractor: pipeline.Extractor) -> str:
  return os.path.join(out_dir, "extract_cache", fingerprint(extractor))


def cache_file(cache: str, video: decode.VideoFile) -> str:
  digest = hashlib.sha1(os.path.abspath(video.path).encode()).hexdigest()[:8]
  return os.path.join(cache, re.sub(r"[^\w.-]+", "_", video.video_id) + f"-{digest}.npz")


def save_windows(path: str, windows: Sequence[pipeline.Window], dtype: str,
                 timeline: pipeline.Timeline) -> None:
  """Writes a video's windows and timeline atomically (features stored in `dtype`)."""
  arrays = {"num_windows": np.int64(len(windows)), "timeline": timeline.times}
  for k, w in enumerate(windows):
    c = w.clip
    arrays.update({f"{k}/id": np.str_(c.clip_id), f"{k}/source": np.str_(c.source),
                   f"{k}/video_id": np.str_(c.video_id),
                   f"{k}/captions": np.asarray(c.captions, np.str_),
                   f"{k}/index": np.int64(w.index), f"{k}/span": np.asarray([w.start, w.end]),
                   f"{k}/frame_range": np.asarray(w.frame_range),
                   f"{k}/image_frames": w.image_frames})
    for m in c.features:
      arrays[f"{k}/{m}"] = c.features[m].astype(dtype)
      arrays[f"{k}/{m}_t"] = c.timestamps[m]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"   # unique: several processes write
  try:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)   # atomic: a reader or a rerun sees the whole file or none
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_timeline(path: str) -> pipeline.Timeline:
  with np.load(path) as z:
    return pipeline.Timeline(z["timeline"])


def load_windows(path: str) -> list[pipeline.Window]:
  """The windows of a cached video; their clips carry the video metadata."""
  with np.load(path) as z:
    windows = []
    timeline = pipeline.Timeline(z["timeline"])
    for k in range(int(z["num_windows"])):
      modalities = [m for m in MODALITIES if f"{k}/{m}" in z]
      clip = record_format.Clip(
          clip_id=str(z[f"{k}/id"]), source=str(z[f"{k}/source"]),
          features={m: z[f"{k}/{m}"].astype(np.float32) for m in modalities},
          timestamps={m: z[f"{k}/{m}_t"] for m in modalities},
          captions=[str(s) for s in z[f"{k}/captions"]],
          video_id=str(z[f"{k}/video_id"]), frame_index=z[f"{k}/image_frames"])
      clip = pipeline.with_video_meta(clip, timeline)
      start, end = z[f"{k}/span"].tolist()
      windows.append(pipeline.Window(clip, int(z[f"{k}/index"]), start, end,
                                     tuple(z[f"{k}/frame_range"].tolist()),
                                     z[f"{k}/image_frames"]))
  return windows


@dataclasses.dataclass
class RunReport:
  done: list[decode.VideoFile]          # extracted now or found in the cache
  failed: dict[str, str]                # video_id -> why
  extracted: int = 0                    # of `done`, extracted in this run
  frames: int = 0                       # decoded frames of the videos extracted now
  elapsed_s: float = 0.0
  busy_s: float = 0.0                   # in the encoders

  @property
  def busy_fraction(self) -> float:
    return self.busy_s / self.elapsed_s if self.elapsed_s else 0.0


def run(extractor: pipeline.Extractor, videos: Sequence[decode.VideoFile], cache: str,
        image_sources: Mapping[decode.VideoFile, pipeline.ImageSource] | None = None,
        progress: progress_lib.Progress | None = None,
        costs: Sequence[float] | None = None) -> RunReport:
  """Extracts every video not yet in `cache`; logs progress (frames/s, ETA, failures).

  Decoding and sampling run ahead in background threads (config.decode_threads,
  config.prefetch_windows). `image_sources` gives the image stream of each video
  when config.image.source is not "frames" (e.g. Aff-Wild2's face crops).
  `costs` (s of video per video, for the ETA) default to 1 per video.
  """
  costs = [1.0] * len(videos) if costs is None else list(costs)
  progress = progress or progress_lib.Progress(len(videos), sum(costs))
  cached = [os.path.exists(cache_file(cache, v)) for v in videos]
  report = RunReport(done=[v for v, c in zip(videos, cached) if c], failed={})
  todo = [(v, cost) for v, c, cost in zip(videos, cached, costs) if not c]
  progress.skipped(len(report.done), sum(cost for c, cost in zip(cached, costs) if c))
  if report.done:
    logging.info("%d of %d videos already extracted in %s; skipping them.", len(report.done),
                 len(videos), cache)
  c = extractor.config
  if todo and c.get("warm_up", True):
    logging.info("Compiled the encoders for every batch shape of a window in %.1f s.",
                 extractor.warm_up())
  stream = prefetch.decoded_videos(extractor, [v for v, _ in todo], image_sources,
                                   c.get("decode_threads", 1), c.get("prefetch_windows", 2))
  progress.start()
  started = time.perf_counter()
  try:
    for (video, cost), items in zip(todo, stream):
      _extract_one(extractor, video, cost, items, cache, report, progress)
  finally:
    stream.close()   # stops the decoding threads (also on KeyboardInterrupt)
  progress.finish()
  report.elapsed_s = time.perf_counter() - started
  if report.failed:
    logging.warning("%d videos failed:\n%s", len(report.failed), "\n".join(failure_list(report)))
  return report


def _extract_one(extractor: pipeline.Extractor, video: decode.VideoFile, cost: float,
                 items: prefetch.VideoWindows, cache: str, report: RunReport,
                 progress: progress_lib.Progress) -> None:
  """Encodes one video's prefetched windows into the cache; a failure is recorded."""
  c = extractor.config
  busy, windows = 0.0, []
  try:
    for sampled in items:
      start = time.perf_counter()
      windows.append(extractor.encode(sampled, video.video_id, video.path))
      busy += time.perf_counter() - start
    timeline = pipeline.Timeline(np.asarray(items.timeline, np.float64))
    for w in windows:
      w.clip = pipeline.with_video_meta(w.clip, timeline)
    save_windows(cache_file(cache, video), windows, c.features_dtype, timeline)
  except Exception as e:  # pylint: disable=broad-except  # one bad file never ends a long job
    reason = str(e) if isinstance(e, decode.VideoDecodeError) else f"{type(e).__name__}: {e}"
    items.drain()
    report.failed[video.video_id] = reason
    trace = "" if isinstance(e, decode.VideoDecodeError) else "\n" + traceback.format_exc()
    logging.error("Skipping %s: %s%s", video.path, reason, trace)
    report.busy_s += busy
    progress.video_done(cost, 0, busy, failed=True)
    return
  frames = timeline.num_frames
  report.done.append(video)
  report.extracted += 1
  report.frames += frames
  report.busy_s += busy
  logging.info("%s: %d windows, %d frames", video.video_id, len(windows), frames)
  progress.video_done(cost, frames, busy)


def failure_list(report: RunReport, video_ids: Container[str] | None = None) -> list[str]:
  """"video_id: why" lines (a list, so dataset_info.json merging never keeps stale ones)."""
  return [f"{k}: {v}" for k, v in sorted(report.failed.items())
          if video_ids is None or k in video_ids]


def cached_windows(cache: str, videos: Iterable[decode.VideoFile]
                   ) -> Iterator[tuple[decode.VideoFile, pipeline.Window]]:
  for video in videos:
    for window in load_windows(cache_file(cache, video)):
      yield video, window


class SplitStats:
  """Counts, steps per modality and label statistics of a split's clips."""

  def __init__(self):
    self.clips = 0
    self.steps = {m: [] for m in MODALITIES}
    self.classes, self.step_classes = {}, {}
    self.va, self.image_steps = [], 0

  def add(self, clip: record_format.Clip) -> record_format.Clip:
    self.clips += 1
    for m, x in clip.features.items():
      self.steps[m].append(len(x))
    valid = np.ones(len(clip.features["image"]), bool) if clip.valid is None else clip.valid
    self.image_steps += len(valid)
    if clip.label is not None:
      self.classes[clip.label] = self.classes.get(clip.label, 0) + 1
    if clip.step_class is not None:
      for c in clip.step_class[valid].tolist():
        self.step_classes[c] = self.step_classes.get(c, 0) + 1
    if clip.va is not None:
      self.va.append(clip.va[valid])
    return clip

  def state(self) -> tuple[dict, np.ndarray]:
    """(JSON-able counters, [V, 2] valid valence-arousal steps): what `merged` needs."""
    va = np.concatenate(self.va) if self.va else np.zeros((0, 2), np.float32)
    return {"clips": self.clips, "steps": self.steps, "image_steps": self.image_steps,
            "classes": {str(k): v for k, v in self.classes.items()},
            "step_classes": {str(k): v for k, v in self.step_classes.items()},
            "has_va": bool(self.va)}, va

  @classmethod
  def merged(cls, states: Iterable[tuple[dict, np.ndarray]]) -> SplitStats:
    """The stats of the union of the splits whose `state()`s are given (e.g. per process)."""
    out = cls()
    for counters, va in states:
      out.clips += counters["clips"]
      out.image_steps += counters["image_steps"]
      for m, s in counters["steps"].items():
        out.steps[m].extend(s)
      for mine, theirs in ((out.classes, counters["classes"]),
                           (out.step_classes, counters["step_classes"])):
        for k, v in theirs.items():
          mine[int(k)] = mine.get(int(k), 0) + v
      if counters["has_va"]:
        out.va.append(np.asarray(va))
    return out

  def summary(self) -> dict:
    out = {"clips": self.clips, "steps": {
        m: {"min": int(np.min(s)), "mean": round(float(np.mean(s)), 2), "max": int(np.max(s))}
        for m, s in self.steps.items() if s}}
    labels = {}
    if self.classes:
      labels["clip_classes"] = {str(k): v for k, v in sorted(self.classes.items())}
    if self.step_classes:
      labels["step_classes"] = {str(k): v for k, v in sorted(self.step_classes.items())}
    if self.va:
      va = np.concatenate(self.va)
      labels["valid_steps"] = len(va)
      labels["valid_fraction"] = round(len(va) / max(1, self.image_steps), 4)
      for i, name in enumerate(("valence", "arousal")):
        if len(va):
          labels[name] = {"mean": round(float(va[:, i].mean()), 4),
                          "std": round(float(va[:, i].std()), 4),
                          "min": round(float(va[:, i].min()), 4),
                          "max": round(float(va[:, i].max()), 4)}
    if labels:
      out["labels"] = labels
    return out


def write_split(out_dir: str, split: str, cache: str, videos: Sequence[decode.VideoFile],
                to_clips: Callable[[decode.VideoFile, pipeline.Window], list[record_format.Clip]],
                config: ml_collections.ConfigDict,
                frame_labels: Mapping[decode.VideoFile, Mapping[str, np.ndarray | None]]
                | None = None, stats: SplitStats | None = None,
                num_shards: int | None = None) -> dict:
  """Writes the clips `to_clips` makes of each cached window of `videos` (may be none).

  Also writes the split's frame files (`input_pipeline.video_frames`): per video
  and scored id in `frame_labels[video]` ({id: per-frame labels or None}; default
  {video.video_id: None}), the video's frame times and those labels.
  Returns the split's stats for dataset_info.json (also gathered in `stats` if
  given). `num_shards` defaults to config.num_shards.
  """
  def clips():
    for video, window in cached_windows(cache, videos):
      yield from to_clips(video, window)

  count = sum(1 for _ in clips())
  stats = SplitStats() if stats is None else stats
  paths = shards.write_split(out_dir, split, (stats.add(c) for c in clips()),
                             max(1, min(num_shards or config.num_shards, count)),
                             config.features_dtype)
  def frames():
    for video in videos:
      times = load_timeline(cache_file(cache, video)).times
      tracks = {video.video_id: None} if frame_labels is None else frame_labels[video]
      for video_id, labels in tracks.items():
        yield video_frames.VideoFrames(video_id, times, labels)

  video_frames.write_split(out_dir, split, frames())
  return {**stats.summary(), "videos": len(videos), "shards": len(paths)}
