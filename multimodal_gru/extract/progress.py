"""Progress lines a person reads: per process and, on process 0, over all processes.

  process 1/2: videos 12/40 (1 failed) | 243.1 frames/s | encoders busy 94% | ETA 0h21m10s
  all 2 processes: videos 25/80 (1 failed) | 480.7 frames/s | ETA 0h22m03s

Rates count from `start` (after model loading and the encoders' warm-up) to
`finish`. The ETA scales the elapsed time by the remaining work over the work
done in this run (seconds of video, from `processes.video_costs`; videos found
in the cache took no time). Every process publishes its counters in
JAX's key-value store after each video; process 0 sums them.
"""

from __future__ import annotations

import dataclasses
import json
import time

from absl import logging

from multimodal_gru.extract import processes as processes_lib


def duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


@dataclasses.dataclass
class Counters:
  """One process's work: videos and their cost (s of video) in its share."""
  videos: int = 0            # in the share
  cost: float = 0.0
  done: int = 0              # finished (extracted, cached or failed)
  done_cost: float = 0.0
  cached_cost: float = 0.0   # of done_cost, found in the cache (no time spent in this run)
  failed: int = 0
  frames: int = 0            # decoded frames extracted in this run
  elapsed_s: float = 0.0
  busy_s: float = 0.0        # in the encoders

  def line(self, who: str) -> str:
    rate = self.frames / self.elapsed_s if self.elapsed_s else 0.0
    line = f"{who}: videos {self.done}/{self.videos} ({self.failed} failed) | {rate:.1f} frames/s"
    if self.busy_s:
      line += f" | encoders busy {self.busy_s / max(self.elapsed_s, 1e-9):.0%}"
    left, worked = self.cost - self.done_cost, self.done_cost - self.cached_cost
    if worked > 0 and left > 0:
      line += f" | ETA {duration(self.elapsed_s * left / worked)}"
    elif left <= 0:
      line += " | done"
    return line


class Progress:
  """Counts this process's videos; logs its line, and on process 0 the overall one."""

  def __init__(self, videos: int, cost: float, processes: processes_lib.Processes | None = None,
               overall_every_s: float = 30.0):
    self.processes = processes or processes_lib.Processes()
    self.counters = Counters(videos, cost)
    self.overall_every_s, self._last_overall = overall_every_s, 0.0
    self._start, self._end = time.perf_counter(), None

  def start(self) -> None:
    """Starts the clock of the rates and the ETA (after model loading and compilation)."""
    self._start, self._end = time.perf_counter(), None

  def finish(self) -> None:
    """Stops the clock at the end of the extraction loop (later reports keep its rates)."""
    self._end = time.perf_counter()

  def skipped(self, videos: int, cost: float) -> None:
    """Videos found in the cache count as done (no frames in this run)."""
    self.counters.done += videos
    self.counters.done_cost += cost
    self.counters.cached_cost += cost

  def video_done(self, cost: float, frames: int, busy_s: float, failed: bool = False) -> None:
    c = self.counters
    c.done += 1
    c.done_cost += cost
    c.failed += failed
    c.frames += frames
    c.busy_s += busy_s
    self.report()

  def report(self, force_overall: bool = False) -> None:
    c = self.counters
    c.elapsed_s = (self._end or time.perf_counter()) - self._start
    logging.info("%s", c.line(self.processes.name))
    if self.processes.count == 1:
      return
    self.processes.publish("progress", json.dumps(dataclasses.asdict(c)))
    now = time.perf_counter()
    if self.processes.index == 0 and (force_overall or
                                      now - self._last_overall >= self.overall_every_s):
      self._last_overall = now
      logging.info("%s", self.overall().line(f"all {self.processes.count} processes"))

  def overall(self) -> Counters:
    """The sum over the processes that have published (elapsed: the longest)."""
    shares = [Counters(**json.loads(v)) for v in self.processes.collect("progress").values()]
    total = Counters()
    for s in shares:
      for f in ("videos", "cost", "done", "done_cost", "cached_cost", "failed", "frames"):
        setattr(total, f, getattr(total, f) + getattr(s, f))
    total.elapsed_s = max((s.elapsed_s for s in shares), default=0.0)
    return total

  @property
  def busy_fraction(self) -> float:
    return self.counters.busy_s / max(self.counters.elapsed_s, 1e-9)
