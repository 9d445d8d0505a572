r"""What streaming costs in accuracy: eval steps scored from their trailing window only.

  python -m multimodal_gru.stream.evaluate --workdir=RUN [--hop_seconds=1] [--split=eval] \
      [--out=RUN/online_eval.json]

Offline, a step is scored by the model on its whole window (past AND future
steps of the window; the fusion and the bidirectional GRUs look both ways).
Online, as `python -m multimodal_gru.stream` does, a step at time t is scored
at the first hop end e > t (e = k * hop_seconds; hop_seconds=0: e = t, the
step itself being the last one seen) from the trailing window [e - W, e) of
its video's features: the windows of each video are stitched back into one
stream by their timestamps (a generated demo clip is a stream of its own), and the window takes the image steps and
keyframes in it and the video segments that ended before e. Both score the
same labelled steps with metrics.py (classification: accuracy, macro F1, ROC
AUC, AP over steps; regression: CCC, MSE per dimension).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, Sequence

from absl import app, flags, logging
import numpy as np

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import source as source_lib
from multimodal_gru import metrics as metrics_lib
from multimodal_gru import paths, predict

_EPS = 1e-6


class OnlineEvalError(ValueError):
  """Records that cannot be restitched into streams; the message says why."""


def read_split(config, split: str) -> list[record_format.Clip]:
  records = source_lib.TFRecordShardsSource(shards.split_files(config.data.dir, split))
  modalities = tuple(dict.fromkeys(tuple(config.data.modalities) + ("image",)))
  return [record_format.decode(records[i], modalities) for i in range(len(records))]


@dataclasses.dataclass
class _Stream:
  """One video's features in time order: per modality times [N] and features [N, D]."""
  times: dict[str, np.ndarray]
  features: dict[str, np.ndarray]


def _stitch(clips: Sequence[record_format.Clip], modalities: Sequence[str]) -> _Stream:
  times, feats = {}, {}
  for m in modalities:
    t = np.concatenate([np.asarray(c.timestamps[m], np.float64) for c in clips])
    x = np.concatenate([c.features[m] for c in clips])
    order = np.argsort(t, kind="stable")
    t, x = t[order], x[order]
    keep = np.r_[True, np.diff(t) > _EPS]   # overlapping windows repeat steps
    times[m], feats[m] = t[keep], x[keep]
  return _Stream(times, feats)


def _check(clips: Sequence[record_format.Clip], modalities: Sequence[str], split: str) -> None:
  for c in clips:
    missing = [m for m in dict.fromkeys(tuple(modalities) + ("image",))
               if len(c.timestamps.get(m, ())) != len(c.features[m])]
    if missing:
      raise OnlineEvalError(
          f"Clip {c.clip_id!r} of split {split!r} has no timestamps for {missing}: its steps "
          "cannot be put back in stream order. Extract the data with `python -m "
          "multimodal_gru.extract` or `python -m multimodal_gru.prepare`, which record them.")


def step_scores(config, predictor: predict.Predictor, clips: Sequence[record_format.Clip],
                hop_seconds: float, window_seconds: float, segment_seconds: float,
                video_fps: float, clip_is_video: bool = False) -> dict[str, np.ndarray]:
  """Per labelled image step (every clip, every step < max_steps.image), flattened:

    times [N], offline and online: step logits [N, K] (regression: step va [N, 2]),
    labels [N] (regression: va [N, 2]), valid [N] bool, video [N] (index of its video).
  `segment_seconds`: first to last target of a video segment, sampled at `video_fps` (a
  segment spans its centre -/+ half of it, within half a target period).
  `clip_is_video`: every clip is a stream of its own (the generated demo clips).
  """
  task, modalities = config.task, tuple(config.data.modalities)
  key = "step_logits" if task == "classification" else "step_va"
  t_max = config.data.max_steps["image"]
  offline = predictor(list(clips))[key]
  by_video = collections.defaultdict(list)
  for i, c in enumerate(clips):
    by_video[c.clip_id if clip_is_video else (c.video_id or c.source or c.clip_id)].append(i)
  out = collections.defaultdict(list)
  windows, wanted = [], []   # online windows to score; (window, position, output row)
  for v, (name, members) in enumerate(sorted(by_video.items())):
    stream = _stitch([clips[i] for i in members], tuple(dict.fromkeys(modalities + ("image",))))
    cache: dict[float, int] = {}
    for i in members:
      c = clips[i]
      n = min(len(c.timestamps["image"]), t_max)
      if task == "classification":
        labels = (np.zeros(n, np.int64) if c.step_class is None
                  else np.asarray(c.step_class[:n], np.int64))
        valid = np.zeros(n, bool) if c.step_class is None else np.ones(n, bool)
      else:
        labels = np.asarray(c.va[:n], np.float32)
        valid = np.ones(n, bool)
      if c.valid is not None:
        valid &= np.asarray(c.valid[:n], bool)
      for k in range(n):
        t = float(c.timestamps["image"][k])
        end = (np.floor(t / hop_seconds + _EPS) + 1) * hop_seconds if hop_seconds > 0 else t
        if end not in cache:
          cache[end] = len(windows)
          windows.append(_window(stream, name, end, window_seconds, segment_seconds,
                                 0.5 / video_fps, inclusive=hop_seconds <= 0))
        w = windows[cache[end]]
        position = int(np.argmin(np.abs(w.timestamps["image"] - t)))
        wanted.append((cache[end], position))
        out["times"].append(t)
        out["labels"].append(labels[k])
        out["valid"].append(valid[k])
        out["video"].append(v)
        out["offline"].append(offline[i, k])
  online = predictor(windows)[key] if windows else np.zeros((0, t_max, 2))
  out["online"] = [online[w, p] for w, p in wanted]
  return {k: np.asarray(v) for k, v in out.items()}


