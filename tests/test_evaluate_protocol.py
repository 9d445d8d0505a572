"""Frame-level evaluation: frames from windows, the challenges' scores, submission files.

Fixture datasets: generated videos (10 fps, 5.3 / 8.7 / 3.1 s), cut into 2 s
windows every 1 s by the extraction's own windowing and step sampling (image
steps at 2 fps), labelled per frame by the preparation's Aff-Wild2 / DVD code
(runs of -5 / unannotated frames, one annotation 3 frames short). The image
feature of each step holds the step's time, so the "model" below (a jitted
function of the batch) outputs a known function of time.
"""

import csv
import io
import os
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import tfrecord
from input_pipeline import video_frames
from multimodal_gru import evaluate
from multimodal_gru.evaluate import frames as frames_lib
from multimodal_gru.evaluate import protocol
from multimodal_gru.evaluate import submission
from multimodal_gru.evaluate import video
from multimodal_gru.extract import decode
from multimodal_gru.extract import pipeline as extract_pipeline
from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import sampling
from multimodal_gru.prepare import affwild2
from multimodal_gru.prepare import dvd

from conftest import tiny_config, write_tiny_demo

FPS = 10
VIDEOS = {"a": 5.3, "b": 8.7, "c": 3.1}
DIMS = {"video": 4, "image": 3, "text": 2}


def va_labels(name, n):
  i = np.arange(n)
  va = np.stack([0.8 * np.sin(0.11 * i + len(name)), 0.7 * np.cos(0.07 * i)], 1).astype(np.float32)
  va[10:17] = -5                       # an unannotated run
  if name == "b":
    va[-6:] = -5
  return va[:n - 3] if name == "c" else va   # c's annotation is 3 frames short (tolerated)


