r"""Prepares DVD or Aff-Wild2 from the manually downloaded release into clip shards.

  python -m multimodal_gru.prepare --dataset=dvd|affwild2 --manual_dir=PATH --out=DIR \
      [--image_source=frames|cropped_aligned] [--config.window_stride_seconds=4] \
      [--config.image.model=/models/clip-vit-base-patch32] [--config.*=...]

The datasets are EULA-gated: without --manual_dir (or with a folder in the
wrong layout) this prints how to obtain them and exits with status 2. The
--config.* flags are those of multimodal_gru/extract/config.py. Writes
{out}/train-*.tfrecord, {out}/eval-*.tfrecord, the per-frame files
{out}/frames/{split}/<video>.npz (frame times and labels, for the challenges'
frame-level scores) and {out}/dataset_info.json; finished videos are cached in
{out}/extract_cache/ and skipped on a rerun. --image_source=cropped_aligned
(Aff-Wild2) feeds the image stream from the organisers' face crops.

Under several processes (launch/local_multiprocess.sh --module=multimodal_gru.prepare,
SLURM with MODULE=multimodal_gru.prepare, launch/tpu_pod.py prepare) each
extracts a balanced share of the videos and process 0 merges the splits; --out
must be a folder every process shares.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from multimodal_gru import paths
from multimodal_gru.prepare import DATASETS

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "extract", "config.py"),
    "Extraction config (multimodal_gru/extract/config.py).")
_DATASET = flags.DEFINE_enum("dataset", None, list(DATASETS), "Dataset to prepare.",
                             required=True)
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the downloaded release.")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)
_IMAGE_SOURCE = flags.DEFINE_enum(
    "image_source", None, ["frames", "cropped_aligned"],
    "Image stream: the video's frames, or (Aff-Wild2) the face crops in "
    "MANUAL_DIR/cropped_aligned/<video>/00001.jpg. Default: --config.image.source (frames).")


def main(argv):
  del argv
  from multimodal_gru.extract import processes  # pylint: disable=g-import-not-at-top
  procs = processes.current()   # jax.distributed first, when launched that way
  dataset = DATASETS[_DATASET.value]
  manual_dir = paths.resolve(_MANUAL_DIR.value)   # None stays None
  out = paths.resolve(_OUT.value)
  problem = (f"--manual_dir={manual_dir!r} is not a folder" if not manual_dir or
             not os.path.isdir(manual_dir) else dataset.layout_problem(manual_dir))
  if problem:
    print(f"Cannot prepare {dataset.NAME}: {problem}.\n\n{dataset.INSTRUCTIONS}", file=sys.stderr)
    sys.exit(2)
  from multimodal_gru.prepare import build  # pylint: disable=g-import-not-at-top  # slow import
  info = build.build(_DATASET.value, manual_dir, out, _CONFIG.value, procs)
  if procs.index:
    return
  for split, s in info["splits"].items():
    print(f"{split}: {s['clips']} clips from {s['videos']} videos, {len(s['failed'])} failed, "
          f"labels {s.get('labels', {})}")
  print(f"Wrote {out}/dataset_info.json")


if __name__ == "__main__":
  app.run(main)
