"""Training faults (issue 11): each fails early with one clear message, or recovers.

Indivisible batch sizes, two trainers on one workdir, a changed config, damaged
checkpoints, an unwritable workdir, a failed save, a bad eval record, config
typos and num_steps=0. The training runs share tiny_config's compiled shapes.
"""

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from input_pipeline import pipeline, shards
from multimodal_gru import checkpointing, demo_data, main, sharding, train, workdir
from multimodal_gru.models.model import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tiny_demo_dir, tmp_path_factory):
  """An uninterrupted tiny run: checkpoints 3 and 6, results.json, config.json."""
  path = tmp_path_factory.mktemp("trained")
  results = train.train_and_evaluate(tiny_config(tiny_demo_dir), str(path))
  return str(path), results


def _copy(trained, tmp_path) -> str:
  dst = str(tmp_path / "wd")
  shutil.copytree(trained[0], dst, ignore=shutil.ignore_patterns(".lock"))
  return dst


def _subprocess(args, env=None, timeout=120):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=dict(os.environ, **(env or {})))


# --- 1. batch sizes the mesh cannot split ---------------------------------------------------

def test_batch_size_check_names_the_field_counts_and_nearest_sizes():
  with pytest.raises(sharding.BatchSizeError) as e:
    sharding.check_batch_sizes({"batch_size": 30, "eval_batch_size": 16}, num_shards=8,
                               process_count=1, device_count=8)
  msg = str(e.value)
  assert "config.train.batch_size=30 (nearest valid: 24 or 32)" in msg
  assert "eval_batch_size" not in msg.split(":")[0]          # 16 is fine
  assert "8 batch shards" in msg and "8 devices in 1 process" in msg
  with pytest.raises(sharding.BatchSizeError, match=r"eval_batch_size=4 \(nearest valid: 8\)"):
    sharding.check_batch_sizes({"batch_size": 16, "eval_batch_size": 4}, 8, 2, 8)
  with pytest.raises(sharding.BatchSizeError, match=r"batch_size=6 \(nearest valid: 4 or 8\)"):
    sharding.check_batch_sizes({"batch_size": 6}, num_shards=2, process_count=4, device_count=8)
  sharding.check_batch_sizes({"batch_size": 32, "eval_batch_size": 64}, 8, 2, 16)


def test_indivisible_batch_stops_before_data_and_model(tmp_path):
  """8 simulated devices, batch 30: one line from main, before the (missing) data is read."""
  done = _subprocess(
      ["-m", "multimodal_gru.main", "--config=configs/demo.py", f"--workdir={tmp_path / 'wd'}",
       f"--config.data.dir={tmp_path / 'no_data'}", "--config.data.generate_demo=False",
       "--config.train.batch_size=30"],
      env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 1, done.stderr[-3000:]
  assert "config.train.batch_size=30 (nearest valid: 24 or 32)" in done.stderr
  assert "Traceback" not in done.stderr and "no_data" not in done.stderr


# --- 2. the workdir: lock and recorded config -------------------------------------------------

def test_second_trainer_stops_at_once_and_names_the_holder(tiny_demo_dir, tmp_path):
  wd = str(tmp_path / "wd")
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys, time; from multimodal_gru.workdir import WorkdirLock; "
       "WorkdirLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", wd],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    os.makedirs(wd)
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.time()
    with pytest.raises(workdir.WorkdirError) as e:
      train.train_and_evaluate(tiny_config(tiny_demo_dir), wd)
    assert time.time() - t0 < 5
    msg = str(e.value)
    assert f"pid {holder.pid} on host " in msg and "started 20" in msg and ".lock" in msg
    assert "another --workdir" in msg
    assert not os.path.exists(os.path.join(wd, "checkpoints"))
  finally:
    holder.kill()
    holder.wait()
  with workdir.WorkdirLock(wd):   # the kernel released the killed holder's lock
    with pytest.raises(workdir.WorkdirError, match=f"pid {os.getpid()} "):
      workdir.WorkdirLock(wd).acquire()
  workdir.WorkdirLock("gs://bucket/run").acquire()   # remote: no lock, no error


def test_config_is_recorded_and_a_model_change_stops_with_a_diff(trained, tmp_path):
  wd = _copy(trained, tmp_path)
  with open(os.path.join(wd, "config.json")) as f:
    assert json.load(f)["model"]["hidden_dim"] == 16
  config = tiny_config(trained[1]["config"]["data"]["dir"])
  config.model.hidden_dim = 32
  config.data.shuffle_seed = 1
  config.train.num_steps = 9          # harmless: not in the diff
  with pytest.raises(workdir.WorkdirError) as e:
    train.train_and_evaluate(config, wd)
  msg = str(e.value)
  assert "model.hidden_dim: 16 -> 32" in msg and "data.shuffle_seed: 0 -> 1" in msg
  assert "num_steps" not in msg and "--config.train.allow_config_change=True" in msg
  config.train.allow_config_change = True
  assert workdir.check_config(wd, config)        # resumes on purpose: record the new config


