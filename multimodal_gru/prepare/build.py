"""Extracts and labels every annotated video of a dataset; writes splits and dataset_info."""

from __future__ import annotations

from absl import logging
import ml_collections

from input_pipeline import shards
from multimodal_gru.extract import jobs
from multimodal_gru.extract import pipeline
from multimodal_gru.prepare import DATASETS


def build(dataset: str, manual_dir: str, out_dir: str,
          config: ml_collections.ConfigDict) -> dict:
  """Writes {out_dir}/{split}-*.tfrecord and dataset_info.json; returns the info written."""
  module = DATASETS[dataset]
  items, missing = module.find(manual_dir)
  if missing:
    logging.warning("%d annotation files have no video: %s", len(missing), ", ".join(missing))
  extractor = pipeline.Extractor(config)
  cache = jobs.cache_dir(out_dir, extractor)
  videos = list(dict.fromkeys(video for pairs in items.values() for video, _ in pairs))
  report = jobs.run(extractor, videos, cache)
  done = set(report.done)
  splits = {}
  for split, pairs in items.items():
    annotations = {}   # video -> its annotations (Aff-Wild2: _left / _right)
    for video, annotation in pairs:
      if video in done:
        annotations.setdefault(video, []).append(annotation)
    to_clips = lambda video, window, a=annotations: [c for x in a[video]
                                                     for c in module.to_clips(x, window)]
    stats = jobs.write_split(out_dir, split, cache, list(annotations), to_clips, config)
    splits[split] = {**stats, "annotations": sum(map(len, annotations.values())),
                     "failed": jobs.failure_list(report, {v.video_id for v, _ in pairs})}
  info = {**extractor.info(), **module.dataset_info(), "name": module.NAME, "splits": splits,
          "annotations_without_video": missing}
  shards.write_dataset_info(out_dir, info)
  return info
