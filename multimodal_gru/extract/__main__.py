r"""Extracts video / image / text features from raw videos into clip shards.

  python -m multimodal_gru.extract --videos=/data/videos --out=/data/features \
      [--split=train] [--config.image.model=/models/clip-vit-base-patch32] \
      [--config.captioner.model=kinetics] [--config.window_seconds=8] [--allow_failures]

--videos takes folders (searched recursively), globs, or a comma-separated list
of them. Every field of multimodal_gru/extract/config.py is a --config.* flag.
Writes {out}/{split}-*.tfrecord and {out}/dataset_info.json; finished videos
are cached in {out}/extract_cache/, so a rerun skips them. Files that fail to
decode are skipped and listed in {out}/failures_{split}.json ({video id: why});
the split is still written from the others, and the command then exits with
status 3 (failures.EXIT_SOME_FAILED) unless --allow_failures. Set HF_HUB_OFFLINE=1 where
models are only local (transformers otherwise retries the hub for about 30 s
per model).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from input_pipeline import shards
from multimodal_gru import paths as paths_lib
from multimodal_gru.extract import decode
from multimodal_gru.extract import failures as failures_lib
from multimodal_gru.extract import jobs
from multimodal_gru.extract import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "config.py"), "Extraction config.")
_VIDEOS = flags.DEFINE_string("videos", None, "Folder(s) or glob(s) of videos, comma-separated.",
                              required=True)
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_SPLIT = flags.DEFINE_string("split", "train", "Split name of the written shards.")
_ALLOW_FAILURES = flags.DEFINE_bool(
    "allow_failures", False, "Exit 0 when some videos fail (default: exit status 3).")


def main(argv):
  del argv
  config = _CONFIG.value
  out = paths_lib.resolve(_OUT.value)
  videos = ",".join(paths_lib.resolve(p) for p in _VIDEOS.value.split(",") if p)
  paths = decode.list_videos(videos)
  if not paths:
    sys.exit(f"No videos found for --videos={videos!r} (extensions: "
             f"{' '.join(decode.VIDEO_EXTENSIONS)}).")
  logging.info("%d videos; config:\n%s", len(paths), config)
  extractor = pipeline.Extractor(config)
  cache = jobs.cache_dir(out, extractor)
  report = jobs.run(extractor, decode.name_videos(paths), cache)
  failures = failures_lib.write_failures(out, _SPLIT.value, report.failed)
  if not report.done:
    sys.exit(f"No video could be extracted ({len(report.failed)} failed); the list is in "
             f"{failures}.")
  stats = jobs.write_split(out, _SPLIT.value, cache, report.done, lambda j, w: [w.clip],
                           config)
  shards.write_dataset_info(out, {
      **extractor.info(), "name": "videos",
      "splits": {_SPLIT.value: {**stats, "failed": jobs.failure_list(report)}}})
  print(f"Wrote {stats['clips']} clips from {len(report.done)} videos to {out} "
        f"({len(report.failed)} failed).")
  status, message = failures_lib.exit_status(len(paths), report.failed, failures,
                                             _ALLOW_FAILURES.value)
  if message:
    print(message, file=sys.stderr)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
