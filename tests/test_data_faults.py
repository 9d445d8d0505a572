"""Damaged shards: empty, truncated, directories, dangling symlinks, stale indexes; check_split."""

import json
import os

import numpy as np
import pytest

from input_pipeline import pipeline
from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import tfrecord
from multimodal_gru import config_base

DIMS = dict(video=3, image=2, text=2)


def _clips(n, seed=0):
  rng = np.random.default_rng(seed)
  for i in range(n):
    features = {m: rng.normal(size=(2, d)).astype(np.float32) for m, d in DIMS.items()}
    features["video"][0, 0] = i
    yield record_format.Clip(clip_id=f"clip{i}", features=features, label=i % 2,
                             step_class=np.zeros(2, int))


def _config(data_dir, skip=False):
  c = config_base.get_base_config()
  c.data.dir = str(data_dir)
  c.data.dims = DIMS
  c.data.max_steps = dict(video=2, image=2, text=2)
  c.data.num_classes = 2
  c.data.read_threads = 1
  c.data.skip_bad_records = skip
  c.train.batch_size = c.train.eval_batch_size = 8
  return c


def _write(tmp_path, n=8, num_shards=2, split="eval", manifest=True):
  paths = shards.write_split(str(tmp_path), split, _clips(n), num_shards)
  if not manifest:      # as written before record counts were kept
    os.remove(shards.manifest_path(str(tmp_path), split))
  return paths


def _eval_ids(config):
  batches = pipeline.create_eval_batches(config, process_index=0, process_count=1)
  return sorted(int(i) for b in batches for i in b["video"][b["example_mask"], 0, 0])


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


# --- empty, directory, dangling symlink -------------------------------------------------------


def _empty(path):
  open(path, "wb").close()


def _directory(path):
  os.remove(path)
  os.mkdir(path)


def _dangling(path):
  os.remove(path)
  os.symlink(path + ".gone", path)


@pytest.mark.parametrize("damage, field", [(_empty, "shard/empty"),
                                           (_directory, "shard/not_a_file"),
                                           (_dangling, "shard/not_found")])
@pytest.mark.parametrize("manifest", [True, False])
def test_unusable_shard_names_the_file(tmp_path, caplog, damage, field, manifest):
  paths = _write(tmp_path, n=8, num_shards=2, manifest=manifest)
  damage(paths[1])
  with pytest.raises(pipeline.BadShardError) as e:   # not IsADirectoryError / FileNotFoundError
    _eval_ids(_config(tmp_path))
  assert paths[1] in str(e.value) and repr(field) in str(e.value)
  assert "skip_bad_records=True" in str(e.value)
  ((path, entry),) = pipeline.check_split(_config(tmp_path, skip=True), "eval")["files"].items()
  # Exact with the counts written beside the shards; else the mean of the intact shards.
  assert (path, entry["field"], entry["records_lost"], entry["estimated"]) == (
      paths[1], field, 4, not manifest)
  assert len([w for w in _warnings(caplog) if paths[1] in w and "4 records lost" in w]) == 1
  assert _eval_ids(_config(tmp_path, skip=True)) == [0, 2, 4, 6]   # shard 0 only


def test_shard_written_without_records_is_not_damage(tmp_path):
  _write(tmp_path, n=1, num_shards=2)          # shard 1 is legitimately empty
  report = pipeline.check_split(_config(tmp_path), "eval", full_crc=True)
  assert (report["records"], report["records_lost"], report["files"]) == (1, 0, {})


def test_missing_shard_is_named(tmp_path):
  paths = _write(tmp_path, n=8, num_shards=3)
  os.remove(paths[1])
  with pytest.raises(shards.DataNotFoundError, match="eval-00001-of-00003.tfrecord"):
    _eval_ids(_config(tmp_path))


# --- truncation: records lost, not hits -------------------------------------------------------


def test_truncated_shard_reports_records_lost_once(tmp_path, caplog):
  paths = _write(tmp_path, n=1024, num_shards=2, split="train")
  offset = int(tfrecord.load_index(paths[1]).offsets[500])
  os.truncate(paths[1], offset + 7)                # 500 of its 512 records stay readable
  config = _config(tmp_path, skip=True)
  report = pipeline.check_split(config, "train")
  assert report["files"][paths[1]]["records_lost"] == 12
  assert not report["estimated"]
  assert (report["records"], report["records_lost"]) == (1012, 12)
  assert json.loads(json.dumps(report)) == report
  (warning,) = [w for w in _warnings(caplog) if paths[1] in w and "records lost" in w]
  assert "12 records lost" in warning and "skip_bad_records=True to" not in warning
  # Two epochs of training: the lost end is never read, so it is never counted as a skip.
  it = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  ids = [int(i) for _ in range(253) for i in next(it)["video"][:, 0, 0]]
  assert pipeline.skipped_records(it) == {}
  assert sorted(set(ids)) == sorted(set(range(1024)) - set(range(1001, 1024, 2)))
  with pytest.raises(pipeline.BadShardError, match="12 records lost"):
    pipeline.check_split(_config(tmp_path), "train")