def _window(stream: _Stream, name: str, end: float, window_seconds: float,
            segment_seconds: float, tolerance: float, inclusive: bool) -> record_format.Clip:
  """The trailing window of `stream` that ends at `end` (included if `inclusive`)."""
  start = end - window_seconds
  features, timestamps = {}, {}
  for m, t in stream.times.items():
    if m == "video":   # segments that ended by `end`
      starts, ends = t - segment_seconds / 2, t + segment_seconds / 2
      keep = (starts >= start - tolerance) & (ends <= end + tolerance)
      if not keep.any():   # instead of a stream's provisional segment: the latest that ended
        ended = np.flatnonzero(ends <= end + tolerance)
        keep = np.isin(np.arange(len(t)), ended[-1:])
    else:
      keep = (t >= start - _EPS) & ((t <= end + _EPS) if inclusive else (t < end - _EPS))
    features[m], timestamps[m] = stream.features[m][keep], t[keep]
  return record_format.Clip(clip_id=f"{name}-online-{end:.3f}", features=features,
                            timestamps=timestamps, video_id=name)


def _metrics(config, scores: dict[str, np.ndarray], which: str) -> dict[str, float]:
  if config.task == "classification":
    acc = metrics_lib.ClassificationMetrics(config.data.num_classes, prefix="step_")
  else:
    acc = metrics_lib.RegressionMetrics()
  if len(scores["times"]):
    acc.update(scores[which], scores["labels"], scores["valid"])
  return acc.compute()


def evaluate_online(workdir: str, hop_seconds: float = 1.0, split: str | None = None,
                    batch_size: int = 16) -> dict[str, Any]:
  """Offline and online step metrics of the run on `split` (default the run's eval split)."""
  config = predict.load_run_config(workdir)
  split = split or config.data.eval_split
  info = shards.read_dataset_info(config.data.dir)
  clip_is_video = "extraction" not in info and "demo_stamp" in info
  if clip_is_video:   # generated demo: each clip is an 8 s stream, video steps are instants
    from multimodal_gru import demo_data
    window_seconds, segment_seconds, video_fps = demo_data.DURATION_S, 0.0, 1e6
  elif "extraction" in info:
    extraction = info["extraction"]["config"]
    video = extraction["video"]
    segment_seconds = (video["segment_frames"] - 1) / video["fps"]
    window_seconds, video_fps = float(extraction["window_seconds"]), float(video["fps"])
  else:
    raise OnlineEvalError(f"{config.data.dir} records no feature extraction: its steps have "
                          "no stream times to put back in order.")
  clips = read_split(config, split)
  _check(clips, config.data.modalities, split)
  params, step = predict.restore_params(workdir, config)
  predictor = predict.Predictor(config, params, batch_size)
  scores = step_scores(config, predictor, clips, hop_seconds, window_seconds, segment_seconds,
                       video_fps, clip_is_video)
  offline, online = _metrics(config, scores, "offline"), _metrics(config, scores, "online")
  result = {
      "run": workdir, "checkpoint_step": step, "split": split, "task": config.task,
      "hop_seconds": hop_seconds, "window_seconds": window_seconds,
      "num_clips": len(clips), "num_videos": int(len(set(scores["video"].tolist()))),
      "num_steps": int(scores["valid"].sum()),
      "offline": offline, "online": online,
      "online_minus_offline": {k: online[k] - offline[k] for k in offline},
  }
  logging.info("online eval of %s on %s: %s", workdir, split, result)
  return result


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Run folder (results.json and checkpoints/).")
  flags.DEFINE_float("hop_seconds", 1.0, "Hop of the stream; 0 = score each step when it "
                     "arrives (no future at all).")
  flags.DEFINE_string("split", None, "Split to score; default the run's config.data.eval_split.")
  flags.DEFINE_string("out", None, "JSON output; default WORKDIR/online_eval.json.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = paths.resolve(FLAGS.workdir)
  out = paths.resolve(FLAGS.out or os.path.join(workdir, "online_eval.json"))
  try:
    result = evaluate_online(workdir, FLAGS.hop_seconds, FLAGS.split)
  except (predict.PredictError, OnlineEvalError, shards.DataNotFoundError) as e:
    raise SystemExit(f"stream.evaluate: {e}") from None
  with open(out, "w") as f:
    json.dump(result, f, indent=1)
  keys = sorted(result["offline"])
  print(f"{result['num_steps']} steps of {result['num_videos']} videos ({result['split']}), "
        f"hop {result['hop_seconds']:g} s, window {result['window_seconds']:g} s")
  print(f"{'metric':24s} {'offline':>9s} {'online':>9s}")
  for k in keys:
    print(f"{k:24s} {result['offline'][k]:9.4f} {result['online'][k]:9.4f}")
  print(out)


if __name__ == "__main__":
  define_flags()
  app.run(main)
