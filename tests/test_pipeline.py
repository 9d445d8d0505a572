"""Shards -> validated, padded batches: round trips, bad records, sharding, resume."""

import math
import os

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from input_pipeline import pipeline
from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import tfrecord
from multimodal_gru import config_base

DIMS = dict(video=6, image=5, text=3)
MAX_STEPS = dict(video=4, image=7, text=3)
NUM_CLASSES = 3


def _clip(i, rng, task="classification", lengths=None):
  """Clip i; video[0, 0] == i identifies it inside a batch."""
  lengths = lengths or {m: int(rng.integers(1, 2 * MAX_STEPS[m] + 1)) for m in DIMS}
  features = {m: rng.normal(size=(lengths[m], DIMS[m])).astype(np.float32) for m in DIMS}
  features["video"][0, 0] = i
  n = lengths["image"]
  valid = rng.random(n) < 0.8
  clip = record_format.Clip(clip_id=f"clip{i}", features=features, valid=valid)
  if task == "classification":
    clip.label = int(rng.integers(0, NUM_CLASSES))
    clip.step_class = rng.integers(0, NUM_CLASSES, size=n)
  else:
    clip.va = np.where(valid[:, None], rng.uniform(-1, 1, size=(n, 2)), -5.0)
  return clip


def _clips(n, task="classification", seed=0):
  rng = np.random.default_rng(seed)
  return [_clip(i, rng, task) for i in range(n)]


def _config(data_dir, task="classification", batch_size=4, eval_batch_size=4):
  c = config_base.get_base_config()
  c.task = task
  c.data.dir = str(data_dir)
  c.data.dims = DIMS
  c.data.max_steps = MAX_STEPS
  c.data.num_classes = NUM_CLASSES
  c.data.read_threads = 2
  c.train.batch_size = batch_size
  c.train.eval_batch_size = eval_batch_size
  return c


def _ids(batch):
  """Clip indices of the real rows of a batch."""
  return batch["video"][batch["example_mask"], 0, 0].astype(int).tolist()


def _eval_rows(config, **kwargs):
  """All real rows of one eval pass as a list of per-example dicts."""
  rows = []
  for batch in pipeline.create_eval_batches(config, **kwargs):
    for r in np.flatnonzero(batch["example_mask"]):
      rows.append({k: v[r] for k, v in batch.items()})
  return rows


def _file_order(n, num_shards):
  """Clip indices in global record order of a round-robin written split."""
  return [i for s in range(num_shards) for i in range(s, n, num_shards)]


# --- round trips -----------------------------------------------------------------------------


def _check_example(row, clip, task, dtype):
  for m in DIMS:
    x = clip.features[m].astype(dtype).astype(np.float32)
    n = min(len(x), MAX_STEPS[m])
    np.testing.assert_array_equal(row[m][:n], x[:n])
    assert not row[m][n:].any()
    assert row[f"{m}_mask"].tolist() == [t < len(x) for t in range(MAX_STEPS[m])]
  n = min(len(clip.features["image"]), MAX_STEPS["image"])
  valid = np.zeros(MAX_STEPS["image"], bool)
  valid[:n] = clip.valid[:n]
  np.testing.assert_array_equal(row["step_valid"], valid)
  if task == "classification":
    assert row["label"] == clip.label
    np.testing.assert_array_equal(row["step_label"][:n],
                                  np.where(valid[:n], clip.step_class[:n], 0))
    assert not row["step_label"][n:].any()
  else:
    np.testing.assert_allclose(row["va"][:n], np.where(valid[:n, None], clip.va[:n], 0),
                               rtol=1e-6)
    assert not row["va"][n:].any()
  assert row["example_mask"]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_round_trip(tmp_path, dtype, task):
  clips = _clips(11, task)
  shards.write_split(str(tmp_path), "eval", clips, num_shards=3, dtype=dtype)
  config = _config(tmp_path, task)
  rows = _eval_rows(config, process_index=0, process_count=1)
  order = _file_order(len(clips), 3)
  assert [int(r["video"][0, 0]) for r in rows] == order
  for row, i in zip(rows, order):
    _check_example(row, clips[i], task, dtype)


