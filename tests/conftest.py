"""Shared fixtures: a tiny demo dataset and a tiny config that trains in seconds."""

import atexit
import os
import sys
import tempfile

# One persistent XLA compilation cache for the session (and the subprocesses it starts):
# identical models compiled by several tests are compiled once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="mgru_tests_jax_cache_"))

import pytest  # noqa: E402

from input_pipeline import shards  # noqa: E402
from multimodal_gru import demo_data  # noqa: E402


def write_tiny_demo(data_dir, num_train=96, num_eval=40, seed=0):
  shards.write_split(str(data_dir), "train", demo_data.generate_clips("train", num_train, seed), 2)
  shards.write_split(str(data_dir), "eval", demo_data.generate_clips("eval", num_eval, seed), 2)
  return str(data_dir)


@pytest.fixture(scope="session")
def tiny_demo_dir(tmp_path_factory):
  return write_tiny_demo(tmp_path_factory.mktemp("tiny_demo"))


def tiny_config(data_dir, task="classification"):
  """configs/demo.py shrunk: a few steps of a small model on the tiny dataset."""
  from configs import demo
  c = demo.get_config(task)
  c.data.dir = data_dir
  c.data.generate_demo = False
  c.model.hidden_dim = 16
  c.model.mlp_dim = 32
  c.model.num_heads = 2
  c.train.batch_size = 8
  c.train.eval_batch_size = 16
  c.train.num_steps = 6
  c.train.log_every = 3
  c.train.eval_every = 6
  c.train.checkpoint_every = 3
  c.optim.warmup_steps = 2
  return c



def _drop_abandoned_read_tracebacks_at_exit():
  """After pytest restored its hooks: orbax's abandoned reads finalised at exit
  (tests/test_train_faults.py restores damaged checkpoints) are dropped, as in the trainer."""
  checkpointing = sys.modules.get("multimodal_gru.checkpointing")   # no imports at exit
  if checkpointing is not None:
    checkpointing.drop_abandoned_read_tracebacks()


atexit.register(_drop_abandoned_read_tracebacks_at_exit)
