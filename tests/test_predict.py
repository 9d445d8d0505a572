"""Predictions on raw video: extract a small dataset, train a tiny run, predict, check the errors.

The end-to-end tests (extraction, training, prediction) take minutes on 2 busy
cores and are marked slow: `pytest tests/test_predict.py -m slow`.

Real I3D and MiniLM weights, a tiny random image model and the "kinetics"
captioner (as in test_extract_pipeline.py). The labels are made up: the test
checks the pipeline, not the predictions.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from input_pipeline import shards
from multimodal_gru import demo_data
from multimodal_gru import predict
from multimodal_gru import train
from multimodal_gru.extract import config as extract_config
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import tiny_models

from conftest import tiny_config


def small_extraction_config(image_model):
  """2 s windows, image steps at 2 fps, one 8-frame 112 x 112 I3D segment per window."""
  c = extract_config.get_config()
  c.image.model = image_model
  c.captioner.model = extract_config.KINETICS
  c.window_seconds = 2.0
  c.min_window_seconds = 0.5
  c.video.fps = 4.0
  c.video.segment_frames = c.video.segment_stride = 8
  c.video.input_size = 112
  c.video.batch_size = 1
  c.image.fps = 2.0
  c.keyframes.max_count = 3
  return c


def labelled(clips, copies):
  """`copies` of each clip with made-up clip and step labels."""
  out = []
  for k in range(copies):
    for c in clips:
      t = len(c.features["image"])
      out.append(dataclasses.replace(c, clip_id=f"{c.clip_id}-{k}", label=k % 2,
                                     step_class=(np.arange(t) + k) % 2))
  return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, video, extractor) of a tiny run trained on features of a 4 s synthetic video."""
  root = tmp_path_factory.mktemp("predict")
  config = small_extraction_config(tiny_models.save_image_model(str(root / "vit")))
  extractor = pipeline.Extractor(config)
  video = sample_videos.write_synthetic_video(str(root / "walk.mp4"), seconds=4.0, fps=10,
                                              cut_at_seconds=2.5)
  clips = extractor.extract_video(video)
  data = str(root / "data")
  shards.write_split(data, "train", labelled(clips, 8), 2)
  shards.write_split(data, "eval", labelled(clips, 2), 1)
  shards.write_dataset_info(data, extractor.info())
  c = tiny_config(data)
  for m, d in extractor.dims.items():
    c.data.dims[m] = d
  c.train.num_steps = 3
  c.train.eval_every = c.train.checkpoint_every = 3
  workdir = str(root / "run")
  train.train_and_evaluate(c, workdir)
  return workdir, video, extractor


@pytest.mark.slow
def test_predict_video(run, tmp_path):
  workdir, video, extractor = run
  out = str(tmp_path / "out")
  [json_path] = predict.predict(workdir, [video], out)
  assert json_path == f"{out}/walk.json"
  with open(json_path) as f:
    result = json.load(f)
  assert result["task"] == "classification" and result["checkpoint_step"] == 3
  windows, timeline = result["windows"], result["timeline"]
  assert [w["clip_id"] for w in windows] == ["walk-w0000", "walk-w0001"]
  assert [(w["start"], w["end"]) for w in windows] == [(0.0, 2.0), (2.0, 4.0)]
  expected_times = np.concatenate([c.timestamps["image"] for c in extractor.extract_video(video)])
  np.testing.assert_allclose([s["time"] for s in timeline], expected_times, atol=1e-6)
  assert len(timeline) == sum(w["num_steps"] for w in windows) == 8   # 2 fps x 4 s
  assert np.all(np.diff([s["time"] for s in timeline]) > 0)
  assert [s["window"] for s in timeline] == [0] * 4 + [1] * 4
  for entry in windows + timeline:
    p = np.array(entry["probabilities"])
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(entry["violence_probability"], p[1], atol=1e-6)
  # The steps of a window see different inputs, so their predictions differ.
  assert len({round(s["violence_probability"], 6) for s in timeline}) > 1
  with Image.open(f"{out}/walk.png") as image:
    image.verify()
    assert image.format == "PNG" and image.size[0] > 400


def test_no_results_json(tmp_path):
  with pytest.raises(predict.PredictError, match="Train first"):
    predict.load_run_config(str(tmp_path))


def write_results(workdir, config):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"config": json.loads(config.to_json_best_effort())}, f)


def test_demo_data_run_cannot_take_video(tmp_path):
  data = str(tmp_path / "demo")
  config = tiny_config(data)
  write_results(tmp_path / "run", config)
  with pytest.raises(predict.PredictError, match="Cannot tell which encoders"):
    predict.extractor_for_run(predict.load_run_config(str(tmp_path / "run")))
  demo_data.ensure_demo_dataset(data, num_train=4, num_eval=4, num_shards=1)
  with pytest.raises(predict.PredictError, match="records no feature extraction"):
    predict.extractor_for_run(predict.load_run_config(str(tmp_path / "run")))
  config.data.generate_demo = True
  write_results(tmp_path / "run", config)
  with pytest.raises(predict.PredictError, match="generated demo data"):
    predict.extractor_for_run(predict.load_run_config(str(tmp_path / "run")))


def test_dims_mismatch(tmp_path):
  # The dims check comes before any encoder is loaded, so an info without encoders will do.
  data = str(tmp_path / "data")
  shards.write_dataset_info(data, {"dims": {"video": 1024, "image": 32, "text": 384},
                                   "extraction": {}})
  config = tiny_config(data)
  config.data.dims.update(video=1024, image=768, text=384)
  write_results(tmp_path / "run", config)
  with pytest.raises(predict.PredictError,
                     match=r"image: run 768, dataset 32.*--config.data.dims.image=32"):
    predict.extractor_for_run(predict.load_run_config(str(tmp_path / "run")))


@pytest.mark.slow
def test_command_line(run, tmp_path):
  workdir, video, _ = run
  command = [sys.executable, "-m", "multimodal_gru.predict", f"--workdir={workdir}",
             f"--video={video}", f"--out={tmp_path}"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  assert os.path.exists(f"{tmp_path}/walk.json") and os.path.exists(f"{tmp_path}/walk.png")
  result = subprocess.run([sys.executable, "-m", "multimodal_gru.predict",
                           f"--workdir={tmp_path}/none", f"--video={video}"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0 and "Train first" in result.stderr
