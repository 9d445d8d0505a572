"""Predictions of a trained run on raw videos: per-window and per-step JSON plus a timeline plot.

  python -m multimodal_gru.predict --workdir=RUN --video=a.mp4,b.avi [--out=DIR]

The run's resolved config comes from RUN/results.json, its parameters from the
newest checkpoint in RUN/checkpoints. Videos are featurized with the encoders
recorded in the dataset_info.json of the run's `config.data.dir`, cut into the
same windows as the training data, and each window is padded/cropped to the
config's max_steps. Per video, OUT/<stem>.json holds

  windows:  [{index, clip_id, start, end, probabilities [K], violence_probability}]
            (regression: {..., valence, arousal})
  timeline: [{time, window, probabilities [K], violence_probability}] per image step
            (regression: {time, window, valence, arousal})

with times in seconds from the video's first frame, and OUT/<stem>.png plots the
timeline over a strip of video thumbnails. The violence probability is
1 - P(class 0), i.e. P(class 1) for the binary DVD task.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from absl import app, flags, logging
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from input_pipeline import examples
from input_pipeline import shards
from multimodal_gru import optim, paths, sharding, train
from multimodal_gru.extract import decode
from multimodal_gru.extract import pipeline as extract_pipeline
from multimodal_gru.models.model import build_model

RESULTS = "results.json"


class PredictError(RuntimeError):
  """A run or dataset that cannot make predictions on raw video; the message says why."""


def check_videos(videos: Sequence[str]) -> None:
  """Raises PredictError naming every path of `videos` that is not a readable file."""
  problems = []
  for video in videos:
    if not os.path.exists(video):
      link = f" (a symlink to {os.readlink(video)!r})" if os.path.islink(video) else ""
      problems.append(f"{video}: does not exist{link}")
    elif not os.path.isfile(video):
      problems.append(f"{video}: is {'a directory' if os.path.isdir(video) else 'not a file'}")
    else:
      try:
        with open(video, "rb") as f:
          f.read(1)
      except OSError as e:
        problems.append(f"{video}: cannot be read ({e.strerror or e})")
  if problems:
    raise PredictError("Cannot read the videos to predict on:\n  " + "\n  ".join(problems) +
                       f"\nCheck the --video paths (relative ones are taken from {os.getcwd()}).")


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config that trained the run in `workdir` (from its results.json)."""
  path = os.path.join(workdir, RESULTS)
  if not os.path.exists(path):
    raise PredictError(f"{path} does not exist: {workdir!r} holds no finished run. Train first "
                       f"(python -m multimodal_gru.main --config=... --workdir={workdir}).")
  with open(path) as f:
    results = json.load(f)
  if "config" not in results:
    raise PredictError(f"{path} has no 'config' entry (the run was preempted before it "
                       "finished?). Rerun the training command to finish it.")
  return ml_collections.ConfigDict(results["config"])


def extractor_for_run(config, model_paths: Mapping[str, str] | None = None
                      ) -> extract_pipeline.Extractor:
  """The feature extractor of the run's training data, checked against the run's dims."""
  data_dir = config.data.dir
  if config.data.get("generate_demo", False):
    raise PredictError(f"The run was trained on the generated demo data ({data_dir}): its "
                       "features come from no video encoder, so it cannot take raw video. Train "
                       "on a dataset made by `python -m multimodal_gru.extract` or "
                       "`python -m multimodal_gru.prepare` instead.")
  try:
    info = shards.read_dataset_info(data_dir)
  except shards.DataNotFoundError as e:
    raise PredictError(f"Cannot tell which encoders the run was trained with: {e}") from None
  if "extraction" not in info:
    raise PredictError(f"{data_dir}/{shards.DATASET_INFO} records no feature extraction (demo or "
                       "hand-made data?), so the run cannot take raw video. Train on a dataset made "
                       "by `python -m multimodal_gru.extract` or `python -m multimodal_gru.prepare`.")
  recorded = info.get("dims", {})
  wrong = [f"{m}: run {config.data.dims[m]}, dataset {recorded.get(m)}"
           for m in config.data.modalities if recorded.get(m) != config.data.dims[m]]
  if wrong:
    raise PredictError(
        f"The run's config.data.dims do not match the features of its dataset {data_dir} "
        f"({'; '.join(wrong)}). The run was trained on other features than that folder now holds: "
        "point the run at the dataset it was trained on, or retrain with "
        + " ".join(f"--config.data.dims.{m}={recorded.get(m)}" for m in config.data.modalities))
  try:
    return extract_pipeline.Extractor.from_dataset_info(info, model_paths)
  except extract_pipeline.EncoderMismatchError as e:
    raise PredictError(f"{e}. Pass the models the dataset was extracted with "
                       "(--model_paths=image=DIR,text=DIR,captioner=DIR).") from None


