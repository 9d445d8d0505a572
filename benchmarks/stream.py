r"""Streaming: per-hop latency by stage, real-time factor, the fusion model exported vs in-process.

  python -m benchmarks.stream [--quick] [--clip=bikes] [--configs=default,light] [--json=OUT]

Per extraction configuration:
  default  extract/config.py as is: 224 px frames, I3D on 16-frame segments at 25 fps
           (224 px), image steps at 2 fps, up to 8 keyframes. The image encoder is CLIP
           ViT-B/32's architecture with random weights (the same cost; no CLIP weights
           ship here) and captions are the "kinetics" fallback (no captioner weights).
  light    112 px frames, I3D on 8-frame segments at 8 fps (112 px input), image steps
           at 1 fps (same image encoder), up to 2 keyframes.
Both with 8 s windows. It extracts the clip with the configuration, trains a run of
one step at configs/dvd.py model sizes on those features (weights do not change the
cost), then streams the clip as fast as possible (after the encoders' warm-up) with
1 s hops: per-hop latency p50 / p95 / p99 of each stage and of the whole hop, and the
real-time factor = stream seconds / wall seconds. Without --quick it then streams the
light configuration again paced at the clip's frame rate (--realtime) and reports the
dropped frames and the lag. The fusion model alone, one window per call: as the stream
calls it (`predict.Predictor`, host-side padding included), jitted in-process
(`export.scores_fn`) and the exported StableHLO artifact (`export.load`).
"""

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from input_pipeline import shards  # noqa: E402
from multimodal_gru import export, train  # noqa: E402
from multimodal_gru.extract import config as extract_config  # noqa: E402
from multimodal_gru.extract import pipeline  # noqa: E402
from multimodal_gru.extract import sample_videos  # noqa: E402
from multimodal_gru.extract import tiny_models  # noqa: E402
from multimodal_gru.stream import features as features_lib  # noqa: E402
from multimodal_gru.stream import runner  # noqa: E402

STAGES = features_lib.STAGES + ("model", "total")


def extraction_config(name: str, image_model: str):
  c = extract_config.get_config()
  c.image.model = image_model
  c.captioner.model = extract_config.KINETICS
  if name == "light":
    c.frame_size = 112
    c.video.fps = 8.0
    c.video.segment_frames = c.video.segment_stride = 8
    c.video.input_size = 112
    c.image.fps = 1.0
    c.keyframes.max_count = 2
  return c


def make_run(root: str, name: str, clip: str, image_model: str) -> str:
  """A workdir trained for one step on the clip's features, extracted as configured."""
  from configs import dvd
  extractor = pipeline.Extractor(extraction_config(name, image_model))
  clips = extractor.extract_video(clip)
  data = os.path.join(root, f"data_{name}")

  def labelled(copies):
    return [dataclasses.replace(c, clip_id=f"{c.clip_id}-{k}", label=k % 2,
                                step_class=np.full(len(c.features["image"]), k % 2))
            for k in range(copies) for c in clips]

  shards.write_split(data, "train", labelled(8), 1)
  shards.write_split(data, "eval", labelled(2), 1)
  shards.write_dataset_info(data, extractor.info())
  config = dvd.get_config()
  config.data.dir = data
  config.data.dims.update(extractor.dims)
  config.train.batch_size = config.train.eval_batch_size = 8
  config.train.num_steps = config.train.eval_every = config.train.checkpoint_every = 1
  config.optim.warmup_steps = 1
  workdir = os.path.join(root, f"run_{name}")
  train.train_and_evaluate(config, workdir)
  return workdir


def percentiles(values) -> dict[str, float]:
  p = np.percentile(np.asarray(values, np.float64), [50, 95, 99])
  return {"p50": round(float(p[0]), 1), "p95": round(float(p[1]), 1),
          "p99": round(float(p[2]), 1), "max": round(float(np.max(values)), 1)}


