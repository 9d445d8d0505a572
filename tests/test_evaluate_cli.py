"""`python -m multimodal_gru.evaluate` on a tiny run trained on a prepared fixture dataset.

Marked slow (training and two evaluation processes compile for minutes on 2
busy cores): `pytest tests/test_evaluate_cli.py -m slow`.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from input_pipeline import video_frames
from multimodal_gru import train

from test_evaluate_protocol import VIDEOS, FPS, config_for, make_dataset


def evaluate_command(*args):
  result = subprocess.run([sys.executable, "-m", "multimodal_gru.evaluate", *args],
                          capture_output=True, text=True, timeout=600)
  return result


@pytest.mark.slow
def test_evaluate_command(tmp_path):
  data, _ = make_dataset(tmp_path, "regression", splits=("train", "eval", "test"))
  stored = video_frames.read_split(data, "test")   # the test split has no labels
  video_frames.write_split(data, "test", [video_frames.VideoFrames(k, v.times)
                                          for k, v in stored.items()])
  config = config_for(data, "regression")
  config.train.num_steps = 3
  config.train.eval_every = config.train.checkpoint_every = 3
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)

  result = evaluate_command(f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  out = f"{workdir}/eval_eval"
  with open(f"{out}/metrics.json") as f:
    metrics = json.load(f)
  assert metrics["checkpoint_step"] == 3 and sorted(metrics["per_video"]) == sorted(VIDEOS)
  assert -1 <= metrics["metrics"]["video_ccc_mean"] <= 1
  assert "step_ccc_mean" in metrics["window_metrics"]
  assert f"video_ccc_mean = {metrics['metrics']['video_ccc_mean']:.4f}" in result.stdout
  with open(f"{out}/submission/affwild2_va.txt") as f:
    lines = f.read().splitlines()
  assert lines[0] == "image_location,valence,arousal"
  assert len(lines) == 1 + sum(round(s * FPS) for s in VIDEOS.values())
  rows = np.loadtxt(f"{out}/predictions/b.csv", delimiter=",", skiprows=1)
  assert rows.shape == (87, 6) and rows[:, 0].tolist() == list(range(87))
  with Image.open(f"{out}/frame_predictions.png") as image:
    assert image.format == "PNG"

  # The unlabelled test split, rows following an organisers' sample file.
  sample = tmp_path / "sample.txt"
  wanted = [f"c/{i:05d}.jpg" for i in range(1, 34)] + [f"a/{i:05d}.jpg" for i in range(1, 51)]
  sample.write_text("image_location,valence,arousal\n" + "".join(f"{n},0,0\n" for n in wanted))
  result = evaluate_command(f"--workdir={workdir}", "--split=test", f"--frame_list={sample}")
  assert result.returncode == 0, result.stderr
  out = f"{workdir}/eval_test"
  assert not os.path.exists(f"{out}/metrics.json")
  with open(f"{out}/submission/affwild2_va.txt") as f:
    names = [line.split(",")[0] for line in f.read().splitlines()[1:]]
  assert names == wanted   # c (31 frames) padded by 2 rows, a (53) cut to 50; b left out
  result = evaluate_command(f"--workdir={workdir}", "--split=test", "--checkpoint=2")
  assert result.returncode != 0 and "No checkpoint of step 2" in result.stderr