def test_harmless_changes_resume(trained, tmp_path, caplog):
  """Intervals, eval batch, reading threads, mesh and skip policy may change."""
  wd = _copy(trained, tmp_path)
  config = tiny_config(trained[1]["config"]["data"]["dir"])
  config.train.update(log_every=2, eval_every=2, checkpoint_every=2, keep_checkpoints=5)
  config.data.update(read_threads=2, skip_bad_records=True, worker_buffer_size=4)
  assert not workdir.check_config(wd, config)
  caplog.set_level(logging.INFO)
  results = train.train_and_evaluate(config, wd)   # restores step 6 = num_steps: evaluates
  assert results["step"] == 6 and results["metrics"] == trained[1]["metrics"]
  assert "Restored step 6 >= num_steps=6" in caplog.text


# --- 3. damaged checkpoints -----------------------------------------------------------------

def _truncate_largest(folder):
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
  path = max(files, key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(100)


def test_truncated_newest_checkpoint_falls_back_and_finishes(trained, tmp_path, caplog, capfd):
  wd = _copy(trained, tmp_path)
  _truncate_largest(os.path.join(wd, "checkpoints", "6", "state"))
  results = train.train_and_evaluate(tiny_config(trained[1]["config"]["data"]["dir"]), wd)
  # Steps 4-6 reran from the intact step-3 checkpoint: bitwise the uninterrupted run.
  assert results["step"] == 6 and results["metrics"] == trained[1]["metrics"]
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  unreadable = [w for w in warnings if "is unreadable" in w]
  assert len(unreadable) == 1 and f"{wd}/checkpoints/6 is unreadable" in unreadable[0]
  assert "\n" not in unreadable[0] and "Requested byte range" in unreadable[0]
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3", "6", "6.unreadable"]
  err = capfd.readouterr().err
  assert "Event loop is closed" not in err and "Traceback" not in err


def _fresh_state(config):
  mesh = sharding.make_mesh(config.mesh)
  state, _ = train.create_train_state(config, build_model(config), mesh)
  return state, pipeline.create_train_iterator(config)


def test_damaged_iterator_file_falls_back_bit_exact_or_says_which_file(trained, tmp_path, caplog):
  wd = _copy(trained, tmp_path)
  config = tiny_config(trained[1]["config"]["data"]["dir"])
  with open(os.path.join(wd, "checkpoints", "6", "data_iter", "process_0-of-1.json"), "w") as f:
    f.write('{"parent": {"next_')
  state, data_iter = _fresh_state(config)
  restored, step = checkpointing.restore_latest(
      checkpointing.create_manager(wd, 3), state, data_iter)
  assert step == 3 and int(restored.step) == 3
  assert "checkpoints/6/data_iter/process_0-of-1.json is not a readable input position" in caplog.text
  # The fallback is bit-exact: the step-3 checkpoint as an undamaged manager restores it.
  pristine = checkpointing.create_manager(trained[0], 3)
  want = pristine.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore(
      jax.tree.map(ocp.utils.to_shape_dtype_struct, state))))["state"]
  jax.tree.map(np.testing.assert_array_equal, restored.params, want.params)
  jax.tree.map(np.testing.assert_array_equal, restored.opt_state, want.opt_state)

  with open(os.path.join(wd, "checkpoints", "3", "data_iter", "process_0-of-1.json"), "w") as f:
    f.write("")
  shutil.move(os.path.join(wd, "checkpoints", "6.unreadable"), os.path.join(wd, "checkpoints", "6"))
  state, data_iter = _fresh_state(config)
  with pytest.raises(checkpointing.CheckpointError) as e:
    checkpointing.restore_latest(checkpointing.create_manager(wd, 3), state, data_iter)
  msg = str(e.value)
  assert f"No readable checkpoint in {wd}/checkpoints" in msg
  assert "step 6:" in msg and "step 3:" in msg and "checkpoints/3/data_iter/process_0-of-1.json" in msg
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3", "6"]   # nothing moved


# --- 4. unwritable workdir, failed save ------------------------------------------------------

def test_unwritable_workdir_stops_before_any_work(tiny_demo_dir, tmp_path):
  config = tiny_config(tiny_demo_dir)
  (tmp_path / "file").write_text("in the way")
  with pytest.raises(workdir.WorkdirError, match=r"file/wd: .*errno 20, ENOTDIR.*another --workdir"):
    train.train_and_evaluate(config, str(tmp_path / "file" / "wd"))
  with pytest.raises(workdir.WorkdirError, match=r"errno 17, EEXIST"):
    train.train_and_evaluate(config, str(tmp_path / "file"))
  if not os.path.exists("/dev/full"):
    pytest.skip("no /dev/full for a real ENOSPC")
  wd = tmp_path / "full"
  wd.mkdir()
  os.symlink("/dev/full", wd / ".write_probe.0")   # the probe's writes hit a full device
  with pytest.raises(workdir.WorkdirError,
                     match=r"write_probe.0: No space left on device \(errno 28, ENOSPC\); free"):
    train.train_and_evaluate(config, str(wd))
  assert sorted(os.listdir(wd)) == [".write_probe.0"]


