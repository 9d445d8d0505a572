"""Two local processes joined by jax.distributed train like one (issue "Scale").

The multi-process runs start tests/multihost_worker.py once per process with
MGRU_COORDINATOR / MGRU_NUM_PROCESSES / MGRU_PROCESS_ID (what
launch/local_multiprocess.sh sets), each process with 2 CPU devices and CPU
collectives (gloo). The single-process runs use the same global batch of 16.

Augmentation and dropout are off in these runs: the global batch of 2
processes holds the same examples as that of 1 process but in another row
order (process p reads stream positions p, p + 2, ...), and per-row random
draws follow the row. Measured on this machine (8 steps; the same for the
resumed runs, 2 -> 1 and 1 -> 2 processes):
  train loss at every step   max |diff| 1.8e-7
  params and optimizer state max |diff| 2.2e-7
  eval metrics               identical
The tolerances below leave about 10x room.

The input position in a checkpoint (one grain state file per process) is
carried across process counts by `checkpointing.reshard_iterator_states`, so
that every example is still read once per epoch after the resume.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import multihost_worker as worker
from input_pipeline import pipeline
from multimodal_gru import checkpointing

LOSS_ATOL = 3e-6
STATE_ATOL = 2e-6
METRIC_ATOL = 1e-6
NUM_TRAIN, NUM_EVAL, BATCH = 32, 24, 16
NUM_STEPS = 8                    # 4 epochs of 2 steps; checkpoints at 4 and 8
OVERRIDES = {"augment.enabled": False, "model.dropout": 0.0, "train.num_steps": NUM_STEPS,
             "train.checkpoint_every": 4}
TWO_PROCESS_MESH = {"mesh.data": -1}                 # (4, 1, 1) over 2 x 2 devices
ONE_PROCESS_MESH = {"mesh.data": 1, "mesh.fsdp": -1}  # (1, 2, 1): another device count and mesh


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(root, name: str, num_processes: int, overrides: dict, workdir=None,
           timeout: float = 900) -> tuple[str, list[dict]]:
  """Runs the worker in `num_processes` processes of 2 CPU devices; returns (workdir, records)."""
  workdir = str(workdir or root / name)
  spec = worker.write_spec(str(root / f"{name}.json"), str(root / "data"), workdir,
                           dict(OVERRIDES, **overrides))
  distributed = {}
  if num_processes > 1:
    distributed = dict(MGRU_COORDINATOR=f"localhost:{_free_port()}",
                       MGRU_NUM_PROCESSES=str(num_processes))
  procs, logs = [], []
  for i in range(num_processes):
    ids = dict(distributed, MGRU_PROCESS_ID=str(i)) if distributed else {}
    logs.append(open(root / f"{name}.{i}.log", "w+"))
    procs.append(subprocess.Popen(
        [sys.executable, os.path.join(worker.REPO_ROOT, "tests", "multihost_worker.py"), spec],
        env=worker.worker_env(2, str(root / "jax_cache"), **ids), cwd=worker.REPO_ROOT,
        stdout=logs[-1], stderr=subprocess.STDOUT))
  deadline = time.time() + timeout
  try:
    while any(p.poll() is None for p in procs) and time.time() < deadline:
      if any(p.returncode not in (None, 0) for p in procs):
        break
      time.sleep(0.5)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  failures = []
  for i, (p, log) in enumerate(zip(procs, logs)):
    log.seek(0)
    if p.returncode != 0:
      failures.append(f"--- process {i} exited with {p.returncode}:\n{log.read()[-3000:]}")
    log.close()
  assert not failures, "\n".join(failures)
  return workdir, worker.read_records(workdir, num_processes)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  root = tmp_path_factory.mktemp("multihost")
  worker.write_dataset(str(root / "data"), NUM_TRAIN, NUM_EVAL)
  return root


@pytest.fixture(scope="module")
def two_processes(root):
  return launch(root, "two_processes", 2, TWO_PROCESS_MESH)


@pytest.fixture(scope="module")
def one_process(root):
  return launch(root, "one_process", 1, ONE_PROCESS_MESH)


def _global_batches(records: list[dict]) -> list[set[int]]:
  """The examples of each training step: the union of the processes' local batches."""
  steps = zip(*(r["train"] for r in records))
  return [set().union(*batches) for batches in steps]


def _stream(records: list[dict]) -> list[int]:
  """Example ids in global stream order: process p's k-th example is position k * P + p."""
  per_process = [[i for batch in r["train"] for i in batch] for r in records]
  assert len({len(ids) for ids in per_process}) == 1
  return [ids[k] for k in range(len(per_process[0])) for ids in per_process]


