"""Dataset folders: `{split}-{i:05d}-of-{n:05d}.tfrecord` shards and dataset_info.json.

Every writer of clip datasets (the demo generator, feature extraction, dataset
preparation) goes through `write_split` and `write_dataset_info`. `write_split`
also writes `{split}.shards.json`, the records and bytes of each shard as
written, so that a reader can tell how many records a damaged shard lost:

  {"version": 1, "split": "train",
   "shards": {"train-00000-of-00002.tfrecord": {"records": 512, "bytes": 1048576}, ...}}
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Iterable

from input_pipeline import record_format
from input_pipeline import tfrecord

DATASET_INFO = "dataset_info.json"
_MANIFEST_VERSION = 1
HOW_TO_GET_DATA = (
    "Prepare a dataset with `python -m multimodal_gru.prepare ...` and point "
    "--config.data.dir at its output folder, or run the self-contained demo with "
    "--config=configs/demo.py.")


class DataNotFoundError(FileNotFoundError):
  """No data where the config points."""


def _shard_name(split: str, i: int, n: int) -> str:
  return f"{split}-{i:05d}-of-{n:05d}.tfrecord"


def _shard_pattern(split: str) -> re.Pattern:
  return re.compile(re.escape(split) + r"-\d{5}-of-\d{5}\.tfrecord")


def manifest_path(data_dir: str, split: str) -> str:
  return os.path.join(data_dir, f"{split}.shards.json")


def _existing_shards(data_dir: str, split: str) -> list[str]:
  pattern = _shard_pattern(split)
  return sorted(p for p in glob.glob(os.path.join(glob.escape(data_dir), f"{split}-*.tfrecord"))
                if pattern.fullmatch(os.path.basename(p)))


def write_split(out_dir: str, split: str, clips: Iterable[record_format.Clip],
                num_shards: int, dtype: str = "float16") -> list[str]:
  """Writes `clips` round-robin into `num_shards` shards; returns their paths.

  Shards of `split` already in `out_dir` are replaced (also those of a different
  shard count). Each shard is written under a temporary name and renamed when
  complete; its offset index is built right after, and the records and bytes
  of every shard go to `{split}.shards.json` (see the module doc).
  """
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, _shard_name(split, i, num_shards)) for i in range(num_shards)]
  writers = [tfrecord.TFRecordWriter(p + ".tmp") for p in paths]
  records = [0] * num_shards
  try:
    for i, clip in enumerate(clips):
      writers[i % num_shards].write(record_format.encode(clip, dtype))
      records[i % num_shards] += 1
  except BaseException:
    for w in writers:
      w.close()
      os.remove(w.path)
    raise
  for w in writers:
    w.close()
  for old in _existing_shards(out_dir, split):
    if old not in paths:
      os.remove(old)
      if os.path.exists(tfrecord.index_path(old)):
        os.remove(tfrecord.index_path(old))
  manifest = {"version": _MANIFEST_VERSION, "split": split, "shards": {
      os.path.basename(p): {"records": n, "bytes": os.path.getsize(p + ".tmp")}
      for p, n in zip(paths, records)}}
  if os.path.exists(manifest_path(out_dir, split)):   # never describes other shards
    os.remove(manifest_path(out_dir, split))
  for p in paths:
    os.replace(p + ".tmp", p)
    tfrecord.load_index(p)
  _write_json(manifest_path(out_dir, split), manifest)
  return paths


def merge_parts(out_dir: str, split: str, part_dirs: list[str]) -> list[str]:
  """Moves the shards of `split` from each of `part_dirs` into `out_dir` as one split.

  The parts (each written by `write_split`, e.g. one per process) keep their
  order: part 0's shards come first. Empty shards are dropped unless every
  shard is empty. The shards are renamed to `{split}-{i}-of-{n}` with their
  indexes (a rename keeps the mtime the index checks), stale shards of `split`
  in `out_dir` are removed and the merged `{split}.shards.json` is written last.
  Returns the shard paths.
  """
  found = []
  for d in part_dirs:
    manifest = read_manifest(d, split)
    if manifest is None:
      raise DataNotFoundError(f"{manifest_path(d, split)} does not exist: that part of split "
                              f"{split!r} was not written; run the extraction again.")
    found += [(os.path.join(d, name), entry) for name, entry in sorted(manifest.items())]
  kept = [f for f in found if f[1]["records"]] or found[:1]
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, _shard_name(split, i, len(kept))) for i in range(len(kept))]
  if os.path.exists(manifest_path(out_dir, split)):   # never describes other shards
    os.remove(manifest_path(out_dir, split))
  for old in _existing_shards(out_dir, split):
    if old not in paths:
      os.remove(old)
      if os.path.exists(tfrecord.index_path(old)):
        os.remove(tfrecord.index_path(old))
  for (source, _), path in zip(kept, paths):
    os.replace(source, path)
    if os.path.exists(tfrecord.index_path(source)):
      os.replace(tfrecord.index_path(source), tfrecord.index_path(path))
    tfrecord.load_index(path)   # checks (or rebuilds) the moved index
  _write_json(manifest_path(out_dir, split), {
      "version": _MANIFEST_VERSION, "split": split,
      "shards": {os.path.basename(p): entry for (_, entry), p in zip(kept, paths)}})
  return paths


def read_manifest(data_dir: str, split: str) -> dict[str, dict[str, int]] | None:
  """{shard file name: {"records", "bytes"}} as written; None for a split written without it."""
  path = manifest_path(local_data_dir(data_dir), split)
  try:
    with open(path) as f:
      manifest = json.load(f)
    return {name: {"records": int(v["records"]), "bytes": int(v["bytes"])}
            for name, v in manifest["shards"].items()}
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} is unreadable ({e}); delete it to read the split without "
                     "expected record counts, or write the split again.") from e


def _write_json(path: str, obj: Any) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(path + ".tmp", path)


def _merge(old: dict, new: dict) -> dict:
  out = dict(old)
  for k, v in new.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def write_dataset_info(out_dir: str, info: dict[str, Any]) -> None:
  """Merges `info` into `{out_dir}/dataset_info.json` (nested dicts key by key)."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, DATASET_INFO)
  _write_json(path, _merge(read_dataset_info(out_dir) if os.path.exists(path) else {}, info))


