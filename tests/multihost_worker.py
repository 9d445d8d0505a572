"""One training process of the multi-device and multi-process tests.

  python tests/multihost_worker.py SPEC.json

SPEC.json holds {"data_dir", "workdir", "record", "overrides": {"mesh.data": 2, ...}}.
Like `python -m multimodal_gru.main`, the worker initialises jax.distributed from
the MGRU_* environment, then runs `train.train_and_evaluate(scale_config(...),
workdir)`. It records which examples each training and evaluation batch of this
process held (by the id that `write_dataset` writes into every clip) and writes
them with the returned results to `{record}.{process_index}.json`.

The other functions (the data, the config, the environment of a worker, and
reading back records, TensorBoard scalars and checkpoints) are shared by
tests/test_multidevice.py and tests/test_multihost.py.
"""

import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import numpy as np   # pylint: disable=g-import-not-at-top

EVAL_ID_OFFSET = 1000   # eval clip i carries the id 1000 + i (exact in float16 up to 2048)


def write_dataset(data_dir: str, num_train: int, num_eval: int) -> str:
  """Demo clips whose first video feature value is the clip's id (train i, eval 1000 + i)."""
  from input_pipeline import shards
  from multimodal_gru import demo_data

  def marked(split, num, offset):
    for i, clip in enumerate(demo_data.generate_clips(split, num, seed=0)):
      clip.features["video"][0, 0] = offset + i
      yield clip

  shards.write_split(data_dir, "train", marked("train", num_train, 0), num_shards=3)
  shards.write_split(data_dir, "eval", marked("eval", num_eval, EVAL_ID_OFFSET), num_shards=2)
  return data_dir


def batch_ids(batch) -> list[int]:
  """Ids of the real rows of a host-local batch."""
  return [int(i) for i in np.asarray(batch["video"])[np.asarray(batch["example_mask"]), 0, 0]]


def scale_config(data_dir: str, overrides: dict | None = None):
  """configs/demo.py shrunk to seconds per run; `overrides` maps "section.field" to values.

  Sizes: the GRU input kernels [64, 2, 48] (>= 4096 elements) are sharded over
  "fsdp", most kernels over "model" (output dims divisible by 4); global batch
  16 = two rows per batch shard on 8 devices. Hidden 16 also keeps each batched
  QR of the orthogonal GRU init below jaxlib's threading threshold (see
  test_multidevice.test_demo_model_initialises_on_8_devices).
  """
  from configs import demo
  c = demo.get_config("classification")
  c.data.dir = data_dir
  c.data.generate_demo = False
  c.data.read_threads = 2
  c.model.hidden_dim = 16
  c.model.mlp_dim = 64
  c.model.num_heads = 2
  c.model.fusion = "concat"
  c.train.batch_size = 16
  c.train.eval_batch_size = 16
  c.train.num_steps = 6
  c.train.log_every = 1
  c.train.eval_every = 1000
  c.train.checkpoint_every = 3
  c.optim.warmup_steps = 2
  c.optim.learning_rate = 1e-2
  for key, value in (overrides or {}).items():
    section, field = key.split(".")
    value = tuple(value) if isinstance(value, list) else value
    setattr(c[section], field, value)
  return c


def worker_env(num_devices: int, cache_dir: str | None = None, **extra: str) -> dict[str, str]:
  """Environment of a worker process with `num_devices` CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
             PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])),
             **extra)
  for key in ("MGRU_COORDINATOR", "MGRU_NUM_PROCESSES", "MGRU_PROCESS_ID", "MGRU_DISTRIBUTED"):
    if key not in extra:
      env.pop(key, None)
  if cache_dir:   # compiled programs are reused by later runs of the same program
    env.update(JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  return env


def write_spec(path: str, data_dir: str, workdir: str, overrides: dict | None = None) -> str:
  with open(path, "w") as f:
    json.dump(dict(data_dir=data_dir, workdir=workdir, record=os.path.join(workdir, "record"),
                   overrides=overrides or {}), f)
  return path


def read_records(workdir: str, process_count: int) -> list[dict]:
  records = []
  for i in range(process_count):
    with open(os.path.join(workdir, f"record.{i}.json")) as f:
      records.append(json.load(f))
  return records


def train_scalars(workdir: str, tag: str) -> dict[int, float]:
  """{step: value} of a TensorBoard scalar in workdir (e.g. "train/loss")."""
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(workdir, size_guidance={event_accumulator.SCALARS: 0})
  acc.Reload()
  return {e.step: e.value for e in acc.Scalars(tag)}


def checkpoint_arrays(workdir: str, step: int) -> dict[str, np.ndarray]:
  """The train state of a checkpoint as numpy arrays keyed by path ("['params']['...']")."""
  import jax
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata.tree
  target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), metadata)   # restore as numpy
  restored = checkpointer.restore(path, target)
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(restored)}


def checkpoint_partition_specs(workdir: str, step: int) -> dict[str, tuple]:
  """How each array of a checkpoint's train state was sharded when it was saved."""
  import jax
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  metadata = ocp.StandardCheckpointer().metadata(path).item_metadata.tree
  return {jax.tree_util.keystr(k): tuple(m.sharding.partition_spec)
          for k, m in jax.tree_util.tree_leaves_with_path(metadata)}


def max_difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
  """max |a - b| over all arrays of two checkpoints; the keys must agree."""
  assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
  return max(float(np.abs(a[k].astype(np.float64) - b[k]).max(initial=0.0)) for k in a)


def _install_recorders(log: dict) -> None:
  """Wraps the pipeline's constructors so that every batch train.py draws is recorded."""
  import grain
  from input_pipeline import pipeline

  class RecordingIterator(grain.DatasetIterator):
    def __next__(self):
      batch = next(self._parent)
      log["train"].append(batch_ids(batch))
      return batch

    def get_state(self):
      return self._parent.get_state()

    def set_state(self, state):
      self._parent.set_state(state)

  def recorded_eval(batches):
    ids = []
    log["eval"].append(ids)
    for batch in batches:
      ids.extend(batch_ids(batch))
      yield batch

  create_train_iterator, create_eval_batches = (pipeline.create_train_iterator,
                                                pipeline.create_eval_batches)
  pipeline.create_train_iterator = lambda config: RecordingIterator(create_train_iterator(config))
  pipeline.create_eval_batches = lambda config: recorded_eval(create_eval_batches(config))


def main(spec_path: str) -> None:
  from absl import logging
  logging.set_verbosity(logging.INFO)
  from multimodal_gru import distributed
  distributed.maybe_initialize()   # before any other JAX call
  import jax
  from multimodal_gru import train

  with open(spec_path) as f:
    spec = json.load(f)
  log = {"train": [], "eval": []}
  _install_recorders(log)
  config = scale_config(spec["data_dir"], spec["overrides"])
  results = train.train_and_evaluate(config, spec["workdir"])
  record = dict(log, results={k: v for k, v in results.items() if k != "config"},
                pid=os.getpid(), process_index=jax.process_index(),
                process_count=jax.process_count(), local_devices=jax.local_device_count(),
                devices=jax.device_count())
  with open(f"{spec['record']}.{jax.process_index()}.json", "w") as f:
    json.dump(record, f)


if __name__ == "__main__":
  main(sys.argv[1])