def test_batch_contract(tmp_path):
  shards.write_split(str(tmp_path), "train", _clips(6), num_shards=2)
  batch = next(pipeline.create_train_iterator(_config(tmp_path), process_index=0,
                                              process_count=1))
  t_img = MAX_STEPS["image"]
  expected = {"label": ((4,), np.int32), "step_label": ((4, t_img), np.int32),
              "step_valid": ((4, t_img), bool), "example_mask": ((4,), bool)}
  for m in DIMS:
    expected[m] = ((4, MAX_STEPS[m], DIMS[m]), np.float32)
    expected[f"{m}_mask"] = ((4, MAX_STEPS[m]), bool)
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      k: (s, np.dtype(d)) for k, (s, d) in expected.items()}
  assert batch["example_mask"].all()


def test_record_without_step_labels_has_no_valid_steps(tmp_path):
  clip = _clips(1)[0]
  clip.step_class = clip.valid = None
  shards.write_split(str(tmp_path), "eval", [clip], num_shards=1)
  (row,) = _eval_rows(_config(tmp_path), process_index=0, process_count=1)
  assert not row["step_valid"].any() and not row["step_label"].any()


# --- bad records -----------------------------------------------------------------------------


def _rewrite_record(path, record, transform):
  """Rewrites record `record` of the shard at `path` as transform(example proto)."""
  records = list(tfrecord.TFRecordReader(path))
  example = tf_example_pb2.Example.FromString(records[record])
  transform(example.features.feature)
  records[record] = example.SerializeToString()
  with tfrecord.TFRecordWriter(path) as w:
    for r in records:
      w.write(r)


def _flip_byte(path, offset):
  data = bytearray(open(path, "rb").read())
  data[offset] ^= 0x40
  open(path, "wb").write(bytes(data))


def _set_clip(clips, i, **changes):
  for k, v in changes.items():
    setattr(clips[i], k, v)


def _bad_features(clips, i, m, x):
  clips[i].features[m] = x


def _nan_feature(clips, i, m):
  clips[i].features[m][0, 1] = np.nan


# Six clips in two shards: clip 3 is record 1 of shard 1. Each case damages it (or,
# for framing damage, the shard around it) and says which field is reported at which
# record number, and which clips survive with skip_bad_records.
_ALL = set(range(6))
BAD_CASES = {
    "data_crc": (None, lambda p, idx: _flip_byte(p, int(idx.offsets[1]) + 12 + 20),
                 "tfrecord/data_crc", 1, _ALL - {3}),
    "length_crc": (None, lambda p, idx: _flip_byte(p, int(idx.offsets[1]) + 2),
                   "tfrecord/length_crc", 1, _ALL - {3, 5}),
    "truncated": (None, lambda p, idx: os.truncate(p, int(idx.offsets[2]) + 40),
                  "tfrecord/length", 2, _ALL - {5}),
    "wrong_dims": (lambda c: _bad_features(c, 3, "video", np.ones((2, DIMS["video"] + 1))),
                   None, "video/features", 1, _ALL - {3}),
    "nan": (lambda c: _nan_feature(c, 3, "image"), None, "image/features", 1, _ALL - {3}),
    "empty_modality": (lambda c: _bad_features(c, 3, "text", np.zeros((0, DIMS["text"]))),
                       None, "text/features", 1, _ALL - {3}),
    "missing_key": (None, lambda p, idx: _rewrite_record(p, 1, lambda f: f.pop("video/shape")),
                    "video/shape", 1, _ALL - {3}),
    "label_out_of_range": (lambda c: _set_clip(c, 3, label=NUM_CLASSES), None,
                           "label/class", 1, _ALL - {3}),
    "label_missing": (lambda c: _set_clip(c, 3, label=None), None, "label/class", 1, _ALL - {3}),
    "step_label_out_of_range": (
        lambda c: _set_clip(c, 3, valid=None,
                            step_class=np.full(len(c[3].features["image"]), -1)),
        None, "label/step_class", 1, _ALL - {3}),
}


def _write_bad_dataset(tmp_path, case, split="eval"):
  damage_clips, damage_file, field, record, survivors = BAD_CASES[case]
  clips = _clips(6, seed=1)
  if damage_clips:
    damage_clips(clips)
  paths = shards.write_split(str(tmp_path), split, clips, num_shards=2)
  if damage_file:
    damage_file(paths[1], tfrecord.load_index(paths[1]))
  return paths[1], field, record, survivors