def test_failed_save_ends_the_run_and_keeps_the_previous_checkpoint(trained, tmp_path,
                                                                   monkeypatch, capfd):
  wd = str(tmp_path / "wd")
  config = tiny_config(trained[1]["config"]["data"]["dir"])
  save = grain.checkpoint.CheckpointHandler.save

  def disk_full_at_step_6(self, directory, *args, **kwargs):   # runs in orbax's save thread
    if os.path.basename(os.path.dirname(str(directory))).startswith("6."):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return save(self, directory, *args, **kwargs)

  monkeypatch.setattr(grain.checkpoint.CheckpointHandler, "save", disk_full_at_step_6)
  with pytest.raises(checkpointing.CheckpointSaveError) as e:
    train.train_and_evaluate(config, wd)
  msg = str(e.value)
  assert "No space left on device (errno 28, ENOSPC); free disk space" in msg
  assert f"{wd}/checkpoints/6" in msg and f"step 3 in {wd}/checkpoints is intact" in msg
  assert "\n" not in msg and "Traceback" not in capfd.readouterr().err.split("ENOSPC")[-1]
  monkeypatch.setattr(grain.checkpoint.CheckpointHandler, "save", save)
  results = train.train_and_evaluate(config, wd)   # resumes from 3, saves 6 again
  assert results["metrics"] == trained[1]["metrics"]


def test_main_drops_orbax_oserror_tracebacks_keeps_the_line():
  quiet = main._QuietLibraries()
  try:
    raise OSError(errno.ENOSPC, "No space left on device")
  except OSError:
    exc_info = sys.exc_info()
  orbax_path = "/x/site-packages/orbax/checkpoint/_src/futures/future.py"
  record = logging.LogRecord("absl", logging.ERROR, orbax_path, 1, "save failed", (), exc_info)
  assert quiet.filter(record) and record.exc_info is None
  info = logging.LogRecord("absl", logging.INFO, orbax_path, 1, "chatter", (), None)
  assert not quiet.filter(info)


# --- 5. bad eval records ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_eval_dir(tmp_path_factory):
  """The tiny dataset with a NaN in eval clip 5 (the framing and CRC are intact)."""
  path = str(tmp_path_factory.mktemp("bad_eval"))
  shards.write_split(path, "train", demo_data.generate_clips("train", 96, 0), 2)
  clips = list(demo_data.generate_clips("eval", 40, 0))
  clips[5].features["video"][0, 0] = np.nan
  shards.write_split(path, "eval", clips, 2)
  return path


def test_bad_eval_record_after_the_final_save_then_skip_counts_it(bad_eval_dir, tmp_path, caplog):
  wd = str(tmp_path / "wd")
  config = tiny_config(bad_eval_dir)
  with pytest.raises(pipeline.BadRecordError, match="video/features"):
    train.train_and_evaluate(config, wd)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["3", "6"]   # saved first
  config.data.skip_bad_records = True   # what the error suggests; may change on a rerun
  results = train.train_and_evaluate(config, wd)   # restores 6, evaluates only
  assert results["step"] == 6 and results["metrics"]["num_examples"] == 39
  assert results["skipped_records"] == {"train": {}, "eval": {"video/features": 1}}
  with open(os.path.join(wd, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk["skipped_records"]["eval"] == {"video/features": 1}
  assert on_disk["data_check"]["eval"]["records"] == 40
  assert on_disk["data_check"]["train"]["records"] == 96
  assert "Skipped 1 bad eval records" in caplog.text and "cover 39 examples" in caplog.text


# --- 6. config typos, 7. num_steps=0 --------------------------------------------------------

def test_config_typo_is_one_line_with_did_you_mean(tmp_path):
  done = _subprocess(["-m", "multimodal_gru.main", "--config=configs/demo.py",
                      f"--workdir={tmp_path}", "--config.model.fusionn=x"])
  assert done.returncode != 0
  assert 'Did you mean "fusion" instead of "fusionn"?' in done.stderr
  assert "Traceback" not in done.stderr and "--config.model.fusionn=x" in done.stderr


def test_num_steps_0_evaluates_the_initial_model(tiny_demo_dir, tmp_path, caplog):
  config = tiny_config(tiny_demo_dir)
  config.train.num_steps = 0
  caplog.set_level(logging.INFO)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results["step"] == 0 and results["metrics"]["num_examples"] == 40
  assert "num_steps=0: evaluating the initial (untrained) model" in caplog.text