def class_labels(name, n):
  per_frame = ((np.arange(n) + 7 * len(name)) // 15 % 2).astype(np.int64)
  per_frame[20:24] = -1                # unannotated frames
  return per_frame


def make_dataset(root, task, stride=1.0, splits=("eval",)):
  """(data_dir, {video: frame times}) of a prepared fixture dataset (see the module doc)."""
  rng = np.random.default_rng(0)
  clips, frame_files, timelines = [], [], {}
  os.makedirs(root / "videos", exist_ok=True)
  for k, (name, seconds) in enumerate(VIDEOS.items()):
    path = sample_videos.write_synthetic_video(f"{root}/videos/{name}.mp4", seconds, FPS, seed=k)
    times = []
    windows = list(decode.iter_windows(path, 32, 2.0, 0.5, stride_seconds=stride, timeline=times))
    timeline = extract_pipeline.Timeline(np.asarray(times))
    timelines[name] = timeline.times
    n = timeline.num_frames
    if task == "regression":
      annotation = affwild2.Annotation(name, va_labels(name, n), f"{name}.txt")
      labels = affwild2.frame_labels(annotation, n, 0.01, path)
    else:
      annotation = dvd.Annotation(name, per_frame=class_labels(name, n), path=f"{name}.csv")
      labels = dvd.frame_labels(annotation, n, 0.01, path)
    frame_files.append(video_frames.VideoFrames(name, timeline.times, labels))
    for w in windows:
      steps = sampling.frames_at_rate(w.times, w.start, w.end, 2.0)
      t = w.times[steps]
      image = np.concatenate([t[:, None], rng.normal(size=(len(t), DIMS["image"] - 1))], 1)
      c = record_format.Clip(
          clip_id=f"{name}-w{w.index:04d}", source=path,
          features={"video": rng.normal(size=(1, DIMS["video"])), "image": image,
                    "text": rng.normal(size=(1, DIMS["text"]))},
          timestamps={"image": t}, video_id=name, frame_index=w.frame_indices[steps])
      c = extract_pipeline.with_video_meta(c, timeline)
      window = extract_pipeline.Window(c, w.index, w.start, w.end,
                                       (int(w.frame_indices[0]), int(w.frame_indices[-1])),
                                       w.frame_indices[steps])
      clips += (affwild2 if task == "regression" else dvd).to_clips(annotation, window)
  data = str(root / "data")
  for split in splits:
    shards.write_split(data, split, clips, 2, dtype="float32")
    video_frames.write_split(data, split, frame_files)
  return data, timelines


def config_for(data, task):
  c = tiny_config(data, task)
  c.data.dims.update(DIMS)
  return c


def known_function(task):
  """f(t) of the step outputs: regression va [.., 2]; classification logits [.., 2]."""
  if task == "regression":
    return lambda t: np.stack([0.1 * t - 0.5, 0.8 - 0.15 * t], -1)
  return lambda t: np.stack([np.zeros_like(t), 0.7 * t - 2.0], -1)


def time_model(config):
  """An eval step whose step outputs are known_function(step time)."""
  def eval_step(state, batch):
    del state
    t = batch["image"][..., 0]
    b = t.shape[0]
    if config.task == "regression":
      outputs = {"va": jnp.zeros((b, 2)), "step_va": jnp.stack([0.1 * t - 0.5, 0.8 - 0.15 * t], -1)}
    else:
      outputs = {"logits": jnp.zeros((b, 2)),
                 "step_logits": jnp.stack([jnp.zeros_like(t), 0.7 * t - 2.0], -1)}
    return evaluate.eval_outputs(config, outputs, batch)
  return jax.jit(eval_step)


@pytest.fixture(scope="module", params=["regression", "classification"])
def dataset(request, tmp_path_factory):
  data, timelines = make_dataset(tmp_path_factory.mktemp(request.param), request.param)
  config = config_for(data, request.param)
  predictions = video.predict_frames(config, time_model(config), None, lambda b: b)
  return config, timelines, predictions


def read_clips(config, name):
  return [c for p in shards.split_files(config.data.dir, "eval")
          for c in map(record_format.decode, tfrecord.TFRecordReader(p)) if c.video_id == name]


def test_frame_predictions_recover_a_known_function_of_time(dataset):
  config, timelines, predictions = dataset
  assert sorted(predictions) == sorted(VIDEOS)
  f = known_function(config.task)
  for name, times in timelines.items():
    p = predictions[name]
    assert p.num_frames == len(times) == round(VIDEOS[name] * FPS)
    np.testing.assert_array_equal(p.times, times)
    clips = read_clips(config, name)
    steps = np.unique(np.concatenate([c.timestamps["image"] for c in clips]))
    held = np.clip(times, steps[0], steps[-1])   # the nearest step's value outside the steps
    if config.task == "regression":   # linear in time: exact at every frame
      expected = f(held)
    else:   # probabilities: exact at the steps, linear between them
      probs = np.exp(f(steps)) / np.exp(f(steps)).sum(-1, keepdims=True)
      expected = np.stack([np.interp(held, steps, probs[:, c]) for c in range(2)], 1)
    np.testing.assert_allclose(p.values, expected, atol=2e-6)
    assert p.num_windows == len(clips) >= round(VIDEOS[name]) - 1   # 2 s windows every 1 s


def ccc(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  cov = np.cov(x, y, bias=True)[0, 1]
  return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


def test_metrics_equal_an_independent_computation(dataset):
  config, timelines, predictions = dataset
  m = evaluate.video_level_metrics(config, time_model(config), None, lambda b: b)
  if config.task == "regression":
    labels = {n: video_frames.fit_labels(va_labels(n, len(t)), len(t), None, n, -5)
              for n, t in timelines.items()}
    keep = {n: (l[:, 0] != -5) for n, l in labels.items()}
    pred = np.concatenate([predictions[n].values[keep[n]] for n in sorted(labels)])
    gold = np.concatenate([labels[n][keep[n]] for n in sorted(labels)])
    expected_v, expected_a = ccc(pred[:, 0], gold[:, 0]), ccc(pred[:, 1], gold[:, 1])
    assert m["video_ccc_valence"] == pytest.approx(expected_v, abs=1e-9)
    assert m["video_ccc_arousal"] == pytest.approx(expected_a, abs=1e-9)
    assert m["video_score"] == m["video_ccc_mean"] == pytest.approx((expected_v + expected_a) / 2)
    per_video = np.mean([(ccc(predictions[n].values[keep[n], 0], labels[n][keep[n], 0]) +
                          ccc(predictions[n].values[keep[n], 1], labels[n][keep[n], 1])) / 2
                         for n in labels])
    assert m["video_per_video_ccc_mean"] == pytest.approx(per_video, abs=1e-9)
    # The concatenated CCC is not the mean of per-video CCCs.
    assert abs(m["video_ccc_mean"] - per_video) > 1e-3
    assert m["video_num_frames"] == sum(k.sum() for k in keep.values())
  else:
    gold = np.concatenate([class_labels(n, len(t)) for n, t in sorted(timelines.items())])
    pred = np.concatenate([predictions[n].values.argmax(1) for n in sorted(timelines)])
    pred, gold = pred[gold >= 0], gold[gold >= 0]
    f1 = []
    for c in (0, 1):
      tp, fp, fn = np.sum((pred == c) & (gold == c)), np.sum((pred == c) & (gold != c)), np.sum(
          (pred != c) & (gold == c))
      f1.append(2 * tp / (2 * tp + fp + fn))
    assert 0.2 < f1[0] < 1 and 0.2 < f1[1] < 1
    assert m["video_f1_class0"] == pytest.approx(f1[0])
    assert m["video_f1_class1"] == pytest.approx(f1[1])
    assert m["video_score"] == m["video_macro_f1"] == pytest.approx(np.mean(f1))
    assert m["video_accuracy"] == pytest.approx(np.mean(pred == gold))
    assert m["video_num_frames"] == len(gold)
  assert m["video_num_videos"] == 3


def test_overlapping_windows_are_averaged():
  times = np.arange(12) / 2.0                         # frames at 0, 0.5, ..., 5.5 s
  w1 = (np.array([1.0, 2.0, 3.0]), np.array([[1.0], [1.0], [1.0]]))
  w2 = (np.array([2.0, 3.0, 4.0]), np.array([[3.0], [5.0], [7.0]]))
  out = frames_lib.map_to_frames(times, [w1, w2])[:, 0]
  expected = [1, 1, 1, 1, (1 + 3) / 2, (1 + 4) / 2, (1 + 5) / 2, 6, 7, 7, 7, 7]
  np.testing.assert_allclose(out, expected)
  # A gap between windows is interpolated between their nearest steps.
  w3 = (np.array([5.0]), np.array([[9.0]]))
  gap = frames_lib.map_to_frames(times, [w2, w3])[:, 0]
  np.testing.assert_allclose(gap[8:], [7, 8, 9, 9])


def test_demo_data_has_no_video_metadata(tmp_path, caplog):
  data = write_tiny_demo(tmp_path / "demo", num_train=4, num_eval=8)
  config = tiny_config(data)
  with caplog.at_level("INFO"):
    assert evaluate.video_level_metrics(config, None, None, lambda b: b) == {}
  assert "carry no video metadata" in caplog.text and "clip/video_id" in caplog.text


def test_unlabelled_split_gives_predictions_but_no_metrics(tmp_path):
  data, _ = make_dataset(tmp_path, "regression", stride=2.0)
  stored = video_frames.read_split(data, "eval")
  video_frames.write_split(data, "eval", [video_frames.VideoFrames(k, v.times)
                                          for k, v in stored.items()])
  config = config_for(data, "regression")
  predictions = video.predict_frames(config, time_model(config), None, lambda b: b)
  assert all(p.labels is None for p in predictions.values()) and len(predictions) == 3
  assert evaluate.video_level_metrics(config, time_model(config), None, lambda b: b) == {}


def read_txt(path):
  with open(path) as f:
    return f.read().splitlines()


def test_affwild2_submission(tmp_path):
  rng = np.random.default_rng(1)
  va = {"a": rng.uniform(-1.5, 1.5, (53, 2)), "b_left": rng.uniform(-1, 1, (87, 2))}
  path = str(tmp_path / "sub.txt")
  assert submission.write_affwild2(path, va) == 140
  lines = read_txt(path)
  assert lines[0] == "image_location,valence,arousal" and len(lines) == 141
  assert lines[1].startswith("a/00001.jpg,") and lines[53].startswith("a/00053.jpg,")
  assert lines[54].startswith("b_left/00001.jpg,") and lines[-1].startswith("b_left/00087.jpg,")
  for line in lines[1:]:
    assert re.fullmatch(r"[\w]+/\d{5}\.jpg,-?\d\.\d{6},-?\d\.\d{6}", line), line
  values = np.array([[float(x) for x in l.split(",")[1:]] for l in lines[1:54]])
  np.testing.assert_allclose(values, np.clip(va["a"], -1, 1), atol=5e-7)

  # An organisers' sample file: b_left first, 3 frames longer (padded), a 2 frames shorter.
  sample = tmp_path / "sample.txt"
  rows = ([f"b_left/{i:05d}.jpg,0,0" for i in range(1, 91)] +
          [f"a/{i:05d}.jpg,0,0" for i in range(1, 52)])
  sample.write_text("image_location,valence,arousal\n" + "\n".join(rows) + "\n")
  wanted = submission.read_frame_list(str(sample))
  assert submission.write_affwild2(path, va, wanted) == 141
  lines = read_txt(path)
  assert [l.split(",")[0] for l in lines[1:]] == [r.split(",")[0] for r in rows]
  last_b = np.clip(va["b_left"][-1], -1, 1)
  for line in lines[88:91]:   # b_left frames 88..90: the last prediction
    np.testing.assert_allclose([float(x) for x in line.split(",")[1:]], last_b, atol=5e-7)


def test_dvd_submission(tmp_path):
  probs = {"v1": np.tile([[0.8, 0.2], [0.3, 0.7]], (10, 1)), "v2": np.tile([[0.1, 0.9]], (7, 1))}
  counts = submission.write_dvd(str(tmp_path / "dvd"), str(tmp_path / "dvd.zip"), probs)
  assert counts == {"v1": 20, "v2": 7}
  with zipfile.ZipFile(tmp_path / "dvd.zip") as z:
    assert sorted(z.namelist()) == ["v1.csv", "v2.csv"]
    rows = list(csv.reader(io.StringIO(z.read("v1.csv").decode())))
  assert rows[0] == ["Frame_Number", "Label"] and len(rows) == 21
  assert rows[1:] == [[str(i), str((i - 1) % 2)] for i in range(1, 21)]
  assert read_txt(tmp_path / "dvd" / "v2.csv")[1:] == [f"{i},1" for i in range(1, 8)]


def test_bad_input_errors(tmp_path):
  va = {"a": np.zeros((100, 2))}
  sample = tmp_path / "sample.txt"
  sample.write_text("image_location,valence,arousal\na/00001.jpg,0,0\nzz/00001.jpg,0,0\n")
  with pytest.raises(submission.SubmissionError, match="names 1 videos we have no predictions "
                     "for: zz. Extract or prepare"):
    submission.write_affwild2(str(tmp_path / "s.txt"), va, submission.read_frame_list(str(sample)))
  with pytest.raises(submission.SubmissionError, match="asks for 1 frames of a .* its 100 decoded "
                     "frames: more than the tolerance of 5"):
    submission.write_affwild2(str(tmp_path / "s.txt"), va, {"a": [1]})
  sample.write_text("image_location,valence,arousal\na/00001.jpg,0,0\nnot a frame\n")
  with pytest.raises(submission.SubmissionError, match="sample.txt:3: 'not a frame'"):
    submission.read_frame_list(str(sample))
  # Annotations that disagree with the video's frame count name the file and the video.
  annotation = affwild2.Annotation("a", np.zeros((80, 2), np.float32), "/m/a.txt")
  with pytest.raises(video_frames.FrameCountError, match=r"/m/a.txt \(video a.mp4\): 80 "
                     "annotated frames, but the video decodes to 100"):
    affwild2.frame_labels(annotation, 100, 0.01, "a.mp4")
  segments = dvd.Annotation("d", segments=np.array([[5, 130]]), path="/m/d.csv")
  with pytest.raises(video_frames.FrameCountError, match="/m/d.csv"):
    dvd.frame_labels(segments, 100, 0.01, "d.mp4")
  assert dvd.frame_labels(segments, 128, 0.01, "d.mp4")[[4, 5, 127]].tolist() == [0, 1, 1]


def test_protocol_degenerate_and_per_class():
  out, per_video = protocol.dvd_scores({"x": np.array([[0.9, 0.1]] * 4)},
                                       {"x": np.array([0, 0, 1, -1])}, 2)
  assert out["video_f1_class0"] == pytest.approx(0.8) and out["video_f1_class1"] == 0.0
  assert out["video_macro_f1"] == pytest.approx(0.4) and per_video["x"]["annotated_frames"] == 3
