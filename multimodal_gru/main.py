"""Entry point: python -m multimodal_gru.main --config=configs/dvd.py --workdir=DIR

Config overrides: --config.train.num_steps=100, variants: --config=configs/demo.py:regression.
Rerunning the same command on the same workdir resumes from the newest checkpoint.
"""

import ast
import logging as pylogging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from multimodal_gru import distributed, paths

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard summaries and results.json.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(pylogging.Filter):
  """Drops INFO chatter of orbax (tens of lines per checkpoint); keeps its warnings.

  The traceback of an OSError that orbax logs from its save thread is dropped
  (its message line stays): checkpointing.CheckpointSaveError reports it with
  the path, the errno and what to do.
  """

  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    if record.exc_info and isinstance(record.exc_info[1], OSError):
      record.exc_info, record.exc_text = None, None
    return record.levelno >= pylogging.WARNING


def _one_line(e: BaseException) -> str:
  """ml_collections' KeyError/AttributeError text ("'fusionn'\nDid you mean ...") on one line."""
  text = str(e)
  try:
    text = str(ast.literal_eval(text)) if text[:1] in "'\"" else text
  except (ValueError, SyntaxError):
    pass
  return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a bad flag or --config override exits with one line, no traceback."""
  try:
    argv = FLAGS(argv)
    if FLAGS["config"].present:
      FLAGS.config.get("train")   # a config file that failed to load reports it here
    return argv
  except OSError as e:   # ml_collections: the config file is missing or raised
    sys.exit(f"FATAL {e}")
  except flags.Error as e:
    sys.exit(f"FATAL Flags parsing error: {_one_line(e)}\n"
             "Pass --helpshort or --helpfull to see help on flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:   # ml_collections overrides
    overrides = [a for a in argv[1:] if a.startswith(("--config.", "-config."))]
    sys.exit(f"FATAL Bad --config override ({_one_line(e)}) in: {' '.join(overrides)}\n"
             "The fields and their defaults are in multimodal_gru/config_base.py.")


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
  from input_pipeline import pipeline, shards
  from multimodal_gru import checkpointing, sharding, train, workdir as workdir_lib
  logging.info("JAX process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.default_backend())
  # Relative paths mean the launch directory, for orbax, every process and results.json alike.
  config, workdir = FLAGS.config, paths.resolve(FLAGS.workdir)
  config.data.dir = paths.resolve(config.data.dir)
  try:
    results = train.train_and_evaluate(config, workdir)
  except (workdir_lib.WorkdirError, sharding.BatchSizeError, checkpointing.CheckpointError,
          checkpointing.CheckpointSaveError, shards.DataNotFoundError, pipeline.BadShardError,
          pipeline.BadRecordError, train.NonFiniteLossError) as e:
    # These say everything (path, cause, what to do): one message, no traceback.
    logging.error("%s", e)
    sys.exit(1)
  logging.info("Done: %s", {k: v for k, v in results.items() if k != "config"})


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
