r"""Prepares DVD or Aff-Wild2 from the manually downloaded release into clip shards.

  python -m multimodal_gru.prepare --dataset=dvd|affwild2 --manual_dir=PATH --out=DIR \
      [--config.image.model=/models/clip-vit-base-patch32] [--config.*=...]

The datasets are EULA-gated: without --manual_dir (or with a folder in the
wrong layout) this prints how to obtain them and exits with status 2. The
--config.* flags are those of multimodal_gru/extract/config.py. Writes
{out}/train-*.tfrecord, {out}/eval-*.tfrecord and {out}/dataset_info.json;
finished videos are cached in {out}/extract_cache/ and skipped on a rerun.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from multimodal_gru.prepare import DATASETS

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "..", "extract", "config.py"),
    "Extraction config (multimodal_gru/extract/config.py).")
_DATASET = flags.DEFINE_enum("dataset", None, list(DATASETS), "Dataset to prepare.",
                             required=True)
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Folder with the downloaded release.")
_OUT = flags.DEFINE_string("out", None, "Output folder.", required=True)


def main(argv):
  del argv
  dataset = DATASETS[_DATASET.value]
  manual_dir = _MANUAL_DIR.value
  problem = (f"--manual_dir={manual_dir!r} is not a folder" if not manual_dir or
             not os.path.isdir(manual_dir) else dataset.layout_problem(manual_dir))
  if problem:
    print(f"Cannot prepare {dataset.NAME}: {problem}.\n\n{dataset.INSTRUCTIONS}", file=sys.stderr)
    sys.exit(2)
  from multimodal_gru.prepare import build  # pylint: disable=g-import-not-at-top  # slow import
  info = build.build(_DATASET.value, manual_dir, _OUT.value, _CONFIG.value)
  for split, s in info["splits"].items():
    print(f"{split}: {s['clips']} clips from {s['videos']} videos, {len(s['failed'])} failed, "
          f"labels {s.get('labels', {})}")
  print(f"Wrote {_OUT.value}/dataset_info.json")


if __name__ == "__main__":
  app.run(main)
