r"""Scores a live video with a trained run: one JSON line per hop, alerts, a timeline plot.

  python -m multimodal_gru.stream --workdir=RUN --source=FILE|rtsp://...|/dev/videoN \
      [--hop_seconds=1] [--out=FILE.jsonl] [--realtime] [--threshold=0.5 --min_seconds=2] \
      [--stall_seconds=10] [--buffer_seconds=2] [--png=FILE.png] [--model_paths=image=DIR,...]

Records go to stdout, or to --out (one JSON object per line, flushed per hop);
the timeline plot to --png (default: --out with .png). See runner.py for the
fields and source.py for the drop rule. Exit status 0 when the source ended,
1 when it stalled or failed mid-way (its records and plot are still written),
2 when the run or the source cannot be used.
"""

import json
import os
import sys

from absl import app, flags

from multimodal_gru import paths, predict
from multimodal_gru.extract import decode
from multimodal_gru.stream import runner

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Run folder (results.json and checkpoints/).")
  flags.DEFINE_string("source", None, "Video file, network stream URL or /dev/videoN.")
  flags.DEFINE_float("hop_seconds", 1.0, "Stream seconds between two scores.")
  flags.DEFINE_string("out", None, "JSON-lines output file; default stdout.")
  flags.DEFINE_string("png", None, "Timeline plot; default --out with .png (none for stdout).")
  flags.DEFINE_bool("realtime", False, "Pace a file at its frame rate (as a camera would).")
  flags.DEFINE_float("threshold", 0.5, "Alert when the violence probability stays >= this...")
  flags.DEFINE_float("min_seconds", 2.0, "... for this many seconds.")
  flags.DEFINE_float("stall_seconds", 10.0, "Close the stream after this long without a frame.")
  flags.DEFINE_float("buffer_seconds", 2.0, "Frames buffered before the oldest are dropped "
                     "(live or --realtime sources).")
  flags.DEFINE_list("model_paths", [], "image=DIR,text=DIR,captioner=DIR: local copies of the "
                    "models recorded in the dataset_info.json.")
  flags.mark_flags_as_required(["workdir", "source"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  source = FLAGS.source
  if "://" not in source:
    source = paths.resolve(source)
  out = paths.resolve(FLAGS.out) if FLAGS.out else None
  png = paths.resolve(FLAGS.png) if FLAGS.png else (os.path.splitext(out)[0] + ".png"
                                                    if out else None)
  try:
    streamer = runner.Streamer(paths.resolve(FLAGS.workdir),
                               dict(item.split("=", 1) for item in FLAGS.model_paths),
                               FLAGS.hop_seconds, FLAGS.threshold, FLAGS.min_seconds)
    frames = streamer.open(source, FLAGS.realtime, FLAGS.buffer_seconds, FLAGS.stall_seconds)
  except (predict.PredictError, decode.VideoDecodeError, ValueError) as e:
    print(f"stream: {e}", file=sys.stderr)
    sys.exit(2)
  if out:
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  sink = open(out, "w") if out else sys.stdout

  def emit(record):
    sink.write(json.dumps(record) + "\n")
    sink.flush()

  try:
    closed = streamer.run(frames, emit, png)
  finally:
    if out:
      sink.close()
  print(f"stream: {closed['reason']}: {closed['message']}; {closed['hops']} hops, "
        f"{closed['stream_seconds']:.1f} s of video in {closed['wall_seconds']:.1f} s, "
        f"{closed['dropped_frames']} frames dropped", file=sys.stderr)
  sys.exit(0 if closed["reason"] == "end" else 1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