# Framing damage loses the rest of the file: found when the split is opened (a
# BadShardError) and, when skipping, reported once by check_split as records lost.
FRAMING_CASES = {"length_crc": 2, "truncated": 1}   # case -> records lost


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_record_error_names_file_record_and_field(tmp_path, case):
  path, field, record, _ = _write_bad_dataset(tmp_path, case)
  error = pipeline.BadShardError if case in FRAMING_CASES else pipeline.BadRecordError
  with pytest.raises(error) as e:
    _eval_rows(_config(tmp_path), process_index=0, process_count=1)
  if case in FRAMING_CASES:
    (damage,) = e.value.damage
    assert (damage.path, damage.field, damage.records_lost) == (path, field,
                                                                FRAMING_CASES[case])
  else:
    assert (e.value.path, e.value.record, e.value.field) == (path, record, field)
  message = str(e.value)
  for part in (path, f"record {record}", repr(field), "skip_bad_records=True"):
    assert part in message


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_records_are_skipped_and_counted(tmp_path, case):
  path, field, _, survivors = _write_bad_dataset(tmp_path, case)
  config = _config(tmp_path)
  config.data.skip_bad_records = True
  batches = pipeline.create_eval_batches(config, process_index=0, process_count=1)
  seen = [i for b in batches for i in _ids(b)]
  assert sorted(seen) == sorted(survivors)
  lost = FRAMING_CASES.get(case, 0)
  assert pipeline.skipped_records(batches) == ({} if lost else {field: 1})
  report = pipeline.check_split(config, "eval")
  assert (report["records"], report["records_lost"]) == (6 - lost, lost)
  if lost:
    assert report["files"][path]["records_lost"] == lost


def test_va_out_of_range_at_annotated_step(tmp_path):
  clips = _clips(4, task="regression")
  clips[2].valid[:] = True
  clips[2].va[1] = [0.5, 1.5]
  clips[1].va[:] = -5.0          # out of range only where not annotated: fine
  clips[1].valid[:] = False
  paths = shards.write_split(str(tmp_path), "eval", clips, num_shards=1)
  config = _config(tmp_path, task="regression")
  with pytest.raises(pipeline.BadRecordError, match="label/va") as e:
    _eval_rows(config, process_index=0, process_count=1)
  assert (e.value.path, e.value.record) == (paths[0], 2)
  config.data.skip_bad_records = True
  assert sorted(int(r["video"][0, 0]) for r in _eval_rows(config, process_index=0,
                                                          process_count=1)) == [0, 1, 3]


def _index_stream(num_records, seed, length):
  """Global record indices in training order: shuffled with seed + epoch, repeated."""
  stream = grain.MapDataset.range(num_records).shuffle(seed=seed).repeat()
  return [int(stream[i]) for i in range(length)]


def _expected_train_ids(stream, bad_index, num_good):
  """Clip ids of the first `num_good` good records of `stream`, and the skips before them."""
  order = _file_order(6, 2)
  good = [k for k, i in enumerate(stream) if i != bad_index][:num_good]
  consumed = stream[:good[-1] + 1]
  return [order[i] for i in consumed if i != bad_index], consumed.count(bad_index)


def test_train_iterator_counts_skips(tmp_path):
  _write_bad_dataset(tmp_path, "nan", split="train")    # clip 3 = global record 4 is bad
  config = _config(tmp_path, batch_size=5)
  config.data.skip_bad_records = True
  it = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  ids = [i for _ in range(4) for i in _ids(next(it))]
  want_ids, want_skips = _expected_train_ids(_index_stream(6, 0, 40), 4, 20)
  assert ids == want_ids
  assert want_skips >= 3
  assert pipeline.skipped_records(it) == {"image/features": want_skips}
  config.data.skip_bad_records = False
  with pytest.raises(pipeline.BadRecordError, match="image/features"):
    for _ in range(2):
      next(pipeline.create_train_iterator(config, process_index=0, process_count=1))


# --- shuffling, sharding across processes, eval padding --------------------------------------


def _epoch_ids(config, num_batches, **kwargs):
  it = pipeline.create_train_iterator(config, **kwargs)
  return [i for _ in range(num_batches) for i in _ids(next(it))]