def _assert_same_training(got_dir: str, got: dict, want_dir: str, want: dict,
                          steps: list[int]) -> None:
  """The losses of `steps`, the final train state and the eval metrics agree."""
  got_loss, want_loss = (worker.train_scalars(d, "train/loss") for d in (got_dir, want_dir))
  assert sorted(got_loss) == steps
  loss_diff = max(abs(got_loss[s] - want_loss[s]) for s in steps)
  state_diff = worker.max_difference(worker.checkpoint_arrays(got_dir, NUM_STEPS),
                                         worker.checkpoint_arrays(want_dir, NUM_STEPS))
  got_metrics, want_metrics = got["results"]["metrics"], want["results"]["metrics"]
  assert got_metrics.keys() == want_metrics.keys()
  metric_diff = max(abs(got_metrics[k] - want_metrics[k]) for k in want_metrics
                    if np.isfinite(want_metrics[k]))
  print(f"\nmax |diff|: loss {loss_diff:.2g}, state {state_diff:.2g}, metrics {metric_diff:.2g}")
  assert loss_diff <= LOSS_ATOL and state_diff <= STATE_ATOL and metric_diff <= METRIC_ATOL, (
      loss_diff, state_diff, metric_diff)
  for k in want_metrics:
    assert np.isfinite(got_metrics[k]) == np.isfinite(want_metrics[k]), k


@pytest.mark.multihost
def test_two_processes_train_and_only_process_0_writes(two_processes):
  workdir, records = two_processes
  assert [(r["process_index"], r["process_count"], r["local_devices"], r["devices"])
          for r in records] == [(0, 2, 2, 4), (1, 2, 2, 4)]
  assert all(r["results"]["step"] == NUM_STEPS for r in records)
  assert all(len(r["train"]) == NUM_STEPS for r in records)
  assert all(len(batch) == BATCH // 2 for r in records for batch in r["train"])
  # Both processes computed the same (global) eval metrics; process 0 wrote them.
  assert records[0]["results"]["metrics"] == records[1]["results"]["metrics"]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["metrics"] == records[0]["results"]["metrics"]
  assert records[0]["results"]["metrics"]["num_examples"] == NUM_EVAL
  events = [f for f in os.listdir(workdir) if f.startswith("events.out.tfevents")]
  assert len(events) == 1 and f".{records[0]['pid']}." in events[0], events
  assert sorted(worker.train_scalars(workdir, "train/loss")) == list(range(1, NUM_STEPS + 1))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "8"]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "4", "data_iter"))) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]


@pytest.mark.multihost
def test_every_example_once_per_epoch_across_processes(two_processes, one_process):
  _, records = two_processes
  stream = _stream(records)
  assert len(stream) == NUM_STEPS * BATCH
  epochs = [stream[e:e + NUM_TRAIN] for e in range(0, len(stream), NUM_TRAIN)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(NUM_TRAIN))
  assert len({tuple(epoch) for epoch in epochs}) == len(epochs)   # reshuffled every epoch
  # The processes' batches are disjoint and each step's global batch is the one of a
  # single process reading the same stream.
  for step, batches in enumerate(zip(*(r["train"] for r in records))):
    assert not set(batches[0]) & set(batches[1]), step
  assert _global_batches(records) == _global_batches(one_process[1])
  assert _stream(one_process[1]) == stream
  # Evaluation: every eval example exactly once, in equally many batches per process.
  for r in records:
    assert len(r["eval"]) == 1
  eval_ids = sorted(i for r in records for i in r["eval"][0])
  assert eval_ids == [worker.EVAL_ID_OFFSET + i for i in range(NUM_EVAL)]


@pytest.mark.multihost
def test_two_processes_match_one_process(two_processes, one_process):
  (two_dir, two), (one_dir, one) = two_processes, one_process
  assert one[0]["devices"] == 2 and one[0]["process_count"] == 1
  _assert_same_training(two_dir, two[0], one_dir, one[0], list(range(1, NUM_STEPS + 1)))


@pytest.mark.multihost
def test_resume_two_process_checkpoint_in_one_process(root, two_processes, one_process, tmp_path):
  source_dir, _ = two_processes
  shutil.copytree(os.path.join(source_dir, "checkpoints", "4"),
                  tmp_path / "checkpoints" / "4")
  workdir, records = launch(root, "two_to_one", 1, ONE_PROCESS_MESH, workdir=tmp_path)
  # Steps 5-8 ran here on exactly the batches of the uninterrupted 1-process run.
  assert records[0]["train"] == one_process[1][0]["train"][4:]
  _assert_same_training(workdir, records[0], one_process[0], one_process[1][0], [5, 6, 7, 8])