def restore_params(workdir: str, config, step: int | None = None) -> tuple[Any, int]:
  """(params, step) of checkpoint `step` (default the newest) of the run, on the current devices.

  Only the `state` item is read (no input iterator); the abstract train state
  comes from `jax.eval_shape`, so nothing is initialised or compiled.
  """
  model = build_model(config)
  tx = optim.make_optimizer(config)

  def init(rng):
    params = model.init({"params": rng}, train.dummy_batch(config), train=False)["params"]
    return train.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  shapes = jax.eval_shape(init, jax.random.key(0))
  mesh = sharding.make_mesh(config.mesh)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, sharding.param_shardings(shapes, mesh))
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False),
                                  item_names=("state", "data_iter"))
  steps = manager.all_steps() if os.path.isdir(directory) else []
  if not steps:
    raise PredictError(f"No checkpoint in {directory}. Train first.")
  if step is None:
    step = max(steps)
  elif step not in steps:
    raise PredictError(f"No checkpoint of step {step} in {directory}; it holds steps "
                       f"{sorted(steps)}.")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
  manager.close()
  logging.info("Restored the parameters of step %d from %s", step, directory)
  return restored["state"].params, step


class Predictor:
  """Runs a trained model on extracted windows, `batch_size` at a time (one compiled shape)."""

  def __init__(self, config, params, batch_size: int = 8):
    self.config = config
    self.spec = examples.ExampleSpec.from_config(config)
    self.batch_size = batch_size
    self.params = params
    model = build_model(config)
    self._apply = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))

  def _example(self, clip) -> dict[str, np.ndarray]:
    # Labels are only needed to pass validation; the model never reads them.
    t = len(clip.features["image"])
    if self.spec.task == "classification":
      clip = dataclasses.replace(clip, label=0, step_class=None, va=None, valid=None)
    else:
      clip = dataclasses.replace(clip, label=None, va=np.zeros((t, 2), np.float32), valid=None)
    return examples.to_example(clip, self.spec)

  def __call__(self, clips: Sequence) -> dict[str, np.ndarray]:
    """Model outputs for `clips`: classification logits [N, K], step_logits [N, T_image, K];
    regression va [N, 2], step_va [N, T_image, 2] (numpy)."""
    keys = ("logits", "step_logits") if self.spec.task == "classification" else ("va", "step_va")
    rows = [self._example(c) for c in clips]
    out: dict[str, list] = {k: [] for k in keys}
    for i in range(0, len(rows), self.batch_size):
      chunk = rows[i:i + self.batch_size]
      chunk += [self.spec.empty_example()] * (self.batch_size - len(chunk))
      batch = {k: np.stack([r[k] for r in chunk]) for k in chunk[0]}
      outputs = jax.device_get(self._apply(self.params, batch))
      n = min(self.batch_size, len(rows) - i)
      for k in keys:
        out[k].append(np.asarray(outputs[k][:n], np.float32))
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def score_fields(task: str, out: np.ndarray) -> dict[str, Any]:
  """JSON fields of one prediction: logits [K] or (valence, arousal) [2]."""
  if task == "classification":
    p = _softmax(out.astype(np.float64))
    return {"probabilities": [float(x) for x in p], "violence_probability": float(1.0 - p[0])}
  return {"valence": float(out[0]), "arousal": float(out[1])}


def predict_video(path: str, extractor: extract_pipeline.Extractor, predictor: Predictor
                  ) -> dict[str, Any]:
  """The JSON content for one video (see the module doc)."""
  config = predictor.config
  windows = list(extractor.windows(path))
  outputs = predictor([w.clip for w in windows])
  clip_key, step_key = (("logits", "step_logits") if config.task == "classification"
                        else ("va", "step_va"))
  result: dict[str, Any] = {"video": os.path.abspath(path), "task": config.task,
                            "windows": [], "timeline": []}
  t_max = config.data.max_steps["image"]
  for i, w in enumerate(windows):
    times = np.asarray(w.clip.timestamps["image"], np.float64)[:t_max]   # seconds in the video
    result["windows"].append({"index": w.index, "clip_id": w.clip.clip_id, "start": w.start,
                              "end": w.end, "num_steps": len(times),
                              **score_fields(config.task, outputs[clip_key][i])})
    for k, t in enumerate(times):
      result["timeline"].append({"time": float(t), "window": w.index,
                                 **score_fields(config.task, outputs[step_key][i, k])})
  dropped = sum(max(len(w.clip.timestamps["image"]) - t_max, 0) for w in windows)
  if dropped:
    logging.warning("%s: %d image steps beyond data.max_steps.image=%d are not predicted.",
                    path, dropped, t_max)
  return result


def thumbnails(path: str, times: Sequence[float], size: int = 128) -> list[np.ndarray]:
  """[size, size, 3] uint8 frames nearest to `times` (seconds), decoded in one pass."""
  times = np.asarray(times, np.float64)
  best: list = [None] * len(times)
  gaps = np.full(len(times), np.inf)
  with decode.VideoReader(path, size) as reader:
    for _, t, rgb in reader.frames():
      closer = np.abs(times - t) < gaps
      for j in np.flatnonzero(closer):
        best[j], gaps[j] = rgb, abs(times[j] - t)
      if t > times.max() and not closer.any():
        break
  return best