def test_truncation_without_written_counts_is_estimated(tmp_path):
  paths = _write(tmp_path, n=64, num_shards=2, manifest=False)
  index = tfrecord.load_index(paths[1])
  os.truncate(paths[1], int(index.offsets[20]) + 7)
  entry = pipeline.check_split(_config(tmp_path, skip=True), "eval")["files"][paths[1]]
  assert entry["estimated"] and entry["records_lost"] == 1   # 7 bytes: one partial record
  assert f"bytes {int(index.offsets[20])}..{int(index.offsets[20]) + 7}" in entry["reason"]
  assert "estimate" in entry["reason"]


def test_truncation_at_a_record_boundary_is_found_with_written_counts(tmp_path):
  paths = _write(tmp_path, n=16, num_shards=2)
  os.truncate(paths[0], int(tfrecord.load_index(paths[0]).offsets[5]))
  with pytest.raises(pipeline.BadShardError, match="ends cleanly after 5 records"):
    pipeline.check_split(_config(tmp_path), "eval")
  entry = pipeline.check_split(_config(tmp_path, skip=True), "eval")["files"][paths[0]]
  assert (entry["field"], entry["records_lost"], entry["estimated"]) == ("shard/records", 3,
                                                                         False)


# --- check_split ------------------------------------------------------------------------------


def _flip(path, offset):
  data = bytearray(open(path, "rb").read())
  data[offset] ^= 0x40
  open(path, "wb").write(bytes(data))


def test_check_split_full_crc_finds_data_damage(tmp_path):
  paths = _write(tmp_path, n=12, num_shards=3)
  index = tfrecord.load_index(paths[2])
  for record in (1, 3):
    _flip(paths[2], int(index.offsets[record]) + 12 + 5)
  _empty(paths[0])
  config = _config(tmp_path)
  # Framing only (the train split's check): the data damage is not seen.
  with pytest.raises(pipeline.BadShardError) as e:
    pipeline.check_split(config, "eval")
  assert [d.path for d in e.value.damage] == [paths[0]]
  with pytest.raises(pipeline.BadShardError) as e:          # one error naming both files
    pipeline.check_split(config, "eval", full_crc=True)
  assert [d.path for d in e.value.damage] == [paths[0], paths[2]]
  assert "records 1, 3" in str(e.value) and "2 of 3 shards" in str(e.value)
  config.data.skip_bad_records = True
  report = pipeline.check_split(config, "eval", full_crc=True)
  assert report == {
      "split": "eval", "shards": 3, "full_crc": True, "records": 6, "records_lost": 6,
      "estimated": False, "files": {
          paths[0]: {"field": "shard/empty", "records_lost": 4, "estimated": False,
                     "reason": report["files"][paths[0]]["reason"]},
          paths[2]: {"field": "tfrecord/data_crc", "records_lost": 2, "estimated": False,
                     "reason": report["files"][paths[2]]["reason"]}}}


def test_check_split_of_intact_split(tmp_path):
  _write(tmp_path, n=10, num_shards=3)
  assert pipeline.check_split(_config(tmp_path), "eval", full_crc=True) == {
      "split": "eval", "shards": 3, "full_crc": True, "records": 10, "records_lost": 0,
      "estimated": False, "files": {}}


# --- skip-mode messages -----------------------------------------------------------------------


def test_skip_mode_messages_do_not_ask_to_enable_skipping(tmp_path, caplog):
  paths = _write(tmp_path, n=8, num_shards=2)
  _flip(paths[0], int(tfrecord.load_index(paths[0]).offsets[1]) + 12 + 5)
  with pytest.raises(pipeline.BadRecordError, match="set data.skip_bad_records=True"):
    _eval_ids(_config(tmp_path))
  caplog.clear()
  assert _eval_ids(_config(tmp_path, skip=True)) == [0, 1, 3, 4, 5, 6, 7]
  (warning,) = [w for w in _warnings(caplog) if paths[0] in w]
  assert "record 1" in warning and "tfrecord/data_crc" in warning
  assert "Skipped (data.skip_bad_records=True)" in warning
  assert "set data.skip_bad_records=True" not in warning
