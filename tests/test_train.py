"""Training system: a train step, checkpoint round trip, resume after SIGKILL / SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import tiny_config
from input_pipeline import pipeline
from input_pipeline.shards import DataNotFoundError
from multimodal_gru import checkpointing, sharding, train
from multimodal_gru.models.model import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_step_updates_params_and_reports_finite_metrics(tiny_demo_dir):
  config = tiny_config(tiny_demo_dir)
  mesh = sharding.make_mesh(config.mesh)
  model = build_model(config)
  state, _ = train.create_train_state(config, model, mesh)
  batch = next(pipeline.create_train_iterator(config))
  step = jax.jit(train.make_train_step(config, model))
  before = jax.tree.map(np.asarray, state.params)
  new_state, metrics = step(state, batch, jax.random.key(0))   # learning rate 0: warmup starts at 0
  new_state, metrics = step(new_state, batch, jax.random.key(0))
  assert int(new_state.step) == 2 and float(metrics["learning_rate"]) > 0
  assert {"loss", "clip_loss", "step_loss", "recon_loss", "grad_norm", "learning_rate"} <= set(metrics)
  assert all(np.isfinite(float(v)) for v in metrics.values())
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before, jax.tree.map(np.asarray, new_state.params))
  assert all(jax.tree.leaves(changed))   # every parameter gets a gradient


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_train_and_evaluate_writes_results(tiny_demo_dir, tmp_path, task):
  config = tiny_config(tiny_demo_dir, task)
  results = train.train_and_evaluate(config, str(tmp_path))
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["step"] == 6 and on_disk["task"] == task
  assert on_disk["metrics"] == pytest.approx(results["metrics"])
  assert on_disk["metrics"]["num_examples"] == 40          # every eval example counted once
  assert on_disk["primary_metric"] in on_disk["metrics"]
  assert on_disk["config"]["model"]["hidden_dim"] == 16
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


def test_checkpoint_round_trip(tiny_demo_dir, tmp_path):
  config = tiny_config(tiny_demo_dir)
  mesh = sharding.make_mesh(config.mesh)
  model = build_model(config)
  state, _ = train.create_train_state(config, model, mesh)
  data_iter = pipeline.create_train_iterator(config)
  state, _ = jax.jit(train.make_train_step(config, model))(state, next(data_iter), jax.random.key(0))
  manager = checkpointing.create_manager(str(tmp_path), keep=2)
  checkpointing.save(manager, 1, state, data_iter)
  manager.wait_until_finished()
  expected_next = next(data_iter)

  fresh, _ = train.create_train_state(config, model, mesh)
  fresh_iter = pipeline.create_train_iterator(config)
  restored, step = checkpointing.restore_latest(manager, fresh, fresh_iter)
  assert step == 1 and int(restored.step) == 1
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)
  jax.tree.map(np.testing.assert_array_equal, restored.opt_state, state.opt_state)
  got_next = next(fresh_iter)
  for k in expected_next:
    np.testing.assert_array_equal(got_next[k], expected_next[k])


def test_missing_data_says_how_to_prepare(tmp_path):
  config = tiny_config(str(tmp_path / "nowhere"))
  with pytest.raises(DataNotFoundError, match="configs/demo.py"):
    train.train_and_evaluate(config, str(tmp_path / "wd"))


# --- resume through the real command line ------------------------------------

def _main_command(data_dir, workdir, num_steps=120):
  return [sys.executable, "-m", "multimodal_gru.main", "--config=configs/demo.py",
          f"--workdir={workdir}", f"--config.data.dir={data_dir}", "--config.data.generate_demo=False",
          "--config.model.hidden_dim=16", "--config.model.mlp_dim=32", "--config.model.num_heads=2",
          "--config.train.batch_size=8", "--config.train.eval_batch_size=16",
          f"--config.train.num_steps={num_steps}", "--config.train.log_every=10",
          f"--config.train.eval_every={num_steps}", "--config.train.checkpoint_every=10",
          "--config.optim.warmup_steps=5"]


def _finished_checkpoints(workdir):
  path = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(path) else []


def _run_until_checkpoint_then(sig, data_dir, workdir, timeout=300):
  """Starts a run, sends `sig` once its first checkpoint is complete; returns the exit code."""
  proc = subprocess.Popen(_main_command(data_dir, workdir), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + timeout
  while not _finished_checkpoints(workdir):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.time() < deadline, "no checkpoint appeared"
    time.sleep(0.05)
  proc.send_signal(sig)
  stderr = proc.communicate(timeout=timeout)[1]
  return proc.returncode, stderr


def _run(data_dir, workdir):
  done = subprocess.run(_main_command(data_dir, workdir), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(open(os.path.join(workdir, "results.json")).read()), done.stderr


def test_sigkill_then_rerun_matches_uninterrupted(tiny_demo_dir, tmp_path):
  reference, _ = _run(tiny_demo_dir, str(tmp_path / "reference"))
  workdir = str(tmp_path / "killed")
  code, _ = _run_until_checkpoint_then(signal.SIGKILL, tiny_demo_dir, workdir)
  assert code == -signal.SIGKILL
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  assert _finished_checkpoints(workdir)[-1] < 120          # it really stopped mid-way
  resumed, log = _run(tiny_demo_dir, workdir)
  assert "Restored checkpoint of step" in log
  assert resumed["step"] == reference["step"] == 120
  assert resumed["metrics"] == reference["metrics"]        # bitwise: same params, same data order


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resumes(tiny_demo_dir, tmp_path):
  reference, _ = _run(tiny_demo_dir, str(tmp_path / "reference"))
  workdir = str(tmp_path / "preempted")
  code, log = _run_until_checkpoint_then(signal.SIGTERM, tiny_demo_dir, workdir)
  assert code == 0, log[-3000:]
  assert "saved after SIGTERM" in log
  assert _finished_checkpoints(workdir)[-1] < 120
  resumed, _ = _run(tiny_demo_dir, workdir)
  assert resumed["metrics"] == reference["metrics"]
