"""Extracts and labels every annotated video of a dataset; writes splits and dataset_info."""

from __future__ import annotations

from absl import logging
import ml_collections

from input_pipeline import shards
from input_pipeline import video_frames
from multimodal_gru.extract import jobs
from multimodal_gru.extract import pipeline
from multimodal_gru.prepare import DATASETS


def build(dataset: str, manual_dir: str, out_dir: str,
          config: ml_collections.ConfigDict) -> dict:
  """Writes {out_dir}/{split}-*.tfrecord, the frame files and dataset_info.json.

  Returns the info written. Raises `video_frames.FrameCountError` listing every
  annotation whose frame count disagrees with its video (extracted videos stay
  cached, so the rerun after a fix extracts nothing again).
  """
  module = DATASETS[dataset]
  items, missing = module.find(manual_dir)
  if missing:
    logging.warning("%d annotation files have no video: %s", len(missing), ", ".join(missing))
  # Extraction units: a video, or (Aff-Wild2 face crops) a video per annotation.
  units, sources = {}, {}
  for split, pairs in items.items():
    units[split] = []
    for video, annotation in pairs:
      unit, source = module.extraction_unit(manual_dir, video, annotation, config)
      units[split].append((unit, annotation))
      sources[unit] = source
  extractor = pipeline.Extractor(config)
  cache = jobs.cache_dir(out_dir, extractor)
  videos = list(sources)
  crops = any(s is not None for s in sources.values())
  report = jobs.run(extractor, videos, cache, sources if crops else None)
  for unit, source in sources.items():
    if getattr(source, "filled", 0):
      logging.info("%s: %d image steps took the previous frame's face crop", unit.video_id,
                   source.filled)
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
  if problems:
    raise video_frames.FrameCountError(
        "\n".join(problems) + f"\n({len(problems)} annotations; the extracted videos stay "
        f"cached in {cache}, so the rerun after a fix only writes the splits.)")
  splits = {}
  for split, pairs in units.items():
    annotations = {}   # unit -> its annotations (Aff-Wild2: _left / _right)
    for unit, annotation in pairs:
      if unit in done:
        annotations.setdefault(unit, []).append(annotation)
    to_clips = lambda video, window, a=annotations: [c for x in a[video]
                                                     for c in module.to_clips(x, window)]
    stats = jobs.write_split(out_dir, split, cache, list(annotations), to_clips, config,
                             {u: labels[u] for u in annotations})
    splits[split] = {**stats, "annotations": sum(map(len, annotations.values())),
                     "failed": jobs.failure_list(report, {v.video_id for v, _ in pairs})}
  info = {**extractor.info(), **module.dataset_info(), "name": module.NAME, "splits": splits,
          "annotations_without_video": missing,
          "frames": f"{video_frames.FOLDER}/<split>/<video_id>.npz"}
  shards.write_dataset_info(out_dir, info)
  return info
