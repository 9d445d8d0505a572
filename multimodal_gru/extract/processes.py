"""The processes of a (multi-process) extraction: who does what, and meeting points.

`current()` starts jax.distributed when the launch environment asks for it
(`multimodal_gru.distributed.maybe_initialize`: local_multiprocess.sh, SLURM,
TPU pods) and returns this process's place. Barriers and the small messages
between processes (progress counters) go through JAX's coordination service,
the key-value store that jax.distributed runs; no other scheduler is involved.

`balanced_shares` gives each process a disjoint share of the videos with about
equal work: greedy longest-processing-time over each video's cost (its probed
duration; its file size, scaled to seconds, where the container has none).
Every process computes the same shares from the same list, so a rerun assigns
each video to the same process as before and every process finds its finished
videos in the cache.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
from typing import Sequence

import av
import numpy as np

from multimodal_gru import distributed
from multimodal_gru.extract import decode

_KEY_PREFIX = "mgru_extract"
DEFAULT_BARRIER_TIMEOUT_S = 7 * 24 * 3600   # a barrier waits for the slowest share


@dataclasses.dataclass(frozen=True)
class Processes:
  """This process's index among `count` processes."""
  index: int = 0
  count: int = 1
  barrier_timeout_s: float = DEFAULT_BARRIER_TIMEOUT_S
  _local: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)  # 1 process

  @property
  def name(self) -> str:
    return f"process {self.index}/{self.count}"

  def _client(self):
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    client = jax_distributed.global_state.client
    if client is None:
      raise RuntimeError(f"{self.name}: jax.distributed is not initialized")
    return client

  def barrier(self, name: str) -> None:
    """Returns once every process has reached `name` (a no-op for one process)."""
    if self.count > 1:
      self._client().wait_at_barrier(f"{_KEY_PREFIX}/{name}", int(self.barrier_timeout_s * 1000))

  def publish(self, key: str, value: str) -> None:
    """Sets this process's `key` in the coordination service's key-value store."""
    if self.count == 1:
      self._local[key] = value
    else:
      self._client().key_value_set(f"{_KEY_PREFIX}/{key}/{self.index}", value,
                                   allow_overwrite=True)

  def collect(self, key: str) -> dict[int, str]:
    """{process index: value} of everything published under `key` so far."""
    if self.count == 1:
      return {0: self._local[key]} if key in self._local else {}
    prefix = f"{_KEY_PREFIX}/{key}/"
    return {int(k.rsplit("/", 1)[-1]): v
            for k, v in self._client().key_value_dir_get(prefix)}


def current() -> Processes:
  """Initialises jax.distributed if the environment asks for it; this process's place."""
  distributed.maybe_initialize()
  import jax  # pylint: disable=g-import-not-at-top
  return Processes(jax.process_index(), jax.process_count())


def probe_seconds(path: str) -> float | None:
  """The container's duration in seconds (header only, no decoding); None if unknown."""
  try:
    with av.open(path) as container:
      if container.duration:
        return container.duration / 1e6   # av.time_base: microseconds
      streams = container.streams.video
      if streams and streams[0].duration and streams[0].time_base:
        return float(streams[0].duration * streams[0].time_base)
  except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError):
    pass
  return None


def video_costs(videos: Sequence[decode.VideoFile], max_seconds: float = 0.0) -> np.ndarray:
  """[N] work per video in seconds of video: the probed duration (capped at `max_seconds`
  if > 0), else the file size at the median bytes per second of the probed ones."""
  seconds = [probe_seconds(v.path) for v in videos]
  sizes = np.asarray([os.path.getsize(v.path) if os.path.exists(v.path) else 0
                      for v in videos], np.float64)
  known = [i for i, s in enumerate(seconds) if s]
  rate = (np.median([sizes[i] / seconds[i] for i in known]) if known else 1.0) or 1.0
  costs = np.asarray([s if s else sizes[i] / rate for i, s in enumerate(seconds)], np.float64)
  return np.minimum(costs, max_seconds) if max_seconds > 0 else costs


def balanced_shares(costs: Sequence[float], count: int) -> list[list[int]]:
  """Indices of each of `count` disjoint shares of about equal total cost.

  Greedy longest-processing-time: the costliest item first, each to the share
  with the least total so far (ties: lower index). Within a share, items keep
  their original order. Deterministic for equal inputs.
  """
  order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
  heap = [(0.0, p) for p in range(count)]
  shares: list[list[int]] = [[] for _ in range(count)]
  for i in order:
    total, p = heapq.heappop(heap)
    shares[p].append(i)
    heapq.heappush(heap, (total + float(costs[i]), p))
  return [sorted(s) for s in shares]
