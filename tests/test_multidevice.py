"""Training on 8 simulated CPU devices equals training on 1 (issue "Scale").

Every run is `train.train_and_evaluate` in a fresh Python (tests/multihost_worker.py),
because XLA_FLAGS must set the device count before jax is imported. The runs
share the data, the config and the global batch, so on any mesh they should
differ only by the order of float32 reductions. Measured on this machine (CPU,
6 steps, augmentation and dropout on):
  train loss at every step   max |diff| 2.4e-7
  params and optimizer state max |diff| 2.5e-7 (data=2,model=4; 1.2e-7 otherwise)
  eval metrics               identical
The tolerances below leave about 10x room.
"""

import os
import shutil
import statistics
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import multihost_worker as worker

LOSS_ATOL = 3e-6
STATE_ATOL = 2e-6
METRIC_ATOL = 1e-6
NUM_STEPS = 6          # checkpoints at 3 and 6 (scale_config)
MESHES = {
    "data8": {"mesh.data": -1},
    "data2_fsdp4": {"mesh.data": 2, "mesh.fsdp": 4},
    "data2_model4": {"mesh.data": 2, "mesh.model": 4},
}


def run_worker(root, name: str, num_devices: int, overrides: dict, workdir=None,
               timeout: int = 900) -> tuple[str, dict]:
  """One training run in a subprocess; returns (workdir, record of process 0)."""
  workdir = str(workdir or root / name)
  spec = worker.write_spec(str(root / f"{name}.json"), str(root / "data"), workdir, overrides)
  result = subprocess.run([sys.executable, os.path.join(worker.REPO_ROOT, "tests",
                                                        "multihost_worker.py"), spec],
                          env=worker.worker_env(num_devices), cwd=worker.REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-5000:]
  return workdir, worker.read_records(workdir, 1)[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """name -> (workdir, record); each run happens once, when a test first asks for it."""
  root = tmp_path_factory.mktemp("multidevice")
  worker.write_dataset(str(root / "data"), num_train=32, num_eval=24)
  done = {}

  def get(name):
    if name not in done:
      if name == "1_device":
        done[name] = run_worker(root, name, 1, {"mesh.data": 1})
      else:
        done[name] = run_worker(root, name, 8, MESHES[name])
      _report_step_time(name, done[name][0])
    return done[name]

  get.root = root
  return get


def _report_step_time(name: str, workdir: str) -> None:
  """Prints the median train step time (steps 2, 3, 5, 6: no compile, no first checkpoint)."""
  steps_per_sec = worker.train_scalars(workdir, "train/steps_per_sec")
  median = statistics.median(1 / steps_per_sec[s] for s in (2, 3, 5, 6))
  print(f"\n{name}: median train step {1e3 * median:.1f} ms")


def _assert_same_training(got: tuple[str, dict], want: tuple[str, dict], step: int) -> None:
  (got_dir, got_record), (want_dir, want_record) = got, want
  got_loss, want_loss = (worker.train_scalars(d, "train/loss") for d in (got_dir, want_dir))
  assert sorted(got_loss) == sorted(want_loss) == list(range(1, step + 1))
  np.testing.assert_allclose([got_loss[s] for s in sorted(got_loss)],
                             [want_loss[s] for s in sorted(want_loss)], rtol=0, atol=LOSS_ATOL)
  absolute = worker.max_difference(worker.checkpoint_arrays(got_dir, step),
                                       worker.checkpoint_arrays(want_dir, step))
  assert absolute <= STATE_ATOL, absolute
  got_metrics, want_metrics = got_record["results"]["metrics"], want_record["results"]["metrics"]
  assert got_metrics.keys() == want_metrics.keys()
  for key in want_metrics:
    np.testing.assert_allclose(got_metrics[key], want_metrics[key], rtol=0, atol=METRIC_ATOL,
                               equal_nan=True, err_msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_8_devices_train_like_1_device(runs, mesh):
  workdir, record = runs(mesh)
  assert record["devices"] == 8 and record["results"]["step"] == NUM_STEPS
  _assert_same_training(runs(mesh), runs("1_device"), NUM_STEPS)
  # The comparison is not vacuous: the state really was sharded as the mesh says.
  specs = worker.checkpoint_partition_specs(workdir, NUM_STEPS)
  axes = {axis for spec in specs.values() for axis in spec if axis}
  assert axes == {"data8": set(), "data2_fsdp4": {"fsdp"}, "data2_model4": {"model"}}[mesh]


@pytest.mark.slow
def test_resume_8_device_checkpoint_on_4_devices(runs, tmp_path):
  """Model and optimizer state saved on 8 devices (fsdp) continue on 4 (model parallel)."""
  source_dir, source = runs("data2_fsdp4")
  workdir = tmp_path / "resumed"
  shutil.copytree(os.path.join(source_dir, "checkpoints", "3"), workdir / "checkpoints" / "3")
  resumed_dir, resumed = run_worker(runs.root, "resumed_on_4", 4,
                                    {"mesh.data": 2, "mesh.model": 2}, workdir=workdir)
  assert resumed["devices"] == 4 and resumed["results"]["step"] == NUM_STEPS
  # Steps 4-6 ran here, on the batches the uninterrupted run drew for them.
  assert sorted(worker.train_scalars(resumed_dir, "train/loss")) == [4, 5, 6]
  assert resumed["train"] == source["train"][3:]
  specs = worker.checkpoint_partition_specs(resumed_dir, NUM_STEPS)
  assert {axis for spec in specs.values() for axis in spec if axis} == {"model"}

  absolute = worker.max_difference(worker.checkpoint_arrays(resumed_dir, NUM_STEPS),
                                       worker.checkpoint_arrays(source_dir, NUM_STEPS))
  assert absolute <= STATE_ATOL, absolute
  loss, source_loss = (worker.train_scalars(d, "train/loss") for d in (resumed_dir, source_dir))
  np.testing.assert_allclose([loss[s] for s in (4, 5, 6)], [source_loss[s] for s in (4, 5, 6)],
                             rtol=0, atol=LOSS_ATOL)
  for key, value in source["results"]["metrics"].items():
    np.testing.assert_allclose(resumed["results"]["metrics"][key], value, rtol=0,
                               atol=METRIC_ATOL, equal_nan=True, err_msg=key)


_DEMO_MODEL_INIT = """
import jax
from configs import demo
from multimodal_gru import sharding, train
from multimodal_gru.models.model import build_model

config = demo.get_config()
mesh = sharding.make_mesh(config.mesh)
state, _ = train.create_train_state(config, build_model(config), mesh)
jax.block_until_ready(state)
print("initialised on", jax.device_count(), "devices")
"""


@pytest.mark.slow
def test_demo_model_initialises_on_8_devices():
  """configs/demo.py's model (hidden 64) on 8 CPU devices of a machine with fewer cores.

  The GRU init runs batched QRs (vmap of an orthogonal init); jaxlib's LAPACK
  kernel splits such a batch over the intra-op thread pool (as many threads as
  devices here) and blocks a pool thread until the parts finish. With every
  device doing the same, all pool threads wait and the init deadlocks.
  """
  env = worker.worker_env(8)
  try:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(_DEMO_MODEL_INIT)], env=env,
                            cwd=worker.REPO_ROOT, capture_output=True, text=True, timeout=240)
  except subprocess.TimeoutExpired:
    pytest.fail("create_train_state hung on 8 CPU devices (batched QR in the GRU init)")
  assert result.returncode == 0, result.stderr[-5000:]
  assert "initialised on 8 devices" in result.stdout
