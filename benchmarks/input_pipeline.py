r"""Throughput of the input pipeline alone: shards -> parsed, validated, padded batches.

Writes synthetic shards of realistic size (configs/dvd.py: video [16, 1024],
image [32, 768], text [8, 384], float16; clip lengths vary around max_steps), then
measures records/s and MB/s (serialized record bytes read) of

  read        CRC-checked record reads only (TFRecordShardsSource, one thread)
  decode      read + decode + validate + pad, one thread, no grain
  pipeline    create_train_iterator end to end, for each --threads x --workers setting
  train step  examples/s the jitted train step of the same config consumes
              (benchmarks/train_step.py's JaxStep, same batch size), the baseline
              of the "x train step" column; --no_train_step skips it

Usage:
  python -m benchmarks.input_pipeline --threads=0,1,2,4 --workers=0,2 --out=/tmp/ip.json
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

if __package__ in (None, ""):   # run as a file: this file must not shadow the package
  sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags
import numpy as np

from input_pipeline import examples
from input_pipeline import pipeline
from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import source as source_lib
from configs import dvd

_DIR = flags.DEFINE_string("dir", "", "Folder for the synthetic shards (default: a temp dir).")
_RECORDS = flags.DEFINE_integer("records", 2048, "Synthetic records to write.")
_SHARDS = flags.DEFINE_integer("shards", 8, "Shards to write.")
_DTYPE = flags.DEFINE_enum("dtype", "float16", record_format.FEATURE_DTYPES, "Feature dtype.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches per pipeline setting.")
_THREADS = flags.DEFINE_list("threads", ["0", "1", "2", "4"], "data.read_threads to try.")
_WORKERS = flags.DEFINE_list("workers", ["0"], "data.worker_count to try (e.g. 0,2).")
_TRAIN_STEP = flags.DEFINE_bool("train_step", True,
                                 "Also time the train step of the same config (the baseline).")
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def _write_shards(data_dir: str, config) -> None:
  rng = np.random.default_rng(0)
  d = config.data

  def clips():
    for i in range(_RECORDS.value):
      features = {}
      for m in d.modalities:   # 3/4 of the clips as long as max_steps, the rest shorter/longer
        t = int(d.max_steps[m] * rng.choice([0.5, 1.0, 1.0, 1.5]))
        features[m] = rng.normal(size=(t, d.dims[m])).astype(np.float32)
      n = features["image"].shape[0]
      yield record_format.Clip(clip_id=f"synthetic-{i}", features=features,
                               label=int(rng.integers(0, d.num_classes)),
                               step_class=rng.integers(0, d.num_classes, size=n))

  shards.write_split(data_dir, d.train_split, clips(), _SHARDS.value, dtype=_DTYPE.value)


def _record_bytes(source: source_lib.TFRecordShardsSource) -> float:
  return float(np.mean([len(source[i]) for i in range(min(len(source), 256))]))


def _bench_read(source, seconds: float = 3.0) -> dict:
  order = np.random.default_rng(0).permutation(len(source))
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    source[int(order[n % len(order)])]
    n += 1
  return {"records": n, "seconds": time.perf_counter() - start}


def _bench_decode(source, config, seconds: float = 3.0) -> dict:
  spec = examples.ExampleSpec.from_config(config)
  order = np.random.default_rng(0).permutation(len(source))
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    clip = record_format.decode(source[int(order[n % len(order)])], spec.modalities)
    examples.to_example(clip, spec)
    n += 1
  return {"records": n, "seconds": time.perf_counter() - start}


def _bench_pipeline(config) -> dict:
  start = time.perf_counter()
  it = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  next(it)
  first = time.perf_counter() - start
  for _ in range(3):   # let the prefetch buffers fill up
    next(it)
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(it)
  seconds = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  return {"records": _BATCHES.value * config.train.batch_size, "seconds": seconds,
          "first_batch_s": first}


def _bench_train_step(config, steps: int = 5) -> dict:
  from benchmarks import train_step   # pylint: disable=g-import-not-at-top
  step = train_step.JaxStep(config, train_step.synthetic_batch(config))
  (wall, _), = train_step.time_interleaved({"jax": step}, rounds=1, reps=steps, warmup=1).values()
  return {"records": config.train.batch_size, "seconds": wall, "compile_s": step.compile_s}


def main(argv):
  del argv
  config = dvd.get_config()
  config.train.batch_size = _BATCH.value
  with tempfile.TemporaryDirectory() as tmp:
    config.data.dir = _DIR.value or tmp
    if not os.path.exists(os.path.join(config.data.dir, "train-00000-of-%05d.tfrecord"
                                       % _SHARDS.value)):
      start = time.perf_counter()
      _write_shards(config.data.dir, config)
      print(f"wrote {_RECORDS.value} records in {time.perf_counter() - start:.1f} s")
    source = source_lib.TFRecordShardsSource(
        shards.split_files(config.data.dir, config.data.train_split))
    record_mb = _record_bytes(source) / 2**20
    rows = [("read (1 thread)", _bench_read(source)),
            ("decode+validate+pad (1 thread)", _bench_decode(source, config))]
    for workers in map(int, _WORKERS.value):
      for threads in map(int, _THREADS.value):
        config.data.read_threads = threads
        config.data.worker_count = workers
        rows.append((f"pipeline threads={threads} workers={workers}", _bench_pipeline(config)))
  train_rate = None
  if _TRAIN_STEP.value:
    r = _bench_train_step(config)
    train_rate = r["records"] / r["seconds"]
    rows.append(("train step (examples consumed)", r))

  results = []
  print(f"\n{len(source)} records of {record_mb * 1024:.0f} KiB ({_DTYPE.value}), batch "
        f"{_BATCH.value}, {os.cpu_count()} CPUs")
  print(f"{'stage':<36} {'records/s':>10} {'MB/s':>8} {'first batch s':>14} {'x train step':>13}")
  for name, r in rows:
    rate = r["records"] / r["seconds"]
    first = f"{r['first_batch_s']:.2f}" if "first_batch_s" in r else ""
    ratio = f"{rate / train_rate:.1f}" if train_rate else ""
    print(f"{name:<36} {rate:>10.0f} {rate * record_mb:>8.1f} {first:>14} {ratio:>13}")
    results.append(dict(stage=name, records_per_s=rate, mb_per_s=rate * record_mb,
                        over_train_step=rate / train_rate if train_rate else None, **r))
  summary = dict(records=len(source), record_kib=record_mb * 1024, dtype=_DTYPE.value,
                 batch_size=_BATCH.value, cpus=os.cpu_count(), results=results)
  print(json.dumps(summary))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(summary, f, indent=2)


if __name__ == "__main__":
  app.run(main)
