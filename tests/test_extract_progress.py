"""Progress lines: rates from `start` to `finish`, ETA from this run's work, overall sums."""

import json

import pytest

from multimodal_gru.extract import progress as progress_lib


class Clock:
  def __init__(self, now: float = 1000.0):
    self.now = now

  def __call__(self) -> float:
    return self.now


class FakeProcesses:
  """Two processes' key-value store as `processes.Processes` exposes it."""

  def __init__(self, index: int, store: dict):
    self.index, self.count, self.store = index, 2, store
    self.name = f"process {index}/2"

  def publish(self, key: str, value: str) -> None:
    self.store[(key, self.index)] = value

  def collect(self, key: str) -> dict[int, str]:
    return {i: v for (k, i), v in self.store.items() if k == key}


@pytest.fixture
def clock(monkeypatch):
  c = Clock()
  monkeypatch.setattr(progress_lib.time, "perf_counter", c)
  return c


def test_rates_start_after_warm_up_and_eta_ignores_cached_videos(clock):
  p = progress_lib.Progress(videos=4, cost=40.0)
  clock.now += 30.0          # model loading and warm-up: not in the rates
  p.start()
  p.skipped(1, 10.0)         # cached: no time spent on it
  clock.now += 10.0
  p.video_done(cost=10.0, frames=250, busy_s=9.0)
  assert p.counters.line("process 0/1") == (
      "process 0/1: videos 2/4 (0 failed) | 25.0 frames/s | encoders busy 90% | ETA 0h00m20s")
  clock.now += 10.0
  p.video_done(cost=10.0, frames=0, busy_s=1.0, failed=True)
  clock.now += 10.0
  p.video_done(cost=10.0, frames=250, busy_s=9.0)
  p.finish()
  clock.now += 100.0         # writing the split: not in the rates either
  p.report()
  assert p.counters.elapsed_s == 30.0
  assert p.counters.line("process 0/1") == (
      "process 0/1: videos 4/4 (1 failed) | 16.7 frames/s | encoders busy 63% | done")


def test_overall_sums_the_processes_and_takes_the_longest_clock(clock):
  store = {}
  first = progress_lib.Progress(2, 20.0, FakeProcesses(0, store), overall_every_s=1e9)
  second = progress_lib.Progress(3, 30.0, FakeProcesses(1, store), overall_every_s=1e9)
  first.start(), second.start()
  clock.now += 10.0
  first.video_done(10.0, 300, 9.0)
  clock.now += 10.0
  second.video_done(10.0, 200, 9.0)
  second.video_done(10.0, 200, 9.0)
  total = first.overall()
  assert json.loads(store[("progress", 1)])["done"] == 2
  assert (total.videos, total.done, total.frames, total.elapsed_s) == (5, 3, 700, 20.0)
  assert total.line("all 2 processes") == (
      "all 2 processes: videos 3/5 (0 failed) | 35.0 frames/s | ETA 0h00m13s")