def stream_once(streamer: runner.Streamer, clip: str, realtime: bool) -> dict:
  records = []
  closed = streamer.run(streamer.open(clip, realtime=realtime), records.append)
  hops = [r for r in records if r["event"] == "hop"]
  return {
      "hops": len(hops), "stream_seconds": closed["stream_seconds"],
      "wall_seconds": closed["wall_seconds"], "realtime_factor": closed["realtime_factor"],
      "dropped_frames": closed["dropped_frames"], "warmup_seconds": closed["warmup_seconds"],
      "lag_s": percentiles([h["lag_s"] * 1000 for h in hops]),
      "latency_ms": {s: percentiles([h["latency_ms"][s] for h in hops]) for s in STAGES},
  }


def timed_calls(fn, reps: int) -> dict[str, float]:
  jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(1000 * (time.perf_counter() - start))
  return {"median_ms": round(statistics.median(times), 3),
          "p95_ms": round(float(np.percentile(times, 95)), 3)}


def fusion_model(streamer: runner.Streamer, workdir: str, clip: str, reps: int) -> dict:
  """One window per call: Predictor vs jitted in-process vs exported; same outputs."""
  from multimodal_gru import predict
  window = next(streamer.extractor.windows(clip)).clip
  example = streamer.predictor._example(window)  # pylint: disable=protected-access
  config = streamer.config
  names = export.input_names(config)
  inputs = [example[n][None] for n in names]
  out_dir = os.path.join(os.path.dirname(workdir), os.path.basename(workdir) + "_export")
  export.export_run(workdir, out_dir, platforms=("cpu",))
  exported = export.load(out_dir)
  params, _ = predict.restore_params(workdir, config)
  in_process = jax.jit(export.scores_fn(config, params))
  a, b = in_process(*inputs), exported(**dict(zip(names, inputs)))
  return {
      "predictor": timed_calls(lambda: streamer.predictor([window]), reps),
      "in_process_jit": timed_calls(lambda: in_process(*inputs), reps),
      "exported": timed_calls(lambda: exported(**dict(zip(names, inputs))), reps),
      "max_abs_diff": float(max(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max() for k in a)),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="no paced rerun, 20 model calls instead of 200")
  parser.add_argument("--clip", default="bikes", choices=sorted(sample_videos.REAL_CLIPS))
  parser.add_argument("--configs", default="default,light")
  parser.add_argument("--json", help="also write the results here")
  args = parser.parse_args()
  clip, install = sample_videos.real_clip(args.clip)
  if clip is None:
    raise SystemExit(f"The {args.clip} clip is not installed: {install}")
  root = tempfile.mkdtemp(prefix="stream_bench_")
  image_model = tiny_models.save_clip_vision_b32(os.path.join(root, "clip_b32_random"))
  results = {"device": str(jax.devices()[0]), "clip": clip, "cores": os.cpu_count(),
             "load_average": os.getloadavg(), "configs": {}}
  print(f"device {results['device']}, clip {clip}, load {results['load_average']}")
  for name in args.configs.split(","):
    workdir = make_run(root, name, clip, image_model)
    streamer = runner.Streamer(workdir, hop_seconds=1.0)
    row = {"fast": stream_once(streamer, clip, realtime=False)}
    if name == "light" and not args.quick:
      row["realtime"] = stream_once(streamer, clip, realtime=True)
    row["fusion_model"] = fusion_model(streamer, workdir, clip, 20 if args.quick else 200)
    results["configs"][name] = row
    fast = row["fast"]
    print(f"\n{name}: {fast['hops']} hops, real-time factor {fast['realtime_factor']:.2f} "
          f"(warm-up {fast['warmup_seconds']:.0f} s)")
    print("| stage | p50 ms | p95 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for s in STAGES:
      p = fast["latency_ms"][s]
      print(f"| {s} | {p['p50']} | {p['p95']} | {p['p99']} |")
    if "realtime" in row:
      r = row["realtime"]
      print(f"paced: factor {r['realtime_factor']:.2f}, {r['dropped_frames']} frames dropped, "
            f"lag p50 {r['lag_s']['p50']} ms p95 {r['lag_s']['p95']} ms")
    m = row["fusion_model"]
    print(f"fusion model per window: Predictor {m['predictor']['median_ms']} ms, jit "
          f"{m['in_process_jit']['median_ms']} ms, exported {m['exported']['median_ms']} ms "
          f"(max |diff| {m['max_abs_diff']:.1e})")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
