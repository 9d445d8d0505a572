"""The demo benchmark: determinism, structure, labels and the designed property."""

import glob
import json
import os
import threading

import ml_collections
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid

from input_pipeline import examples
from input_pipeline import record_format
from input_pipeline import tfrecord
from multimodal_gru import demo_data

MODALITIES = record_format.MODALITIES
NUM_CLIPS = 1200


@pytest.fixture(scope="module")
def generated():
  directions = demo_data.event_directions()
  pairs = [demo_data.generate_clip_and_truth("train", i, 0, directions) for i in range(NUM_CLIPS)]
  return [c for c, _ in pairs], [t for _, t in pairs]


def _oracle_bits(clip, directions):
  """b_m read from the features: does the A projection peak before the B projection?"""
  return {m: int(np.argmax(clip.features[m] @ directions[m].a) <
                 np.argmax(clip.features[m] @ directions[m].b)) for m in MODALITIES}


def test_deterministic_in_split_seed_index():
  first = [record_format.encode(c) for c in demo_data.generate_clips("train", 12, seed=3)]
  again = [record_format.encode(c) for c in demo_data.generate_clips("train", 12, seed=3)]
  assert first == again
  clip7, _ = demo_data.generate_clip_and_truth("train", 7, 3)
  assert record_format.encode(clip7) == first[7]          # independent of num_clips
  other_seed = [record_format.encode(c) for c in demo_data.generate_clips("train", 12, seed=4)]
  other_split = [record_format.encode(c) for c in demo_data.generate_clips("eval", 12, seed=3)]
  assert not set(first) & set(other_seed)
  assert not set(first) & set(other_split)


def test_shapes_timestamps_and_dims(generated):
  clips, _ = generated
  lengths = {m: set() for m in MODALITIES}
  for clip in clips[:300]:
    for m in MODALITIES:
      x, ts = clip.features[m], clip.timestamps[m]
      lo, hi = demo_data.STEP_RANGE[m]
      assert lo <= x.shape[0] <= hi and x.shape[1] == demo_data.DIMS[m]
      assert x.dtype == np.float32 and np.isfinite(x).all()
      assert ts.shape == (x.shape[0],)
      assert (np.diff(ts) > 0).all() and ts[0] > 0 and ts[-1] < demo_data.DURATION_S
      lengths[m].add(x.shape[0])
    t_image = clip.features["image"].shape[0]
    assert clip.step_class.shape == (t_image,) and clip.valid.shape == (t_image,)
    assert clip.va.shape == (t_image, 2)
  for m, (lo, hi) in demo_data.STEP_RANGE.items():
    assert lengths[m] == set(range(lo, hi + 1))   # every length occurs


def test_records_fit_the_demo_config_for_both_tasks(generated):
  clips, _ = generated
  for task in ("classification", "regression"):
    config = ml_collections.ConfigDict(dict(task=task, data=dict(
        modalities=MODALITIES, max_steps=dict(video=16, image=32, text=8),
        dims=dict(demo_data.DIMS), num_classes=2)))
    spec = examples.ExampleSpec.from_config(config)
    for clip in clips[:50]:
      decoded = record_format.decode(record_format.encode(clip, "float16"))
      example = examples.to_example(decoded, spec)
      assert example["step_valid"].sum() == clip.valid.sum()


def test_label_balance(generated):
  clips, _ = generated
  labels = np.array([c.label for c in clips])
  assert 0.45 < labels.mean() < 0.55


def test_labels_follow_the_documented_rules(generated):
  clips, truths = generated
  for clip, truth in zip(clips, truths):
    assert clip.label == int(sum(truth.bits.values()) >= 2)
    for m in MODALITIES:
      a = next(e for e in truth.events[m] if e.kind == "A")
      b = next(e for e in truth.events[m] if e.kind == "B")
      assert truth.bits[m] == int(a.start < b.start)
      assert a.start + a.length <= b.start or b.start + b.length <= a.start   # disjoint
    # Frame labels: 1 from the image step containing the second-earliest decision time.
    t_image = len(clip.step_class)
    if clip.label == 0:
      assert not clip.step_class.any()
    else:
      decided = sorted(max(e.onset_s for e in truth.events[m] if e.kind in "AB")
                       for m in MODALITIES if truth.bits[m])
      step_s = demo_data.DURATION_S / t_image
      first = np.argmax(clip.step_class)
      assert clip.step_class[first:].all()
      assert first * step_s <= decided[1] + 1e-5 < (first + 1) * step_s + 1e-5
    # Unannotated steps carry Aff-Wild2's -5, annotated ones lie in [-1, 1].
    assert (clip.va[~clip.valid] == demo_data.UNANNOTATED_VALUE).all()
    assert (np.abs(clip.va[clip.valid]) <= 1).all()
    # Final valence has the sign of the order evidence of video and text.
    order = sum(2 * truth.bits[m] - 1 for m in demo_data.VALENCE_MODALITIES)
    last_valence = clip.va[-1, 0] if clip.valid[-1] else None
    if last_valence is not None and order != 0:
      assert np.sign(last_valence) == np.sign(order)
  valid_frac = np.mean(np.concatenate([c.valid for c in clips]))
  assert 0.85 < valid_frac < 0.98
  va = np.concatenate([c.va[c.valid] for c in clips])
  assert (va.std(axis=0) > 0.3).all()        # both targets vary: CCC is meaningful


