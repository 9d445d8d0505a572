"""Entry point: python -m multimodal_gru.main --config=configs/dvd.py --workdir=DIR

Config overrides: --config.train.num_steps=100, variants: --config=configs/demo.py:regression.
Rerunning the same command on the same workdir resumes from the newest checkpoint.
"""

import logging as pylogging
import os

from absl import app, flags, logging
from ml_collections import config_flags

from multimodal_gru import distributed, paths

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard summaries and results.json.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(pylogging.Filter):
  """Drops INFO chatter of orbax (tens of lines per checkpoint); keeps its warnings."""

  def filter(self, record):
    return record.levelno >= pylogging.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  distributed.maybe_initialize()   # before any other JAX call
  import jax
  # Persistent compilation cache: a resumed run (or another sweep point) skips compilation.
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", os.environ.get(
        "MGRU_COMPILATION_CACHE", os.path.expanduser("~/.cache/multimodal_gru/jax_cache")))
  from multimodal_gru import train
  logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.default_backend())
  # Relative paths mean the launch directory, for orbax, every process and results.json alike.
  config, workdir = FLAGS.config, paths.resolve(FLAGS.workdir)
  config.data.dir = paths.resolve(config.data.dir)
  results = train.train_and_evaluate(config, workdir)
  logging.info("Done: %s", {k: v for k, v in results.items() if k != "config"})


if __name__ == "__main__":
  app.run(main)