def local_data_dir(data_dir: str) -> str:
  """config.data.dir as a local path (`~` expanded); a clear error if it is remote."""
  if "://" in data_dir:
    raise DataNotFoundError(
        f"config.data.dir={data_dir!r} is remote; the reader needs local files (random access "
        "by byte offset). Copy the shards to every host first, e.g. `gcloud storage rsync "
        f"--recursive {data_dir} ~/data` (on a TPU pod: `python launch/tpu_pod.py stage ...`), "
        "and pass --config.data.dir=~/data.")
  return os.path.expanduser(data_dir)


def read_dataset_info(data_dir: str) -> dict[str, Any]:
  path = os.path.join(local_data_dir(data_dir), DATASET_INFO)
  if not os.path.exists(path):
    raise DataNotFoundError(f"{path} does not exist. {HOW_TO_GET_DATA}")
  with open(path) as f:
    return json.load(f)


def split_files(data_dir: str, split: str) -> list[str]:
  """Sorted shard paths of `split`; a clear error if there are none."""
  if not data_dir:
    raise DataNotFoundError(f"config.data.dir is not set. {HOW_TO_GET_DATA}")
  data_dir = local_data_dir(data_dir)
  if not os.path.isdir(data_dir):
    raise DataNotFoundError(f"Data folder {data_dir!r} does not exist. {HOW_TO_GET_DATA}")
  paths = _existing_shards(data_dir, split)
  if not paths:
    raise DataNotFoundError(
        f"No shards {_shard_name(split, 0, 1).replace('00000-of-00001', '*-of-*')} in "
        f"{data_dir!r}. {HOW_TO_GET_DATA}")
  counts = {int(os.path.basename(p)[-14:-9]) for p in paths}
  if len(counts) == 1 and len(paths) < (n := next(iter(counts))):
    missing = sorted(set(_shard_name(split, i, n) for i in range(n)) -
                     set(map(os.path.basename, paths)))
    raise DataNotFoundError(
        f"{data_dir!r}: split {split!r} has {len(paths)} of its {n} shards; missing "
        f"{', '.join(missing)}. Copy the missing shards again, or write the split again.")
  if counts != {len(paths)}:
    raise ValueError(f"{data_dir!r}: split {split!r} has {len(paths)} shards but their names "
                     f"say {sorted(counts)}; the folder mixes two writes of the split. "
                     "Delete the stale shards and write the split again.")
  return paths
