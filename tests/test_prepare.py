"""Dataset preparation on small fixture folders that mirror the DVD / Aff-Wild2 layouts.

Videos are synthetic (10 fps, 64 x 64): frame i is at i / 10 s, so with 2 s
windows and image steps at 2 fps the steps of window k are frames 20k, 20k+5,
20k+10, 20k+15. Real I3D and MiniLM weights, tiny random image model, the
"kinetics" captioner.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import tfrecord
from multimodal_gru.extract import config as config_lib
from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import tiny_models
from multimodal_gru.prepare import affwild2
from multimodal_gru.prepare import build
from multimodal_gru.prepare import dvd


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  c = config_lib.get_config()
  c.image.model = tiny_models.save_image_model(str(tmp_path_factory.mktemp("models") / "vit"))
  c.captioner.model = config_lib.KINETICS
  c.window_seconds = 2.0
  c.min_window_seconds = 0.5
  c.video.fps = 4.0           # one 8-frame 112 x 112 segment per 2 s window
  c.video.segment_frames = c.video.segment_stride = 8
  c.video.input_size = 112
  c.video.batch_size = 1
  c.num_shards = 2
  return c


def write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def video(path, seconds, seed=0):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sample_videos.write_synthetic_video(path, seconds=seconds, fps=10, seed=seed)


def read(out_dir, split):
  clips = [record_format.decode(r) for p in shards.split_files(out_dir, split)
           for r in tfrecord.TFRecordReader(p)]
  return {c.clip_id: c for c in clips}


def test_dvd(tmp_path, config):
  root = tmp_path / "DVD"
  video(f"{root}/videos/v0.mp4", 3.0)
  video(f"{root}/videos/sub/v1.avi", 2.0, seed=1)
  video(f"{root}/videos/v2.mp4", 2.0, seed=2)
  (root / "videos" / "bad.mp4").write_bytes(b"not a video" * 50)
  write(f"{root}/annotations/train/v0.csv", "start_frame,end_frame\n9,11\n")
  write(f"{root}/annotations/train/v1.csv",
        "frame,label\n" + "".join(f"{i},{int(i >= 10)}\n" for i in range(15)))
  write(f"{root}/annotations/train/ghost.csv", "start_frame,end_frame\n")
  write(f"{root}/annotations/val/v2.csv", "frame,label\n" + "".join(f"{i},0\n" for i in range(20)))
  write(f"{root}/annotations/val/bad.csv", "frame,label\n0,1\n")
  assert dvd.layout_problem(str(root)) is None
  out = str(tmp_path / "out")
  info = build.build("dvd", str(root), out, config)

  train, val = read(out, "train"), read(out, "eval")
  assert sorted(train) == ["v0-w0000", "v0-w0001", "v1-w0000"] and list(val) == ["v2-w0000"]
  v0, v0b, v1 = train["v0-w0000"], train["v0-w0001"], train["v1-w0000"]
  assert (v0.label, v0.step_class.tolist(), v0.valid.tolist()) == (1, [0, 0, 1, 0], [True] * 4)
  assert (v0b.label, v0b.step_class.tolist()) == (0, [0, 0])
  np.testing.assert_allclose(v0b.timestamps["image"], [2.0, 2.5])
  # Per-frame labels: frames 15.. are unannotated.
  assert (v1.label, v1.step_class.tolist(), v1.valid.tolist()) == (
      1, [0, 0, 1, 0], [True, True, True, False])
  assert val["v2-w0000"].label == 0 and val["v2-w0000"].valid.all()
  for clip in [v0, v0b, v1]:
    assert clip.features["video"].shape == (1, 1024) and clip.features["text"].shape[1] == 384
    assert len(clip.step_class) == len(clip.features["image"]) == len(clip.timestamps["image"])

  assert info["task"] == "classification" and info["num_classes"] == 2
  assert info["annotations_without_video"] == ["ghost"]
  split = info["splits"]["train"]
  assert (split["clips"], split["videos"], split["failed"]) == (3, 2, [])
  assert split["labels"]["clip_classes"] == {"0": 1, "1": 2}
  assert split["labels"]["step_classes"] == {"0": 7, "1": 2}
  assert info["splits"]["eval"]["failed"][0].startswith("bad: ")
  assert shards.read_dataset_info(out)["dims"] == {"video": 1024, "image": 32, "text": 384}


def test_affwild2(tmp_path, config):
  root = tmp_path / "Aff-Wild2"
  video(f"{root}/videos/batch1/a.mp4", 3.0)
  video(f"{root}/videos/batch2/b.avi", 2.0, seed=1)
  ann = f"{root}/annotations/VA_Estimation_Challenge"
  left = [(i / 100, -i / 100) if not 5 <= i < 10 else (-5, -5) for i in range(30)]
  right = [(-5, -5)] * 20 + [(0.5, 0.25)] * 2   # shorter than the video
  rows = lambda va: "valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in va)
  write(f"{ann}/Train_Set/a_left.txt", rows(left))
  write(f"{ann}/Train_Set/a_right.txt", rows(right))
  write(f"{ann}/Validation_Set/b.txt", rows([(0.3, 0.6)] * 20))
  write(f"{ann}/Validation_Set/missing.txt", rows([(0.3, 0.6)]))
  out = str(tmp_path / "out")
  info = build.build("affwild2", str(root), out, config)

  train, val = read(out, "train"), read(out, "eval")
  # a_right-w0000 has no annotated step and is left out.
  assert sorted(train) == ["a_left-w0000", "a_left-w0001", "a_right-w0001"]
  a0, a1, r1 = train["a_left-w0000"], train["a_left-w0001"], train["a_right-w0001"]
  np.testing.assert_allclose(a0.va, [[0, 0], [0, 0], [0.1, -0.1], [0.15, -0.15]], atol=1e-6)
  assert a0.valid.tolist() == [True, False, True, True]   # frame 5 is -5
  np.testing.assert_allclose(a1.va, [[0.2, -0.2], [0.25, -0.25]], atol=1e-6)
  np.testing.assert_allclose(a1.timestamps["image"], [2.0, 2.5])
  assert r1.valid.tolist() == [True, False] and r1.va[0].tolist() == [0.5, 0.25]
  assert val["b-w0000"].valid.all() and np.allclose(val["b-w0000"].va, [0.3, 0.6])
  assert a0.features["video"].shape == (1, 1024) and a0.features["image"].shape == (4, 32)

  assert info["task"] == "regression" and info["annotations_without_video"] == ["missing"]
  split = info["splits"]["train"]
  assert (split["clips"], split["videos"], split["annotations"]) == (3, 1, 2)
  assert split["labels"]["valid_steps"] == 6 and split["labels"]["valid_fraction"] == 0.75
  # The video behind both annotations was extracted once.
  cache = os.path.join(out, "extract_cache")
  assert len(os.listdir(os.path.join(cache, os.listdir(cache)[0]))) == 2


def test_annotation_files_are_checked(tmp_path):
  write(f"{tmp_path}/x.csv", "begin,end\n1,2\n")
  with pytest.raises(ValueError, match="header must be"):
    dvd.load_annotation(f"{tmp_path}/x.csv")
  write(f"{tmp_path}/y.csv", "frame,label\n3,2\n")
  with pytest.raises(ValueError, match="labels 0 or 1"):
    dvd.load_annotation(f"{tmp_path}/y.csv")
  write(f"{tmp_path}/z.txt", "arousal,valence\n0,0\n")
  with pytest.raises(ValueError, match="valence,arousal"):
    affwild2.load_va(f"{tmp_path}/z.txt")
  write(f"{tmp_path}/s.csv", "start_frame,end_frame\n2,4\n")
  labels, annotated = dvd.load_annotation(f"{tmp_path}/s.csv").labels(np.array([0, 2, 4, 5]))
  assert labels.tolist() == [0, 1, 1, 0] and annotated.all()


@pytest.mark.parametrize("dataset, args, expected", [
    ("affwild2", [], ["--manual_dir=None is not a folder", "ibug.doc.ic.ac.uk",
                      "VA_Estimation_Challenge/Train_Set"]),
    ("dvd", ["--manual_dir={tmp}"], ["missing folder", "annotations/train/<id>.csv", "EULA"]),
])
def test_missing_data_prints_instructions(tmp_path, dataset, args, expected):
  command = [sys.executable, "-m", "multimodal_gru.prepare", f"--dataset={dataset}",
             f"--out={tmp_path}/out"] + [a.format(tmp=tmp_path) for a in args]
  result = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  for text in expected:
    assert text in result.stderr
  assert not os.path.exists(tmp_path / "out")
