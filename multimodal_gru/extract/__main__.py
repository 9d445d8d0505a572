r"""Extracts video / image / text features from raw videos into clip shards.

  python -m multimodal_gru.extract --videos=/data/videos --out=/data/features \
      [--split=train] [--config.image.model=/models/clip-vit-base-patch32] \
      [--config.captioner.model=kinetics] [--config.window_seconds=8]

--videos takes folders (searched recursively), globs, or a comma-separated list
of them. Every field of multimodal_gru/extract/config.py is a --config.* flag.
Writes {out}/{split}-*.tfrecord and {out}/dataset_info.json; finished videos
are cached in {out}/extract_cache/, so a rerun skips them. Files that fail to
decode are reported and skipped. Set HF_HUB_OFFLINE=1 where models are only
local (transformers otherwise retries the hub for about 30 s per model).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from input_pipeline import shards
from multimodal_gru.extract import decode
from multimodal_gru.extract import jobs
from multimodal_gru.extract import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "config.py"), "Extraction config.")
_VIDEOS = flags.DEFINE_string("videos", None, "Folder(s) or glob(s) of videos, comma-separated.",
                              required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split name of the written shards.")


def main(argv):
  del argv
  config = _CONFIG.value
  paths = decode.list_videos(_VIDEOS.value)
  if not paths:
    sys.exit(f"No videos found for --videos={_VIDEOS.value!r} (extensions: "
             f"{' '.join(decode.VIDEO_EXTENSIONS)}).")
  logging.info("%d videos; config:\n%s", len(paths), config)
  extractor = pipeline.Extractor(config)
  cache = jobs.cache_dir(_OUT.value, extractor)
  report = jobs.run(extractor, decode.name_videos(paths), cache)
  if not report.done:
    sys.exit(f"No video could be extracted ({len(report.failed)} failed); see the log above.")
  stats = jobs.write_split(_OUT.value, _SPLIT.value, cache, report.done, lambda j, w: [w.clip],
                           config)
  shards.write_dataset_info(_OUT.value, {
      **extractor.info(), "name": "videos",
      "splits": {_SPLIT.value: {**stats, "failed": jobs.failure_list(report)}}})
  print(f"Wrote {stats['clips']} clips from {len(report.done)} videos to {_OUT.value} "
        f"({len(report.failed)} failed).")


if __name__ == "__main__":
  app.run(main)