def test_all_modalities_needed_and_order_readable(generated):
  clips, _ = generated
  directions = demo_data.event_directions()
  labels = np.array([c.label for c in clips])
  bits = [_oracle_bits(c, directions) for c in clips]
  fused = np.array([int(sum(b.values()) >= 2) for b in bits])
  assert (fused == labels).mean() > 0.9
  for m in MODALITIES:
    alone = np.array([b[m] for b in bits])
    assert 0.65 < (alone == labels).mean() < 0.85, m


def test_time_mean_features_do_not_predict_label(generated):
  clips, _ = generated
  labels = np.array([c.label for c in clips])
  pooled = np.array([np.concatenate([c.features[m].mean(axis=0) for m in MODALITIES])
                     for c in clips])
  n_train = 800
  for probe in (LogisticRegression(max_iter=2000), NearestCentroid()):
    probe.fit(pooled[:n_train], labels[:n_train])
    assert probe.score(pooled[n_train:], labels[n_train:]) < 0.65, type(probe).__name__


def _read_split(data_dir, split):
  clips = []
  for path in sorted(glob.glob(os.path.join(data_dir, f"{split}-*.tfrecord"))):
    clips += [record_format.decode(r) for r in tfrecord.TFRecordReader(path)]
  return sorted(clips, key=lambda c: c.clip_id)


def _shard_bytes(data_dir):
  return {os.path.basename(p): open(p, "rb").read()
          for p in sorted(glob.glob(os.path.join(data_dir, "*.tfrecord")))}


def test_ensure_demo_dataset_writes_once_and_reproducibly(tmp_path):
  kwargs = dict(num_train=24, num_eval=10, num_shards=2, seed=1)
  data_dir = str(tmp_path / "demo")
  assert demo_data.ensure_demo_dataset(data_dir, **kwargs) == data_dir
  train = _read_split(data_dir, "train")
  assert len(train) == 24 and len(_read_split(data_dir, "eval")) == 10
  want = list(demo_data.generate_clips("train", 24, seed=1))
  for got, ref in zip(train, want):
    assert got.clip_id == ref.clip_id and got.label == ref.label
    for m in MODALITIES:
      np.testing.assert_array_equal(got.features[m], ref.features[m].astype(np.float16))
    np.testing.assert_array_equal(got.step_class, ref.step_class)
    np.testing.assert_array_equal(got.valid, ref.valid)
  with open(os.path.join(data_dir, "dataset_info.json")) as f:
    info = json.load(f)
  assert info["name"] == demo_data.DATASET_NAME and info["dims"] == demo_data.DIMS
  assert info["splits"] == {"train": 24, "eval": 10}

  mtimes = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(data_dir, "*"))}
  demo_data.ensure_demo_dataset(data_dir, **kwargs)                  # up to date: untouched
  assert mtimes == {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(data_dir, "*"))}

  other = str(tmp_path / "again")
  demo_data.ensure_demo_dataset(other, **kwargs)
  assert _shard_bytes(other) == _shard_bytes(data_dir)               # same seed, same bytes

  demo_data.ensure_demo_dataset(data_dir, **dict(kwargs, num_train=30))   # stamp changed
  assert len(_read_split(data_dir, "train")) == 30
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]     # no temp leftovers


def test_ensure_demo_dataset_concurrent_callers(tmp_path):
  data_dir = str(tmp_path / "demo")
  errors = []

  def call():
    try:
      demo_data.ensure_demo_dataset(data_dir, num_train=16, num_eval=8, num_shards=2)
    except Exception as e:  # collected for the assertion below
      errors.append(e)

  threads = [threading.Thread(target=call) for _ in range(3)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert len(_read_split(data_dir, "train")) == 16
  assert sorted(os.listdir(tmp_path)) == ["demo"]


def test_ensure_demo_dataset_refuses_foreign_folder(tmp_path):
  (tmp_path / "notes.txt").write_text("my data")
  with pytest.raises(FileExistsError, match="no demo dataset"):
    demo_data.ensure_demo_dataset(str(tmp_path), num_train=4, num_eval=4, num_shards=1)
  assert os.listdir(tmp_path) == ["notes.txt"]
