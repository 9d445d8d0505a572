"""Multi-process splits: each process writes its part, process 0 merges them into one.

Process p of n writes its videos' shards, frame files and stats to
`{out}/extract_parts/{split}/process-{p:05d}-of-{n:05d}/` (with `part.json`:
its videos, failures and mergeable stats). After a barrier, process 0 renames
the shards into the global `{split}-{i:05d}-of-{N:05d}.tfrecord` scheme (part 0's
first), merges the manifests, the frame files, the stats and the failures,
and removes the parts. OUT must be one folder for all processes (a shared
filesystem); `check_shared` says so early when it is not.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from typing import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import video_frames
from multimodal_gru.extract import decode
from multimodal_gru.extract import jobs
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import processes as processes_lib

FOLDER = "extract_parts"
_PART_INFO = "part.json"
_PART_VA = "part_va.npy"


def split_parts_dir(out_dir: str, split: str) -> str:
  return os.path.join(out_dir, FOLDER, split)


def part_dir(out_dir: str, split: str, processes: processes_lib.Processes) -> str:
  return os.path.join(split_parts_dir(out_dir, split),
                      f"process-{processes.index:05d}-of-{processes.count:05d}")


def check_shared(out_dir: str, processes: processes_lib.Processes) -> None:
  """Raises unless every process sees the file process 0 writes into `out_dir`."""
  if processes.count == 1:
    return
  folder = os.path.join(out_dir, FOLDER)
  os.makedirs(folder, exist_ok=True)
  if processes.index == 0:
    token = uuid.uuid4().hex
    with open(os.path.join(folder, f"shared-{token}"), "w") as f:
      f.write(token)
    processes.publish("shared_token", token)
  processes.barrier("shared-check")
  token = processes.collect("shared_token")[0]
  seen = os.path.exists(os.path.join(folder, f"shared-{token}"))
  processes.publish("shared_seen", str(int(seen)))
  processes.barrier("shared-checked")
  if processes.index == 0:
    os.remove(os.path.join(folder, f"shared-{token}"))
  blind = sorted(i for i, v in processes.collect("shared_seen").items() if v != "1")
  if blind:
    raise SystemExit(
        f"--out={out_dir} is not the same folder on every process: processes {blind} do not "
        f"see the file process 0 wrote into {folder}. Put the output on a filesystem that "
        "every host mounts (NFS, Lustre, Filestore, gcsfuse) and pass that path.")


def my_share(videos: Sequence[decode.VideoFile], processes: processes_lib.Processes,
             max_seconds: float = 0.0) -> tuple[list[decode.VideoFile], list[float], float]:
  """(this process's videos, their costs in s of video, the total cost of all videos)."""
  costs = processes_lib.video_costs(videos, max_seconds)
  share = processes_lib.balanced_shares(costs, processes.count)[processes.index]
  return [videos[i] for i in share], [float(costs[i]) for i in share], float(costs.sum())


def write_part(out_dir: str, split: str, processes: processes_lib.Processes, cache: str,
               failed: Mapping[str, str], videos: Sequence[decode.VideoFile],
               to_clips: Callable[[decode.VideoFile, pipeline.Window],
                                  list[record_format.Clip]],
               config: ml_collections.ConfigDict,
               frame_labels: Mapping[decode.VideoFile, Mapping[str, np.ndarray | None]]
               | None = None, extra: dict | None = None) -> str:
  """Writes this process's part of `split` from the cached `videos`; returns its folder.

  `failed` ({video id: why}) are this process's failed videos of the split;
  `extra` (JSON) travels to the merge in part.json.
  """
  folder = part_dir(out_dir, split, processes)
  if os.path.exists(folder):
    shutil.rmtree(folder)
  stats = jobs.SplitStats()
  jobs.write_split(folder, split, cache, videos, to_clips, config, frame_labels, stats,
                   math.ceil(config.num_shards / processes.count))
  counters, va = stats.state()
  np.save(os.path.join(folder, _PART_VA), va)
  info = {"videos": [v.video_id for v in videos], "failed": dict(failed), "stats": counters,
          "extra": extra or {}}
  with open(os.path.join(folder, _PART_INFO + ".tmp"), "w") as f:
    json.dump(info, f)
  os.replace(os.path.join(folder, _PART_INFO + ".tmp"), os.path.join(folder, _PART_INFO))
  return folder


def read_parts(out_dir: str, split: str, processes: processes_lib.Processes) -> list[dict]:
  """part.json of every process (after the barrier that follows `write_part`)."""
  infos = []
  for i in range(processes.count):
    folder = part_dir(out_dir, split, processes_lib.Processes(i, processes.count))
    try:
      with open(os.path.join(folder, _PART_INFO)) as f:
        infos.append({**json.load(f), "dir": folder})
    except FileNotFoundError:
      raise FileNotFoundError(
          f"{folder}/{_PART_INFO} is missing: process {i} did not write its part of split "
          f"{split!r} into the same --out folder. Run the extraction again (finished videos "
          "are cached).") from None
  return infos


def merge(out_dir: str, split: str, processes: processes_lib.Processes) -> dict:
  """Process 0: the parts of `split` into one split; returns its stats for dataset_info.json,
  with "failed" ({video id: why} over all processes) and the parts' "extra"s."""
  parts = read_parts(out_dir, split, processes)
  dirs = [p["dir"] for p in parts]
  stats = jobs.SplitStats.merged(
      (p["stats"], np.load(os.path.join(p["dir"], _PART_VA))) for p in parts)
  paths = []
  if stats.clips or not any(p["failed"] for p in parts):   # all failed: keep an older split
    paths = shards.merge_parts(out_dir, split, dirs)
    video_frames.merge_parts(out_dir, split, dirs)
  failed = {k: v for p in parts for k, v in p["failed"].items()}
  shutil.rmtree(split_parts_dir(out_dir, split))
  if not os.listdir(os.path.join(out_dir, FOLDER)):
    os.rmdir(os.path.join(out_dir, FOLDER))
  return {**stats.summary(), "videos": sum(len(p["videos"]) for p in parts),
          "shards": len(paths), "failed": dict(sorted(failed.items())), "extra": [p["extra"] for p in parts]}
