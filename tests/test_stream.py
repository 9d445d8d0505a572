"""Streaming: a file as a live source, per-hop records equal to predict's, stalls and cuts.

The run (from test_predict.py: real I3D and MiniLM, a tiny random image model,
"kinetics" captions) has 2 s windows; its grids (one 2 s I3D segment, image
steps every 0.5 s) line up with the offline windows at stream times 2 and 4.
"""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from multimodal_gru import predict
from multimodal_gru.extract import decode
from multimodal_gru.extract import sample_videos
from multimodal_gru.stream import runner
from multimodal_gru.stream import source as source_lib

from test_predict import run  # noqa: F401  (the module-scoped fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def streamer(run):  # noqa: F811
  workdir, video, _ = run
  s = runner.Streamer(workdir, hop_seconds=1.0, threshold=0.0, min_seconds=2.0)
  s.warm_up()
  return s


def stream(streamer, source, **kwargs):
  records = []
  png = kwargs.pop("png", None)
  closed = streamer.run(streamer.open(source, **kwargs), records.append, png)
  hops = [r for r in records if r["event"] == "hop"]
  assert records[-1] is closed and closed["event"] == "close"
  return hops, closed


def test_realtime_file_matches_predict(run, streamer, tmp_path):  # noqa: F811
  workdir, video, extractor = run
  png = str(tmp_path / "walk.png")
  hops, closed = stream(streamer, video, realtime=True, png=png)
  # 4 s of video at 10 fps: hops at 1, 2, 3 s and a last one a frame period after 3.9 s.
  np.testing.assert_allclose([h["stream_time"] for h in hops], [1, 2, 3, 4], atol=1e-6)
  assert np.all(np.diff([h["wall_time"] for h in hops]) > 0)
  assert [h["hop"] for h in hops] == [1, 2, 3, 4]
  assert closed["reason"] == "end" and closed["hops"] == 4 and closed["dropped_frames"] == 0
  assert closed["wall_seconds"] >= 3.5   # paced at the frame rate, not as fast as possible
  for h in hops:
    assert set(h["latency_ms"]) == {"decode", "video", "image", "captioner", "text", "model",
                                    "total"}
    assert h["window"] == [max(0.0, h["stream_time"] - 2.0), h["stream_time"]]
  # Each image step is reported once, at the hop after it.
  times = [s["time"] for h in hops for s in h["steps"]]
  np.testing.assert_allclose(times, np.arange(8) * 0.5, atol=1e-6)
  # The alert (threshold 0) starts once the probability was above it for 2 s.
  assert [h["alert"] and h["alert"]["state"] for h in hops] == [None, "start", "ongoing",
                                                                 "ongoing"]
  assert closed["alerts"] == [{"start": 0.0, "end": 4.0}]

  offline = predict.predict_video(video, extractor, streamer.predictor)
  for hop, window in ((hops[1], offline["windows"][0]), (hops[3], offline["windows"][1])):
    assert hop["window"] == [window["start"], window["end"]]
    np.testing.assert_allclose(hop["probabilities"], window["probabilities"], atol=1e-5)
    steps = [s for s in offline["timeline"] if s["window"] == window["index"]]
    got = {round(s["time"], 3): s["probabilities"] for s in hop["steps"]}
    for s in steps:
      if round(s["time"], 3) in got:
        np.testing.assert_allclose(got[round(s["time"], 3)], s["probabilities"], atol=1e-5)
    assert len(got) == 2
  # Windows that do not coincide with offline ones (start at 1 s) still get scores.
  assert hops[2]["num_steps"]["image"] == 4 and hops[2]["num_steps"]["video"] == 1
  with Image.open(png) as image:
    image.verify()
    assert image.format == "PNG"


def _write_ts(path, seconds=4.0, fps=10):
  """A streamable (MPEG-TS) synthetic video: it decodes from any prefix of its bytes."""
  decode.write_video(path, sample_videos.synthetic_frames(round(seconds * fps), 64), fps)
  return path


