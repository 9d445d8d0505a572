"""Dataset preparation on small fixture folders that mirror the DVD / Aff-Wild2 layouts.

Videos are synthetic (10 fps, 64 x 64): frame i is at i / 10 s, so with 2 s
windows and image steps at 2 fps the steps of window k are frames 20k, 20k+5,
20k+10, 20k+15. Real I3D and MiniLM weights, tiny random image model, the
"kinetics" captioner.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import tfrecord
from input_pipeline import video_frames
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
  right = [(-5, -5)] * 20 + [(0.5, 0.25)] * 2 + [(-5, -5)] * 5   # 3 frames short: tolerated
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


def solid_jpg(path, value, size=48):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def test_face_crops_fill_missing_frames(tmp_path):
  for number in (2, 3, 7):
    solid_jpg(f"{tmp_path}/v/{number:05d}.jpg", 30 * number)
  crops = affwild2.FaceCrops(f"{tmp_path}/v", 32)
  # 0-based frames -> 1-based crops: the frame's own, else the previous one (the first crop first).
  assert crops.crop_numbers(np.array([0, 1, 2, 3, 5, 6, 9])).tolist() == [2, 2, 3, 3, 3, 7, 7]
  images = crops(np.array([0, 6, 9]))
  assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_allclose(images.reshape(3, -1).mean(1), [60, 210, 210], atol=2)
  assert crops.filled == 2
  with pytest.raises(ValueError, match="no face crops"):
    affwild2.FaceCrops(f"{tmp_path}/none", 32)


def test_affwild2_face_crops_overlap_and_frame_files(tmp_path, config):
  c = config.copy_and_resolve_references()
  c.window_stride_seconds = 1.0
  c.image.source = "cropped_aligned"
  root = tmp_path / "Aff-Wild2"
  video(f"{root}/videos/a.mp4", 3.0)
  ann = f"{root}/annotations/VA_Estimation_Challenge"
  rows = lambda va: "valence,arousal\n" + "".join(f"{v},{a}\n" for v, a in va)
  write(f"{ann}/Train_Set/a_left.txt", rows([(i / 40, 0.5) for i in range(30)]))
  write(f"{ann}/Train_Set/a_right.txt", rows([(-5, -5)] * 10 + [(0.1, 0.2)] * 18))   # 2 short
  os.makedirs(f"{ann}/Validation_Set")
  for number in range(1, 31):   # a_left: its own crops, 6..10 missing; a_right: the video's
    if not 6 <= number <= 10:
      solid_jpg(f"{root}/cropped_aligned/a_left/{number:05d}.jpg", 5 * number)
    solid_jpg(f"{root}/cropped_aligned/a/{number:05d}.jpg", 250 - 5 * number)
  out = str(tmp_path / "out")
  info = build.build("affwild2", str(root), out, c)
  assert info["extraction"]["config"]["image"]["source"] == "cropped_aligned"

  train = read(out, "train")
  # 2 s windows every 1 s; a third one, [2, 3), would only repeat the second one's tail.
  assert sorted(train) == [f"a_{s}-w000{k}" for s in ("left", "right") for k in range(2)]
  left = [train[f"a_left-w000{k}"] for k in range(2)]
  assert [w.frame_index.tolist() for w in left] == [[0, 5, 10, 15], [10, 15, 20, 25]]
  for w in left:
    assert (w.video_id, w.num_frames, w.fps) == ("a_left", 30, pytest.approx(10.0))
  np.testing.assert_allclose(left[1].va[:, 0], [0.25, 0.375, 0.5, 0.625])
  right = train["a_right-w0001"]
  assert right.video_id == "a_right" and right.valid.tolist() == [True] * 4
  # The video stream stays on the full frames; the image streams read each subject's crops.
  np.testing.assert_array_equal(right.features["video"], left[1].features["video"])
  assert not np.allclose(right.features["image"], left[1].features["image"])

  stored = video_frames.read_split(out, "train")
  assert sorted(stored) == ["a_left", "a_right"] and video_frames.read_split(out, "eval") == {}
  np.testing.assert_allclose(stored["a_left"].times, np.arange(30) / 10, atol=1e-6)
  np.testing.assert_allclose(stored["a_left"].labels[:, 0], np.arange(30) / 40, atol=1e-6)
  assert stored["a_right"].annotated().tolist() == [False] * 10 + [True] * 18 + [False] * 2

  # An annotation far off the video's frame count stops the preparation, naming the file.
  write(f"{ann}/Train_Set/a_right.txt", rows([(0.1, 0.2)] * 12))
  with pytest.raises(video_frames.FrameCountError, match="a_right.txt .*12 annotated frames, "
                     "but the video decodes to 30"):
    build.build("affwild2", str(root), out, c)
  os.remove(f"{ann}/Train_Set/a_right.txt")
  shutil.rmtree(f"{root}/cropped_aligned/a_left")
  shutil.rmtree(f"{root}/cropped_aligned/a")
  with pytest.raises(ValueError, match="No face crops for .*a_left.txt"):
    build.build("affwild2", str(root), out, c)
