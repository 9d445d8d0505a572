"""TFRecord framing, CRC checks, the offset index and TF interoperability."""

import os
import pickle

import crc32c
import numpy as np
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import tfrecord

# Written by tensorflow 2.21 `tf.io.TFRecordWriter` with the records b"" and b"multimodal_gru".
_TF_GOLDEN = bytes.fromhex(
    "000000000000000029039807d8ea82a2"
    "0e00000000000000c5e5693f6d756c74696d6f64616c5f6772756f16d56f")


def _write(path, records):
  with tfrecord.TFRecordWriter(str(path)) as w:
    for r in records:
      w.write(r)
  return str(path)


def _records(n, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.bytes(int(rng.integers(0, 300))) for _ in range(n)]


def test_masked_crc_matches_tensorflow_definition():
  assert crc32c.crc32c(b"123456789") == 0xE3069283   # the CRC-32C check value
  crc = 0xE3069283
  assert tfrecord.masked_crc(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def test_writer_output_is_byte_identical_to_tensorflow(tmp_path):
  path = _write(tmp_path / "a.tfrecord", [b"", b"multimodal_gru"])
  assert open(path, "rb").read() == _TF_GOLDEN


def test_reader_reads_tensorflow_written_file(tmp_path):
  path = tmp_path / "tf.tfrecord"
  path.write_bytes(_TF_GOLDEN)
  reader = tfrecord.TFRecordReader(str(path))
  assert list(reader) == [b"", b"multimodal_gru"]
  assert reader.read_record(1) == b"multimodal_gru"


def test_random_access_through_cached_index(tmp_path, monkeypatch):
  records = _records(50)
  path = _write(tmp_path / "r.tfrecord", records)
  reader = tfrecord.TFRecordReader(path)
  assert os.path.exists(path + ".idx")
  for i in np.random.default_rng(1).permutation(len(records)):
    assert reader.read_record(int(i)) == records[i]
  with pytest.raises(IndexError):
    reader.read_record(len(records))
  # A second open uses the cache: no scan.
  monkeypatch.setattr(tfrecord, "scan_index", lambda p: pytest.fail("index rebuilt"))
  assert list(tfrecord.TFRecordReader(path)) == records
  # Picklable (grain workers); the copy opens its own file.
  copy = pickle.loads(pickle.dumps(reader))
  assert copy.read_record(7) == records[7]


def test_stale_index_is_rebuilt(tmp_path):
  path = _write(tmp_path / "r.tfrecord", _records(5))
  assert len(tfrecord.TFRecordReader(path)) == 5
  new = _records(8, seed=1)
  _write(path, new)                               # different size
  assert list(tfrecord.TFRecordReader(path)) == new
  same_size = [bytes(len(r)) for r in new]
  _write(path, same_size)                         # same size, only the mtime differs
  stat = os.stat(path)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
  assert list(tfrecord.TFRecordReader(path)) == same_size


def _rewrite_keeping_stat(path, records):
  """Rewrites `path` with `records` (same total size) and restores its mtime by hand."""
  stat = os.stat(path)
  _write(path, records)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def test_same_size_rewrite_with_restored_mtime_rebuilds_index(tmp_path):
  path = _write(tmp_path / "r.tfrecord", [b"a" * 100, b"b" * 100, b"c" * 100])
  assert len(tfrecord.load_index(path)) == 3
  new = [b"d" * 40, b"e" * 160, b"f" * 100]       # other record boundaries, same size
  _rewrite_keeping_stat(path, new)
  assert list(tfrecord.TFRecordReader(path)) == new
  # Same size and mtime again, now with a damaged length in record 1: the rebuilt
  # index sees the damage (the stale one would have promised 3 records).
  _flip(path, int(tfrecord.load_index(path).offsets[1]) + 3)
  stat = os.stat(path)
  data = open(path, "rb").read()
  _rewrite_keeping_stat(path, new)
  tfrecord.load_index(path)                        # the cache describes the intact file
  with open(path, "wb") as f:
    f.write(data)
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  reader = tfrecord.TFRecordReader(path)
  assert len(reader) == 1 and reader.tail_error().field == "tfrecord/length_crc"


def test_edited_index_file_is_rebuilt(tmp_path):
  records = _records(6)
  path = _write(tmp_path / "r.tfrecord", records)
  tfrecord.load_index(path)
  with np.load(path + ".idx") as z:
    arrays = dict(z)
  arrays["offsets"] = arrays["offsets"][::-1].copy()   # valid npz, wrong content
  with open(path + ".idx", "wb") as f:
    np.savez(f, **arrays)
  assert list(tfrecord.TFRecordReader(path)) == records


def test_damaged_index_file_is_rebuilt(tmp_path):
  records = _records(4)
  path = _write(tmp_path / "r.tfrecord", records)
  tfrecord.load_index(path)
  with open(path + ".idx", "wb") as f:
    f.write(b"not an npz")
  assert list(tfrecord.TFRecordReader(path)) == records


def _flip(path, offset):
  data = bytearray(open(path, "rb").read())
  data[offset] ^= 0x40
  open(path, "wb").write(bytes(data))


def test_data_crc_error_names_file_record_and_offset(tmp_path):
  records = [b"x" * 100] * 4
  path = _write(tmp_path / "r.tfrecord", records)
  offset = int(tfrecord.load_index(path).offsets[2])
  _flip(path, offset + 12 + 50)
  reader = tfrecord.TFRecordReader(path)
  assert reader.read_record(1) == records[1]
  with pytest.raises(tfrecord.TFRecordCorruptError) as e:
    reader.read_record(2)
  assert (e.value.path, e.value.record, e.value.offset) == (path, 2, offset)
  assert e.value.field == "tfrecord/data_crc"
  assert path in str(e.value) and "record 2" in str(e.value) and f"offset {offset}" in str(e.value)


@pytest.mark.parametrize("where", [0, 9])   # a length byte, a length-CRC byte
def test_length_corruption_keeps_earlier_records(tmp_path, where):
  records = _records(5)
  path = _write(tmp_path / "r.tfrecord", records)
  offset = int(tfrecord.load_index(path).offsets[3])
  _flip(path, offset + where)
  reader = tfrecord.TFRecordReader(path)
  assert len(reader) == 3
  assert [reader.read_record(i) for i in range(3)] == records[:3]
  error = reader.tail_error()
  assert (error.record, error.offset, error.field) == (3, offset, "tfrecord/length_crc")
  with pytest.raises(tfrecord.TFRecordCorruptError, match="record 3 at byte offset"):
    list(reader)


@pytest.mark.parametrize("cut", [5, 30])   # inside the header, inside the data
def test_truncation_is_reported(tmp_path, cut):
  records = [b"y" * 100] * 3
  path = _write(tmp_path / "r.tfrecord", records)
  offset = int(tfrecord.load_index(path).offsets[2])
  os.truncate(path, offset + cut)
  reader = tfrecord.TFRecordReader(path)
  assert len(reader) == 2
  error = reader.tail_error()
  assert (error.path, error.record, error.offset, error.field) == (path, 2, offset,
                                                                   "tfrecord/length")
  assert "truncated" in str(error)
  # The cached index remembers the damage.
  assert tfrecord.TFRecordReader(path).tail_error().record == 2


def test_file_changed_after_indexing_is_detected_on_read(tmp_path):
  path = _write(tmp_path / "r.tfrecord", [b"z" * 100] * 3)
  reader = tfrecord.TFRecordReader(path)
  os.truncate(path, os.path.getsize(path) - 10)
  with pytest.raises(tfrecord.TFRecordCorruptError, match="record 2"):
    reader.read_record(2)


def _full_clip():
  rng = np.random.default_rng(0)
  return record_format.Clip(
      clip_id="clip-7", source="videos/a.mp4",
      features={"video": rng.normal(size=(3, 4)), "image": rng.normal(size=(5, 2)),
                "text": rng.normal(size=(2, 3))},
      timestamps={"image": np.arange(5) * 0.5},
      captions=["a person walks", "a car"],
      label=1, step_class=np.array([0, 1, 1, 0, 1]),
      va=rng.uniform(-1, 1, size=(5, 2)), valid=np.array([1, 0, 1, 1, 1]))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_written_record_parses_as_tf_example(tmp_path, dtype):
  """Every key, read back with the tf.train.Example proto (wire-identical to TF's)."""
  clip = _full_clip()
  (path,) = shards.write_split(str(tmp_path), "train", [clip], num_shards=1, dtype=dtype)
  example = tf_example_pb2.Example.FromString(tfrecord.TFRecordReader(path).read_record(0))
  feat = example.features.feature
  assert set(feat) == {"clip/id", "clip/source", "features/dtype", "text/captions",
                       "label/class", "label/step_class", "label/va", "label/valid",
                       "image/timestamps"} | {f"{m}/{k}" for m in record_format.MODALITIES
                                              for k in ("features", "shape")}
  assert feat["clip/id"].bytes_list.value == [b"clip-7"]
  assert feat["clip/source"].bytes_list.value == [b"videos/a.mp4"]
  assert feat["features/dtype"].bytes_list.value == [dtype.encode()]
  for m, x in clip.features.items():
    assert list(feat[f"{m}/shape"].int64_list.value) == list(x.shape)
    (raw,) = feat[f"{m}/features"].bytes_list.value
    np.testing.assert_array_equal(np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")),
                                  x.astype(dtype).ravel())
  np.testing.assert_allclose(feat["image/timestamps"].float_list.value, clip.timestamps["image"])
  assert feat["text/captions"].bytes_list.value == [b"a person walks", b"a car"]
  assert feat["label/class"].int64_list.value == [1]
  assert list(feat["label/step_class"].int64_list.value) == [0, 1, 1, 0, 1]
  assert list(feat["label/valid"].int64_list.value) == [1, 0, 1, 1, 1]
  np.testing.assert_allclose(feat["label/va"].float_list.value, clip.va.ravel(), rtol=1e-6)


def test_tensorflow_reads_written_shard(tmp_path):
  tf = pytest.importorskip("tensorflow")
  clip = _full_clip()
  (path,) = shards.write_split(str(tmp_path), "train", [clip, clip], 1, dtype="float32")
  spec = {
      "clip/id": tf.io.FixedLenFeature([], tf.string),
      "video/features": tf.io.FixedLenFeature([], tf.string),
      "video/shape": tf.io.FixedLenFeature([2], tf.int64),
      "text/captions": tf.io.VarLenFeature(tf.string),
      "label/class": tf.io.FixedLenFeature([1], tf.int64),
      "label/va": tf.io.VarLenFeature(tf.float32),
      "label/valid": tf.io.VarLenFeature(tf.int64),
  }
  parsed = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset([path])]
  assert len(parsed) == 2
  e = parsed[0]
  assert e["clip/id"].numpy() == b"clip-7"
  assert list(e["video/shape"].numpy()) == [3, 4]
  np.testing.assert_array_equal(tf.io.decode_raw(e["video/features"], tf.float32).numpy(),
                                clip.features["video"].astype(np.float32).ravel())
  assert list(e["text/captions"].values.numpy()) == [b"a person walks", b"a car"]
  assert list(e["label/valid"].values.numpy()) == [1, 0, 1, 1, 1]
  np.testing.assert_allclose(e["label/va"].values.numpy(), clip.va.ravel(), rtol=1e-6)