@pytest.mark.multihost
def test_resume_one_process_checkpoint_in_two_processes(root, two_processes, one_process,
                                                        tmp_path):
  source_dir, _ = one_process
  shutil.copytree(os.path.join(source_dir, "checkpoints", "4"),
                  tmp_path / "checkpoints" / "4")
  workdir, records = launch(root, "one_to_two", 2, TWO_PROCESS_MESH, workdir=tmp_path)
  for resumed, uninterrupted in zip(records, two_processes[1]):
    assert resumed["train"] == uninterrupted["train"][4:]
  _assert_same_training(workdir, records[0], two_processes[0], two_processes[1][0],
                        [5, 6, 7, 8])


# --- carrying the input position across process counts (no training, default suite) ---------


def _position(next_index, skipped=None):
  return {"parent": {"next_index": next_index}, "skipped_records": skipped or {}}


def test_reshard_iterator_states():
  two = [_position(24, {"video/features": 1}), _position(24, {"label/class": 2})]
  fresh = _position(0)
  assert checkpointing.reshard_iterator_states(two, 0, 1, fresh) == _position(
      48, {"video/features": 1, "label/class": 2})
  assert checkpointing.reshard_iterator_states(two, 2, 4, fresh) == _position(12)
  assert checkpointing.reshard_iterator_states([_position(12)], 1, 2, fresh) == _position(6)


@pytest.mark.parametrize("states, process_count, template, message", [
    ([_position(24), _position(25)], 1, _position(0), r"different record counts \[24, 25\]"),
    ([_position(5)], 2, _position(0), "5 records consumed in all are not divisible by 2"),
    ([{"next_index_in_cycle": 0, "iterators_in_use_states": [_position(8)]}], 2, _position(0),
     "data.worker_count=0"),
    ([_position(8)], 2, {"next_index_in_cycle": 0}, "data.worker_count=0"),
])
def test_reshard_iterator_states_refuses_inexact(states, process_count, template, message):
  with pytest.raises(ValueError, match=message):
    checkpointing.reshard_iterator_states(states, 0, process_count, template)


def _small_checkpoint(tmp_path):
  """A checkpoint of step 3 written by this (single) process: a small state + a train iterator."""
  import jax.numpy as jnp
  worker.write_dataset(str(tmp_path / "data"), 12, 4)
  config = worker.scale_config(str(tmp_path / "data"), {"train.batch_size": 4})
  data_iter = pipeline.create_train_iterator(config)
  batches = [worker.batch_ids(next(data_iter)) for _ in range(6)]   # 2 epochs of 3 batches
  state = {"w": jnp.arange(4.0)}
  manager = checkpointing.create_manager(str(tmp_path / "run"), keep=1)
  checkpointing.save(manager, 3, state, data_iter)
  manager.wait_until_finished()
  iterator_dir = tmp_path / "run" / "checkpoints" / "3" / "data_iter"
  return config, state, manager, iterator_dir, batches


def test_restore_carries_the_input_position_of_two_processes(tmp_path):
  """A position saved by 2 processes (here: rewritten into 2 files) resumes in 1 process."""
  config, state, manager, iterator_dir, batches = _small_checkpoint(tmp_path)
  (iterator_dir / "process_0-of-1.json").unlink()
  for i in range(2):   # each of 2 processes had read 6 records of its slice: 12 in all
    (iterator_dir / f"process_{i}-of-2.json").write_text(json.dumps(_position(6)))
  fresh = pipeline.create_train_iterator(config)
  restored, step = checkpointing.restore_latest(manager, {"w": state["w"] * 0}, fresh)
  assert step == 3 and restored["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
  assert [worker.batch_ids(next(fresh)) for _ in range(3)] == batches[3:]


def test_restore_refuses_an_inexact_input_position_and_says_what_to_do(tmp_path):
  config, state, manager, iterator_dir, _ = _small_checkpoint(tmp_path)
  (iterator_dir / "process_0-of-1.json").unlink()
  for i, records in enumerate([6, 7]):
    (iterator_dir / f"process_{i}-of-2.json").write_text(json.dumps(_position(records)))
  with pytest.raises(ValueError, match=r"written by 2 processes, with 1 processes: .*different "
                     r"record counts.*Resume with 2 processes.*or delete that data_iter folder"):
    checkpointing.restore_latest(manager, state, pipeline.create_train_iterator(config))


def test_restore_without_input_position_starts_the_stream_again(tmp_path):
  config, state, manager, iterator_dir, batches = _small_checkpoint(tmp_path)
  shutil.rmtree(iterator_dir)
  fresh = pipeline.create_train_iterator(config)
  restored, step = checkpointing.restore_latest(manager, state, fresh)
  assert step == 3 and restored["w"].tolist() == [0.0, 1.0, 2.0, 3.0]
  assert worker.batch_ids(next(fresh)) == batches[0]
