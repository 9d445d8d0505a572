"""Extracts and labels every annotated video of a dataset; writes splits and dataset_info.

Under jax.distributed (several processes launched alike) each process extracts
and labels a balanced share of the videos and writes its part of every split;
process 0 merges the parts (extract/parts.py) and writes dataset_info.json.
"""

from __future__ import annotations

import json

from absl import logging
import ml_collections

from input_pipeline import shards
from input_pipeline import video_frames
from multimodal_gru.extract import jobs
from multimodal_gru.extract import parts
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import processes as processes_lib
from multimodal_gru.extract import progress as progress_lib
from multimodal_gru.prepare import DATASETS


def build(dataset: str, manual_dir: str, out_dir: str, config: ml_collections.ConfigDict,
          processes: processes_lib.Processes | None = None) -> dict:
  """Writes {out_dir}/{split}-*.tfrecord, the frame files and dataset_info.json.

  Returns the info written (on every process). Raises `video_frames.FrameCountError`
  listing every annotation (of all processes) whose frame count disagrees with
  its video (extracted videos stay cached, so the rerun after a fix extracts
  nothing again).
  """
  processes = processes or processes_lib.Processes()
  module = DATASETS[dataset]
  items, missing = module.find(manual_dir)
  if missing and processes.index == 0:
    logging.warning("%d annotation files have no video: %s", len(missing), ", ".join(missing))
  # Extraction units: a video, or (Aff-Wild2 face crops) a video per annotation.
  units, sources = {}, {}
  for split, pairs in items.items():
    units[split] = []
    for video, annotation in pairs:
      unit, source = module.extraction_unit(manual_dir, video, annotation, config)
      units[split].append((unit, annotation))
      sources[unit] = source
  parts.check_shared(out_dir, processes)
  share, costs, _ = parts.my_share(list(sources), processes, config.max_seconds)
  extractor = pipeline.Extractor(config)
  cache = jobs.cache_dir(out_dir, extractor)
  crops = any(s is not None for s in sources.values())
  report = jobs.run(extractor, share, cache, {u: sources[u] for u in share} if crops else None,
                    progress_lib.Progress(len(share), sum(costs), processes), costs)
  for unit in share:
    if getattr(sources[unit], "filled", 0):
      logging.info("%s: %d image steps took the previous frame's face crop", unit.video_id,
                   sources[unit].filled)
  done = set(report.done)
  # With max_seconds the videos are cut, so their annotations are too (no check).
  tolerance = config.frame_count_tolerance if config.max_seconds <= 0 else None
  labels, problems = {}, []
  for pairs in units.values():
    for unit, annotation in pairs:
      if unit not in done:
        continue
      num_frames = jobs.load_timeline(jobs.cache_file(cache, unit)).num_frames
      try:
        labels.setdefault(unit, {})[annotation.name] = module.frame_labels(
            annotation, num_frames, tolerance, unit.path)
      except video_frames.FrameCountError as e:
        problems.append(str(e))
  processes.publish("frame_count_problems", json.dumps(problems))
  processes.barrier("labels-checked")
  problems = [p for v in sorted(processes.collect("frame_count_problems").items())
              for p in json.loads(v[1])]
  if problems:
    raise video_frames.FrameCountError(
        "\n".join(problems) + f"\n({len(problems)} annotations; the extracted videos stay "
        f"cached in {cache}, so the rerun after a fix only writes the splits.)")
  for split, pairs in units.items():
    annotations = {}   # unit -> its annotations (Aff-Wild2: _left / _right)
    for unit, annotation in pairs:
      if unit in done:
        annotations.setdefault(unit, []).append(annotation)
    to_clips = lambda video, window, a=annotations: [c for x in a[video]
                                                     for c in module.to_clips(x, window)]
    ids = {v.video_id for v, _ in pairs}   # every process writes a part of every split
    parts.write_part(out_dir, split, processes, cache,
                     {k: v for k, v in report.failed.items() if k in ids}, list(annotations),
                     to_clips, config, {u: labels[u] for u in annotations},
                     {"annotations": sum(map(len, annotations.values()))})
  processes.barrier("parts-written")
  if processes.index == 0:
    splits = {}
    for split in units:
      merged = parts.merge(out_dir, split, processes)
      extra = merged.pop("extra")
      splits[split] = {**merged, "annotations": sum(e["annotations"] for e in extra),
                       "failed": [f"{k}: {v}" for k, v in merged["failed"].items()]}
    info = {**extractor.info(), **module.dataset_info(), "name": module.NAME, "splits": splits,
            "annotations_without_video": missing,
            "frames": f"{video_frames.FOLDER}/<split>/<video_id>.npz"}
    shards.write_dataset_info(out_dir, info)
    processes.publish("info", json.dumps(info))
  processes.barrier("merged")
  return info if processes.index == 0 else json.loads(processes.collect("info")[0])