def test_train_shuffles_each_epoch_and_covers_the_split(tmp_path):
  shards.write_split(str(tmp_path), "train", _clips(12), num_shards=3)
  config = _config(tmp_path)
  ids = _epoch_ids(config, 6, process_index=0, process_count=1)    # two epochs
  assert sorted(ids[:12]) == sorted(ids[12:]) == list(range(12))
  assert ids[:12] != ids[12:] and ids[:12] != _file_order(12, 3)
  assert _epoch_ids(config, 6, process_index=0, process_count=1) == ids   # deterministic
  config.data.shuffle_seed = 1
  assert _epoch_ids(config, 6, process_index=0, process_count=1) != ids


def test_two_processes_split_each_training_epoch(tmp_path):
  shards.write_split(str(tmp_path), "train", _clips(12), num_shards=3)
  config = _config(tmp_path, batch_size=4)
  single = _epoch_ids(config, 3, process_index=0, process_count=1)       # one epoch
  p0 = _epoch_ids(config, 3, process_index=0, process_count=2)           # local batch 2
  p1 = _epoch_ids(config, 3, process_index=1, process_count=2)
  assert not set(p0) & set(p1)
  assert sorted(p0 + p1) == sorted(single) == list(range(12))
  # Global shuffle, then every 2nd position: together they replay the single-process stream.
  assert [x for pair in zip(p0, p1) for x in pair] == single


@pytest.mark.parametrize("n", [10, 11, 1])
def test_eval_two_processes_each_example_exactly_once(tmp_path, n):
  shards.write_split(str(tmp_path), "eval", _clips(n), num_shards=3)
  config = _config(tmp_path, eval_batch_size=4)
  single = pipeline.create_eval_batches(config, process_index=0, process_count=1)
  per_process = [pipeline.create_eval_batches(config, process_index=p, process_count=2)
                 for p in range(2)]
  expected_batches = math.ceil(math.ceil(n / 2) / 2)
  assert [len(b) for b in per_process] == [expected_batches] * 2
  ids = []
  for batches in per_process:
    batch_list = list(batches)
    assert len(batch_list) == expected_batches
    assert all(b["example_mask"].shape == (2,) for b in batch_list)
    ids += [i for b in batch_list for i in _ids(b)]
  assert sorted(ids) == list(range(n))
  assert sorted(i for b in single for i in _ids(b)) == list(range(n))


def test_eval_pads_ragged_last_batch(tmp_path):
  shards.write_split(str(tmp_path), "eval", _clips(10), num_shards=2)
  batches = list(pipeline.create_eval_batches(_config(tmp_path), process_index=0,
                                              process_count=1))
  assert [b["example_mask"].tolist() for b in batches] == [[True] * 4, [True] * 4,
                                                           [True, True, False, False]]
  last = batches[-1]
  for k, v in last.items():
    if k != "example_mask":
      assert not v[2:].any(), k
  assert [i for b in batches for i in _ids(b)] == _file_order(10, 2)


def test_num_examples(tmp_path):
  shards.write_split(str(tmp_path), "train", _clips(7), num_shards=3)
  assert pipeline.num_examples(_config(tmp_path), "train") == 7


# --- resuming ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5])   # 10 examples, batch 4: epoch boundary in batch 2
def test_resume_from_state_matches_uninterrupted(tmp_path, k):
  shards.write_split(str(tmp_path), "train", _clips(10), num_shards=2)
  config = _config(tmp_path)
  reference = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  expected = [next(reference) for _ in range(k + 4)]
  it = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  for _ in range(k):
    next(it)
  state = it.get_state()
  resumed = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  resumed.set_state(state)
  for want in expected[k:]:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_iterator_position_round_trips_through_orbax(tmp_path):
  shards.write_split(str(tmp_path / "data"), "train", _clips(10), num_shards=2)
  config = _config(tmp_path / "data")
  config.data.skip_bad_records = True
  it = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  for _ in range(3):
    next(it)
  state = {"w": np.arange(4.0), "step": np.arange(1, dtype=np.int32)}
  manager = ocp.CheckpointManager(str(tmp_path / "ckpt"))
  manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data_iter=pipeline.iterator_save_args(it)))
  expected = [next(it) for _ in range(4)]       # advance before the save is finished
  manager.wait_until_finished()
  assert os.path.exists(tmp_path / "ckpt" / "3" / "data_iter" / "process_0-of-1.json")

  fresh = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  restored = manager.restore(3, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(state), data_iter=pipeline.iterator_restore_args(fresh)))
  np.testing.assert_array_equal(restored["state"]["w"], state["w"])
  for want in expected:
    got = next(restored["data_iter"])
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  manager.close()