def plot_prediction(result: Mapping[str, Any], path: str, png_path: str,
                    num_thumbnails: int = 6,
                    frames_at: Callable[[np.ndarray], list] | None = None) -> None:
  """Writes the timeline of `result` over a strip of thumbnails of the video to `png_path`.

  `frames_at(times)` gives the thumbnails instead of decoding `path` again
  (a live source cannot be re-read).
  """
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  timeline, windows = result["timeline"], result["windows"]
  times = np.array([s["time"] for s in timeline])
  end = max(w["end"] for w in windows)
  shots = np.linspace(0, end, num_thumbnails + 2)[1:-1]
  frames = (frames_at or (lambda t: thumbnails(path, t)))(shots)
  fig = plt.figure(figsize=(12, 5), constrained_layout=True)
  grid = fig.add_gridspec(2, num_thumbnails, height_ratios=[2.2, 1])
  ax = fig.add_subplot(grid[0, :])
  if result["task"] == "classification":
    ax.plot(times, [s["violence_probability"] for s in timeline], ".-", label="per step")
    for w in windows:
      ax.hlines(w["violence_probability"], w["start"], w["end"], colors="C3", linewidth=2,
                label="per window" if w is windows[0] else None)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("violence probability")
  else:
    for i, name in enumerate(("valence", "arousal")):
      ax.plot(times, [s[name] for s in timeline], ".-", color=f"C{i}", label=name)
      for w in windows:
        ax.hlines(w[name], w["start"], w["end"], colors=f"C{i}", linewidth=2, alpha=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("valence / arousal")
  for w in windows[1:]:
    ax.axvline(w["start"], color="grey", linestyle=":", linewidth=1)
  for t in shots:
    ax.axvline(t, color="black", alpha=0.25, linewidth=3)
  ax.set_xlim(0, end)
  ax.set_xlabel("time (s)")
  ax.legend(loc="upper right", fontsize="small")
  ax.set_title(os.path.basename(path))
  for j, (t, frame) in enumerate(zip(shots, frames)):
    thumb = fig.add_subplot(grid[1, j])
    if frame is not None:
      thumb.imshow(frame)
    thumb.set_title(f"{t:.1f} s", fontsize="small")
    thumb.axis("off")
  fig.savefig(png_path, dpi=80)
  plt.close(fig)


def predict(workdir: str, videos: Sequence[str], out_dir: str,
            model_paths: Mapping[str, str] | None = None, batch_size: int = 8) -> list[str]:
  """Writes OUT/<stem>.json and OUT/<stem>.png per video; returns the JSON paths.

  The videos are checked first, before any model or checkpoint is loaded.
  """
  check_videos(videos)
  config = load_run_config(workdir)
  extractor = extractor_for_run(config, model_paths)
  params, step = restore_params(workdir, config)
  predictor = Predictor(config, params, batch_size)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for video in videos:
    result = predict_video(video, extractor, predictor)
    result.update(run=os.path.abspath(workdir), checkpoint_step=step)
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(video))[0])
    with open(stem + ".json", "w") as f:
      json.dump(result, f, indent=1)
    plot_prediction(result, video, stem + ".png")
    logging.info("%s: %d windows, %d steps -> %s.{json,png}", video, len(result["windows"]),
                 len(result["timeline"]), stem)
    written.append(stem + ".json")
  return written


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defined on demand: multimodal_gru.main defines --workdir in the same absl namespace."""
  flags.DEFINE_string("workdir", None, "Run folder (results.json and checkpoints/).")
  flags.DEFINE_list("video", None, "Video file(s), comma-separated.")
  flags.DEFINE_string("out", None, "Output folder; default WORKDIR/predictions.")
  flags.DEFINE_list("model_paths", [], "image=DIR,text=DIR,captioner=DIR: local copies of the "
                    "models recorded in the dataset_info.json.")
  flags.DEFINE_integer("batch_size", 8, "Windows per model call.")
  flags.mark_flags_as_required(["workdir", "video"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  model_paths = dict(item.split("=", 1) for item in FLAGS.model_paths)
  workdir = paths.resolve(FLAGS.workdir)
  videos = [paths.resolve(v) for v in FLAGS.video]
  out = paths.resolve(FLAGS.out) if FLAGS.out else os.path.join(workdir, "predictions")
  try:
    written = predict(workdir, videos, out, model_paths, FLAGS.batch_size)
  except (PredictError, decode.VideoDecodeError) as e:
    print(f"predict: {e}", file=sys.stderr)   # a data problem: no usage text
    sys.exit(2)
  print("\n".join(written))


if __name__ == "__main__":
  define_flags()
  app.run(main)
