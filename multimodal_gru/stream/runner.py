"""The hop loop: frames in, one JSON record per hop out, alerts, a final timeline plot.

Hop k ends at stream time t_k = k * hop_seconds. When the first frame at or
after t_k arrives (or the source closes), the new segments / steps before t_k
are encoded (features.py) and the model scores the trailing window
[max(0, t_k - window_seconds), t_k), padded to the run's max_steps as in
training (`predict.Predictor`). A hop record (event "hop"):

  hop, stream_time (t_k, s), wall_time (unix s), window [start, end],
  num_steps {video, image, text}, captions (the window's),
  violence_probability + probabilities [K] of the window   (regression: valence, arousal),
  steps: [{time, violence_probability, probabilities}] the image steps of the last hop,
  latency_ms {decode, video, image, captioner, text, model, total}: time per stage spent
      on this hop (decode: decoding the hop's frames, in the decoder thread),
  lag_s: from the arrival of the frame that closed the hop to the record,
  dropped_frames: frames dropped so far by the source's rule (source.py),
  alert: null, or {state: "start" | "ongoing" | "end", since, probability}.

An alert starts when the window's violence probability has been >= threshold
at every hop for min_seconds (each hop counting hop_seconds) and ends at the
first hop below. When the source closes, a last hop ends one frame period
after the last frame (as offline extraction ends a video's last window), and
a record with event "close" says why (end | stall | error) and sums up.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from absl import logging
import numpy as np

from multimodal_gru import predict
from multimodal_gru.stream import features as features_lib
from multimodal_gru.stream import source as source_lib

_EPS = 1e-6


class Thumbnails:
  """At most `limit` frames spread over the stream, for the timeline plot (bounded memory)."""

  def __init__(self, limit: int = 48, interval: float = 0.5):
    self.limit, self.interval = limit, interval
    self.times: list[float] = []
    self.frames: list[np.ndarray] = []

  def add(self, t: float, rgb: np.ndarray) -> None:
    if self.times and t - self.times[-1] < self.interval:
      return
    self.times.append(t)
    self.frames.append(rgb)
    if len(self.times) > self.limit:   # keep every other one, twice as sparse from now on
      self.times, self.frames, self.interval = self.times[::2], self.frames[::2], 2 * self.interval

  def nearest(self, times) -> list[np.ndarray | None]:
    if not self.times:
      return [None] * len(times)
    return [self.frames[int(np.argmin(np.abs(np.asarray(self.times) - t)))] for t in times]


class Alerts:
  """Violence probability >= threshold for min_seconds (see the module doc)."""

  def __init__(self, threshold: float, min_seconds: float, hop_seconds: float):
    self.threshold, self.min_seconds, self.hop = threshold, min_seconds, hop_seconds
    self.since: float | None = None
    self.active = False
    self.intervals: list[dict[str, float]] = []

  def update(self, t: float, p: float) -> dict[str, Any] | None:
    if p >= self.threshold:
      self.since = t - self.hop if self.since is None else self.since
      if t - self.since >= self.min_seconds - _EPS:
        state = "ongoing" if self.active else "start"
        if not self.active:
          self.intervals.append({"start": self.since, "end": t})
        self.active = True
        self.intervals[-1]["end"] = t
        return {"state": state, "since": self.since, "probability": p}
      return None
    was, self.active, self.since = self.active, False, None
    return {"state": "end", "at": t - self.hop, "probability": p} if was else None


class Streamer:
  """A trained run ready to score streams (encoders, parameters, compiled model)."""

  def __init__(self, workdir: str, model_paths=None, hop_seconds: float = 1.0,
               threshold: float = 0.5, min_seconds: float = 2.0):
    if hop_seconds <= 0:
      raise ValueError(f"--hop_seconds must be > 0, got {hop_seconds}")
    self.config = predict.load_run_config(workdir)
    self.extractor = predict.extractor_for_run(self.config, model_paths)
    params, self.checkpoint_step = predict.restore_params(workdir, self.config)
    self.predictor = predict.Predictor(self.config, params, batch_size=1)
    self.workdir = workdir
    self.task = self.config.task
    self.hop = float(hop_seconds)
    self.threshold, self.min_seconds = threshold, min_seconds
    self.window_seconds = float(self.extractor.config.window_seconds)
    self.frame_size = int(self.extractor.config.frame_size)
    self._warm = None

  def warm_up(self) -> float:
    """Compiles the encoders and the model once (before a live source starts)."""
    if self._warm is None:
      feats = features_lib.StreamFeatures(self.extractor)
      seconds = feats.warm_up(self.frame_size, self.hop)
      start = time.perf_counter()
      self.predictor([feats.window(0.0, 0.0)])
      self._warm = seconds + time.perf_counter() - start
    return self._warm

  def open(self, source: str, realtime: bool = False, buffer_seconds: float = 2.0,
           stall_seconds: float = 10.0) -> source_lib.FrameSource:
    source_lib.check_source(source)
    return source_lib.FrameSource(source, self.frame_size, realtime, buffer_seconds,
                                  stall_seconds)

  def run(self, frames: source_lib.FrameSource, emit: Callable[[dict], None],
          png_path: str | None = None) -> dict[str, Any]:
    """Streams `frames` (not yet started) to `emit`, one dict per hop, then the close record.

    Returns the close record; writes the timeline plot to `png_path` if given.
    """
    self.warm_up()
    name = frames.source
    feats = features_lib.StreamFeatures(self.extractor, name)
    alerts = Alerts(self.threshold, self.min_seconds, self.hop)
    thumbs = Thumbnails()
    plot: dict[str, Any] = {"task": self.task, "windows": [], "timeline": []}
    state = {"hops": 0, "last_end": 0.0, "last_arrival": time.monotonic(),
             "last_step_frame": -1}
    wall_start = time.monotonic()

    def hop(end: float, trigger_arrival: float) -> None:
      start_wall = time.perf_counter()
      feats.advance(end)
      window_start = max(0.0, end - self.window_seconds)
      clip = feats.window(window_start, end)
      model_start = time.perf_counter()
      out = self.predictor([clip])
      model_s = time.perf_counter() - model_start
      clip_key, step_key = (("logits", "step_logits") if self.task == "classification"
                            else ("va", "step_va"))
      scores = predict.score_fields(self.task, out[clip_key][0])
      t_max = self.config.data.max_steps["image"]
      steps = [{"time": float(t), **predict.score_fields(self.task, out[step_key][0, i])}
               for i, (t, f) in enumerate(zip(clip.timestamps["image"][:t_max], clip.frame_index))
               if f > state["last_step_frame"]]   # the steps new since the last hop
      if len(clip.frame_index):
        state["last_step_frame"] = max(state["last_step_frame"], int(clip.frame_index[-1]))
      timings = feats.take_timings()
      alert = (alerts.update(end, scores["violence_probability"])
               if self.task == "classification" else None)
      if alert and alert["state"] == "start":
        logging.warning("%s: ALERT violence probability >= %.2f since %.1f s (%.2f at %.1f s)",
                        name, self.threshold, alert["since"], alert["probability"], end)
      state["hops"] += 1
      record = {
          "event": "hop", "hop": state["hops"], "stream_time": round(end, 6),
          "wall_time": time.time(), "window": [round(window_start, 6), round(end, 6)],
          "num_steps": {m: int(len(x)) for m, x in clip.features.items()},
          "captions": clip.captions, **scores, "steps": steps,
          "latency_ms": {**{k: round(1000 * v, 3) for k, v in timings.items()},
                         "model": round(1000 * model_s, 3),
                         "total": round(1000 * (time.perf_counter() - start_wall), 3)},
          "lag_s": round(time.monotonic() - trigger_arrival, 4),
          "dropped_frames": frames.dropped, "alert": alert}
      emit(record)
      plot["windows"].append({"start": state["last_end"], "end": end, **scores})
      plot["timeline"].extend({**s, "window": state["hops"]} for s in steps)
      state["last_end"] = end

    frames.start()
    closed = None
    try:
      next_end = self.hop
      while closed is None:
        batch, closed = frames.poll()
        for f in batch:
          while f.time >= next_end - _EPS:   # f closes hop(s); every earlier frame is in
            hop(next_end, f.arrival)
            next_end += self.hop
          feats.add([f])
          thumbs.add(f.time, f.rgb)
          state["last_arrival"] = f.arrival
      last = feats.last_time
      if last is not None:
        end = last + feats.frame_period()
        if end > state["last_end"] + _EPS:
          hop(end, state["last_arrival"])
    finally:
      frames.close()
    wall = time.monotonic() - wall_start
    stream_seconds = state["last_end"]
    record = {"event": "close", "reason": closed.reason, "message": closed.message,
              "hops": state["hops"], "stream_seconds": round(stream_seconds, 3),
              "wall_seconds": round(wall, 3),
              "realtime_factor": round(stream_seconds / wall, 3) if wall > 0 else None,
              "frames_decoded": frames.decoded, "dropped_frames": frames.dropped,
              "drop_rule": ("drop the oldest buffered frame at a full buffer of "
                            f"{frames.capacity} frames" if frames.drops else "none (file)"),
              "alerts": alerts.intervals, "warmup_seconds": round(self._warm, 3),
              "run": self.workdir, "checkpoint_step": self.checkpoint_step,
              "timeline_png": None}
    if png_path and plot["windows"]:
      predict.plot_prediction(plot, name, png_path, frames_at=thumbs.nearest)
      record["timeline_png"] = png_path
    emit(record)
    return record
