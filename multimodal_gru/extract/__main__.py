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

Several processes (launch/local_multiprocess.sh --module=multimodal_gru.extract, SLURM,
launch/tpu_pod.py extract) run the same command: jax.distributed joins them, each
extracts a share of the videos balanced by duration on all its local devices and
writes its part of the split; process 0 merges the parts into one split
(extract/parts.py). --out must then be a folder every process shares.
"""

import json
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
from multimodal_gru.extract import parts
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import processes as processes_lib
from multimodal_gru.extract import progress as progress_lib

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
  processes = processes_lib.current()   # jax.distributed first, when launched that way
  config = _CONFIG.value
  out = paths_lib.resolve(_OUT.value)
  videos = ",".join(paths_lib.resolve(p) for p in _VIDEOS.value.split(",") if p)
  paths = decode.list_videos(videos)
  if not paths:
    sys.exit(f"No videos found for --videos={videos!r} (extensions: "
             f"{' '.join(decode.VIDEO_EXTENSIONS)}).")
  parts.check_shared(out, processes)
  share, costs, total = parts.my_share(decode.name_videos(paths), processes, config.max_seconds)
  logging.info("%s: %d of %d videos (%.0f of %.0f s of video); config:\n%s", processes.name,
               len(share), len(paths), sum(costs), total, config)
  extractor = pipeline.Extractor(config)
  cache = jobs.cache_dir(out, extractor)
  progress = progress_lib.Progress(len(share), sum(costs), processes)
  report = jobs.run(extractor, share, cache, progress=progress, costs=costs)
  split = _SPLIT.value
  parts.write_part(out, split, processes, cache, report.failed, report.done,
                   lambda v, w: [w.clip], config)
  processes.barrier(f"parts-written-{split}")
  if processes.index == 0:
    progress.report(force_overall=True)
    merged = parts.merge(out, split, processes)
    del merged["extra"]
    failures = failures_lib.write_failures(out, split, merged["failed"])
    if merged["clips"]:
      shards.write_dataset_info(out, {
          **extractor.info(), "name": "videos",
          "splits": {split: {**merged, "failed": [f"{k}: {v}" for k, v in
                                                  merged["failed"].items()]}}})
    processes.publish("result", json.dumps({**merged, "failures_path": failures}))
  processes.barrier(f"merged-{split}")
  result = json.loads(processes.collect("result")[0])
  failed, failures = result["failed"], result["failures_path"]
  if not result["clips"]:
    sys.exit(f"No video could be extracted ({len(failed)} failed); the list is in {failures}.")
  if processes.index == 0:
    print(f"Wrote {result['clips']} clips from {result['videos']} videos to {out} "
          f"({len(failed)} failed).")
  else:
    print(f"{processes.name}: extracted {report.extracted} videos, {len(report.failed)} failed; "
          "process 0 merged the split.")
  status, message = failures_lib.exit_status(len(paths), failed, failures,
                                             _ALLOW_FAILURES.value)
  if message and processes.index == 0:
    print(message, file=sys.stderr)
  sys.exit(status)


if __name__ == "__main__":
  app.run(main)
