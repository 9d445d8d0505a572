r"""Frame-level evaluation of a trained run: the challenge's score and its submission files.

  python -m multimodal_gru.evaluate --workdir=RUN [--split=eval|test] [--checkpoint=STEP] \
      [--frame_list=SAMPLE.txt] [--out=DIR] [--robustness]

Runs the run's checkpoint (default the newest) over every window of the split
of its config.data.dir, maps the step outputs onto every frame of every video
(frames.py) and writes to OUT (default RUN/eval_<split>/):

  metrics.json             labelled splits only: {split, checkpoint_step, task,
                           metrics (video_* scalars, protocol.py), per_video,
                           window_metrics (the training evaluation's clip_* / step_*)}
  predictions/<video>.csv  frame_index (0-based), time, then valence,arousal
                           (regression) or prob_0..prob_K-1,prediction
                           (classification), then the labels where known
  submission/              regression: affwild2_va.txt (Aff-Wild2, one txt);
                           classification: dvd/<video>.csv and dvd.zip (DVD)
  frame_predictions.png    a few videos' frame predictions against their labels

--split=eval means config.data.eval_split; any other name is a split of the
data folder (e.g. `test`, written by `python -m multimodal_gru.extract
--split=test`). A split without frame labels gives predictions and submission
files only. --frame_list takes the organisers' sample file, whose rows the
submission then follows exactly (submission.py).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from input_pipeline import pipeline
from input_pipeline import shards
from multimodal_gru import paths
from multimodal_gru import predict
from multimodal_gru import evaluate
from multimodal_gru.evaluate import plots
from multimodal_gru.evaluate import robustness
from multimodal_gru.evaluate import run as run_lib
from multimodal_gru.evaluate import submission
from multimodal_gru.evaluate import video


def _write_predictions(folder: str, task: str, p: video.VideoPrediction) -> None:
  if task == "regression":
    columns = ["valence", "arousal"] + (["label_valence", "label_arousal"]
                                        if p.labels is not None else [])
    table = [p.values] + ([p.labels] if p.labels is not None else [])
  else:
    k = p.values.shape[1]
    columns = [f"prob_{c}" for c in range(k)] + ["prediction"] + (
        ["label"] if p.labels is not None else [])
    table = [p.values, p.values.argmax(1)[:, None]] + (
        [p.labels[:, None]] if p.labels is not None else [])
  path = os.path.join(folder, p.video_id + ".csv")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(",".join(["frame_index", "time"] + columns) + "\n")
    values = np.concatenate([np.asarray(t, np.float64) for t in table], axis=1)
    for i, (t, row) in enumerate(zip(p.times, values)):
      f.write(f"{i},{t:.4f}," + ",".join(f"{x:.6g}" for x in row) + "\n")


def run(workdir: str, split: str = "eval", checkpoint: int | None = None,
        frame_list: str | None = None, out: str | None = None, tolerance: float = 0.01,
        num_plots: int = 4) -> dict:
  """Evaluates (see the module doc); returns {metrics, per_video, files}."""
  run_ = run_lib.restore_run(workdir, checkpoint)
  config, params, step = run_.config, run_.params, run_.step
  eval_step, to_global = run_.eval_step, run_.to_global
  data_split = config.data.eval_split if split == "eval" else split
  out = out or os.path.join(workdir, f"eval_{split}")
  wanted = submission.read_frame_list(frame_list) if frame_list else None
  predictions = video.predict_frames(config, eval_step, params, to_global, data_split)
  metrics, per_video = video.scores(config, predictions)
  window_metrics = {}
  if metrics:
    window_metrics = evaluate.evaluate(
        config, eval_step, params, pipeline.create_eval_batches(config, split=data_split),
        to_global)
  files = []
  if jax.process_index() == 0:
    os.makedirs(out, exist_ok=True)
    for p in predictions.values():
      _write_predictions(os.path.join(out, "predictions"), config.task, p)
    values = {k: p.values for k, p in predictions.items()}
    sub = os.path.join(out, "submission")
    os.makedirs(sub, exist_ok=True)
    if config.task == "regression":
      files.append(os.path.join(sub, "affwild2_va.txt"))
      rows = submission.write_affwild2(files[-1], values, wanted, tolerance)
    else:
      files.append(os.path.join(sub, "dvd.zip"))
      rows = sum(submission.write_dvd(os.path.join(sub, "dvd"), files[-1], values, wanted,
                                      tolerance).values())
    logging.info("Wrote %s (%d rows)", files[-1], rows)
    shown = sorted(predictions, key=lambda k: (predictions[k].labels is None, k))[:num_plots]
    if shown:
      files.append(os.path.join(out, "frame_predictions.png"))
      plots.plot_videos(predictions, config.task, files[-1], shown)
    if metrics:
      files.append(os.path.join(out, "metrics.json"))
      with open(files[-1], "w") as f:
        json.dump({"split": data_split, "checkpoint_step": step, "task": config.task,
                   "run": os.path.abspath(workdir), "metrics": metrics, "per_video": per_video,
                   "window_metrics": window_metrics}, f, indent=1, sort_keys=True)
    else:
      logging.info("Split %r has no frame labels: predictions and submission files only.",
                   data_split)
  return {"metrics": metrics, "per_video": per_video, "files": files, "step": step,
          "predictions": predictions}


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Run folder (results.json and checkpoints/).",
                      required=True)
  flags.DEFINE_string("split", "eval", "eval (= config.data.eval_split) or a split name, e.g. "
                      "test.")
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default the newest.")
  flags.DEFINE_string("frame_list", None, "The organisers' sample file: the submission "
                      "follows its rows (<video>/00001.jpg, ...).")
  flags.DEFINE_string("out", None, "Output folder; default WORKDIR/eval_<split>.")
  flags.DEFINE_float("frame_count_tolerance", 0.01, "How far (fraction of a video's frames, "
                     "at least 5) a --frame_list may be from our frame count.")
  flags.DEFINE_integer("num_plots", 4, "Videos in frame_predictions.png.")
  flags.DEFINE_bool("robustness", False, "Also score the windows under config.eval's "
                    "corruptions (robustness.py): OUT/robustness.json, and robust/* in "
                    "results.json for the eval split. Data without video metadata (the demo) "
                    "get this part only.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.robustness:
    try:
      robust = robustness.evaluate_workdir(paths.resolve(FLAGS.workdir), FLAGS.split,
                                           FLAGS.checkpoint,
                                           paths.resolve(FLAGS.out) if FLAGS.out else None)
    except (predict.PredictError, shards.DataNotFoundError, FileNotFoundError) as e:
      print(f"evaluate: {e}", file=sys.stderr)
      sys.exit(2)
    for key, value in sorted({**robust["metrics"], **robust["robust"]}.items()):
      print(f"{key} = {value:.4f}")
    print("\n".join(robust["files"]))
  try:
    result = run(paths.resolve(FLAGS.workdir), FLAGS.split, FLAGS.checkpoint,
                 paths.resolve(FLAGS.frame_list) if FLAGS.frame_list else None,
                 paths.resolve(FLAGS.out) if FLAGS.out else None, FLAGS.frame_count_tolerance,
                 FLAGS.num_plots)
  except video.NoVideoMetadata as e:
    if not FLAGS.robustness:
      print(f"evaluate: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"evaluate: no video-level metrics ({e})", file=sys.stderr)
    return
  except (predict.PredictError, submission.SubmissionError,
          shards.DataNotFoundError, FileNotFoundError) as e:
    print(f"evaluate: {e}", file=sys.stderr)   # a run or data problem: no usage text
    sys.exit(2)
  for key, value in sorted(result["metrics"].items()):
    print(f"{key} = {value:.4f}")
  print("\n".join(result["files"]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