# --- worker processes -------------------------------------------------------------------------


@pytest.mark.slow
def test_worker_processes_read_and_count_skips(tmp_path):
  _write_bad_dataset(tmp_path, "nan", split="train")    # clip 3 = global record 4 is bad
  config = _config(tmp_path, batch_size=5)
  config.data.skip_bad_records = True
  config.data.worker_count = 2
  it = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  batches = [next(it) for _ in range(6)]   # round robin: 3 batches from each worker
  stream = _index_stream(6, 0, 80)
  want_ids, want_skips = [], 0
  for worker in range(2):                  # worker w reads stream positions w, w + 2, ...
    ids, skips = _expected_train_ids(stream[worker::2], 4, 15)
    want_ids += ids
    want_skips += skips
  assert sorted(i for b in batches for i in _ids(b)) == sorted(want_ids)
  assert pipeline.skipped_records(it) == {"image/features": want_skips}
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  skipped = pipeline.skipped_records(it)
  it.close()
  resumed = pipeline.create_train_iterator(config, process_index=0, process_count=1)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)["video"], want["video"])
  assert pipeline.skipped_records(resumed) == skipped     # counts are restored too
  resumed.close()


# --- dataset folders ---------------------------------------------------------------------------


def test_write_split_replaces_previous_shards(tmp_path):
  shards.write_split(str(tmp_path), "train", _clips(6), num_shards=3)
  paths = shards.write_split(str(tmp_path), "train", _clips(4), num_shards=2)
  assert shards.split_files(str(tmp_path), "train") == paths
  assert sorted(os.listdir(tmp_path)) == sorted(
      [os.path.basename(p) for p in paths] + [os.path.basename(p) + ".idx" for p in paths] +
      ["train.shards.json"])
  assert shards.read_manifest(str(tmp_path), "train") == {
      os.path.basename(p): {"records": 2, "bytes": os.path.getsize(p)} for p in paths}


def test_dataset_info_merges(tmp_path):
  shards.write_dataset_info(str(tmp_path), {"task": "regression", "dims": {"video": 1024}})
  shards.write_dataset_info(str(tmp_path), {"dims": {"image": 768}, "num_clips": 3})
  assert shards.read_dataset_info(str(tmp_path)) == {
      "task": "regression", "dims": {"video": 1024, "image": 768}, "num_clips": 3}


@pytest.mark.parametrize("make", ["unset", "missing_dir", "no_shards"])
def test_missing_data_says_how_to_get_it(tmp_path, make):
  data_dir = {"unset": "", "missing_dir": str(tmp_path / "nope"), "no_shards": str(tmp_path)}[make]
  config = _config(data_dir)
  with pytest.raises(shards.DataNotFoundError) as e:
    pipeline.create_train_iterator(config, process_index=0, process_count=1)
  assert "python -m multimodal_gru.prepare" in str(e.value)
  assert "--config=configs/demo.py" in str(e.value)


def test_remote_data_dir_says_to_stage_it():
  with pytest.raises(shards.DataNotFoundError, match="tpu_pod.py stage") as e:
    shards.split_files("gs://bucket/data/dvd", "train")
  assert "gs://bucket/data/dvd" in str(e.value)


def test_data_dir_expands_home(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  paths = shards.write_split(str(tmp_path / "data"), "train", _clips(2), num_shards=1)
  assert shards.split_files("~/data", "train") == paths
  shards.write_dataset_info(str(tmp_path / "data"), {"task": "classification"})
  assert shards.read_dataset_info("~/data") == {"task": "classification"}


def test_batch_size_must_split_over_processes(tmp_path):
  shards.write_split(str(tmp_path), "train", _clips(4), num_shards=1)
  with pytest.raises(ValueError, match="multiple of the process count 3"):
    pipeline.create_train_iterator(_config(tmp_path, batch_size=4), process_index=0,
                                   process_count=3)