def test_stalled_source_closes_cleanly(streamer, tmp_path):
  data = open(_write_ts(str(tmp_path / "v.ts")), "rb").read()
  fifo = str(tmp_path / "camera.ts")
  os.mkfifo(fifo)
  release = threading.Event()

  def writer():   # half the video, then silence with the pipe still open
    with open(fifo, "wb") as f:
      f.write(data[:len(data) // 2])
      f.flush()
      release.wait(60)

  thread = threading.Thread(target=writer, daemon=True)
  thread.start()
  try:
    start = time.monotonic()
    png = str(tmp_path / "stall.png")
    hops, closed = stream(streamer, fifo, stall_seconds=1.5, png=png)
    assert time.monotonic() - start < 30
  finally:
    release.set()
    thread.join(5)
  assert closed["reason"] == "stall" and "no frame for 1.5 s" in closed["message"]
  assert 1 <= len(hops) and hops[-1]["stream_time"] < 3.5
  assert os.path.exists(png)


@pytest.mark.slow
def test_command_line_truncated_file(run, tmp_path):  # noqa: F811
  workdir = run[0]
  data = open(_write_ts(str(tmp_path / "v.ts")), "rb").read()
  cut = str(tmp_path / "cut.ts")
  with open(cut, "wb") as f:
    f.write(data[:int(len(data) * 0.6)])
  out = str(tmp_path / "out" / "cut.jsonl")
  done = subprocess.run([sys.executable, "-m", "multimodal_gru.stream", f"--workdir={workdir}",
                         f"--source={cut}", f"--out={out}"], capture_output=True, text=True,
                        timeout=600, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO))
  assert done.returncode in (0, 1), done.stderr[-3000:]
  records = [json.loads(line) for line in open(out)]
  assert records[-1]["event"] == "close" and records[-1]["reason"] in ("end", "error")
  hops = records[:-1]
  assert hops and all(r["event"] == "hop" for r in hops)
  assert 1.5 < hops[-1]["stream_time"] < 3.5   # the cut, not the whole 4 s
  assert os.path.exists(str(tmp_path / "out" / "cut.png"))
  assert "Traceback" not in done.stderr
  missing = subprocess.run([sys.executable, "-m", "multimodal_gru.stream", f"--workdir={workdir}",
                            "--source=nothing.mp4"], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path, env=dict(os.environ, PYTHONPATH=REPO))
  assert missing.returncode == 2 and "no such file" in missing.stderr


# The source alone (no model): the drop rule, back-pressure, errors.

def test_realtime_source_drops_oldest_when_behind(tmp_path):
  video = sample_videos.write_synthetic_video(str(tmp_path / "v.mp4"), seconds=2.0, fps=20)
  got = []
  with source_lib.FrameSource(video, 32, realtime=True, buffer_seconds=0.25) as frames:
    while True:
      batch, closed = frames.poll()
      assert len(batch) <= frames.capacity
      got += batch
      if closed:
        break
      time.sleep(0.4)   # a consumer slower than the source
  assert closed.reason == "end"
  assert frames.capacity == 5 and frames.dropped > 0
  assert frames.dropped + len(got) == 40
  assert np.all(np.diff([f.time for f in got]) > 0)
  assert got[-1].index == 39   # the newest frames survive


def test_file_source_waits_instead_of_dropping(tmp_path):
  video = sample_videos.write_synthetic_video(str(tmp_path / "v.mp4"), seconds=2.0, fps=20)
  got = []
  with source_lib.FrameSource(video, 32, buffer_seconds=0.25) as frames:
    while True:
      batch, closed = frames.poll()
      got += batch
      if closed:
        break
      time.sleep(0.05)
  assert frames.dropped == 0 and [f.index for f in got] == list(range(40))


def test_source_errors(tmp_path):
  with pytest.raises(ValueError, match="no such file"):
    source_lib.check_source(str(tmp_path / "none.mp4"))
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video" * 100)
  with source_lib.FrameSource(str(bad), 32) as frames:
    batch, closed = frames.poll()
  assert batch == [] and closed.reason == "error" and "bad.mp4" in closed.message
  assert source_lib.is_live("rtsp://cam/1") and source_lib.is_live("/dev/video0")
  assert source_lib.open_options("/dev/video2", 5.0)["format"] == "v4l2"


def test_alerts():
  alerts = runner.Alerts(threshold=0.5, min_seconds=2.0, hop_seconds=1.0)
  states = [alerts.update(t, p) for t, p in enumerate([0.9, 0.9, 0.9, 0.2, 0.9, 0.2], 1)]
  assert [s and s["state"] for s in states] == [None, "start", "ongoing", "end", None, None]
  assert alerts.intervals == [{"start": 0.0, "end": 3.0}]


def test_online_eval(run, streamer, tmp_path):  # noqa: F811
  from multimodal_gru.stream import evaluate
  workdir = run[0]
  config, predictor = streamer.config, streamer.predictor
  clips = evaluate.read_split(config, "eval")
  # Hops as long as the windows: the trailing windows are the offline ones.
  same = evaluate.step_scores(config, predictor, clips, 2.0, 2.0, 1.75, 4.0)
  assert len(same["times"]) == 16   # 4 eval clips x 4 image steps
  np.testing.assert_allclose(same["online"], same["offline"], atol=1e-5)
  # 1 s hops: a window's second half is scored at its end (= offline), its first half
  # from a trailing window without the future.
  hop = evaluate.step_scores(config, predictor, clips, 1.0, 2.0, 1.75, 4.0)
  late = np.mod(hop["times"], 2.0) >= 1.0 - 1e-6
  np.testing.assert_allclose(hop["online"][late], hop["offline"][late], atol=1e-5)
  assert not np.allclose(hop["online"][~late], hop["offline"][~late], atol=1e-5)
  result = evaluate.evaluate_online(workdir, hop_seconds=1.0)
  assert result["num_steps"] == 16 and result["num_videos"] == 1
  assert set(result["online"]) == set(result["offline"]) == {
      "step_accuracy", "step_macro_f1", "step_roc_auc", "step_average_precision"}
  logits = hop["online"]
  predictions = logits.argmax(-1)
  np.testing.assert_allclose(result["online"]["step_accuracy"],
                             (predictions == hop["labels"]).mean(), atol=1e-9)


@pytest.mark.slow   # trains a run of its own (about 50 s)
def test_online_eval_of_generated_demo_clips(tmp_path):
  """Demo clips are streams of their own: a clip's last image step sees the whole clip online."""
  from conftest import tiny_config
  from multimodal_gru import demo_data, train
  from multimodal_gru.stream import evaluate as online_eval
  data = demo_data.ensure_demo_dataset(str(tmp_path / "demo"), num_train=32, num_eval=12,
                                       num_shards=1)
  config = tiny_config(data)
  config.train.num_steps = config.train.eval_every = config.train.checkpoint_every = 2
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  result = online_eval.evaluate_online(workdir, hop_seconds=0)
  assert result["num_videos"] == result["num_clips"] == 12
  assert result["window_seconds"] == demo_data.DURATION_S
  assert result["offline"]["step_accuracy"] == pytest.approx(
      json.load(open(os.path.join(workdir, "results.json")))["metrics"]["step_accuracy"])
  clips = online_eval.read_split(predict.load_run_config(workdir), "eval")
  params, _ = predict.restore_params(workdir, config)
  scores = online_eval.step_scores(config, predict.Predictor(config, params), clips, 0.0,
                                   demo_data.DURATION_S, 0.0, 1e6, clip_is_video=True)
  last = np.r_[scores["video"][1:] != scores["video"][:-1], True]   # each clip's last step
  np.testing.assert_allclose(scores["online"][last], scores["offline"][last], atol=1e-5)
  assert not np.allclose(scores["online"][~last], scores["offline"][~last], atol=1e-3)
