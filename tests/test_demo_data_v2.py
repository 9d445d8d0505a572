"""Demo benchmark v2: determinism, structure, and the properties its docstring states."""

import ml_collections
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from input_pipeline import examples
from input_pipeline import record_format
from input_pipeline import shards
from multimodal_gru import demo_data_v2 as v2

MODALITIES = record_format.MODALITIES
NUM_CLIPS = 1500


@pytest.fixture(scope="module")
def directions():
  return v2.event_directions()


@pytest.fixture(scope="module")
def train_clips(directions):
  return [v2.generate_clip_and_truth("train", i, 0, directions) for i in range(NUM_CLIPS)]


@pytest.fixture(scope="module")
def eval_clips(directions):
  return [v2.generate_clip_and_truth("eval", i, 0, directions) for i in range(1200)]


def _probe(clip, d):
  """The three bits read from the features (no model): peaks and scene-tag matching."""
  bits = {f"order_{m}": int(np.argmax(clip.features[m] @ d[m].a) <
                            np.argmax(clip.features[m] @ d[m].b)) for m in v2.ORDER_MODALITIES}
  tags = {}
  for m in v2.MARKER_MODALITIES:
    x = clip.features[m]
    steps = np.argsort(x @ d[m].marker)[-v2.NUM_MARKERS:]
    t = x[steps] @ d[m].scene.T
    tags[m] = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
  bits["aligned"] = int((tags["image"] @ tags["video"].T).max(axis=1).mean() > 0.5)
  return bits


def _time_means(clips):
  return np.array([np.concatenate([c.features[m].mean(axis=0) for m in MODALITIES])
                   for c, _ in clips])


def test_deterministic_and_split_dependent():
  first = [record_format.encode(c) for c in v2.generate_clips("train", 8, seed=3)]
  assert first == [record_format.encode(c) for c in v2.generate_clips("train", 8, seed=3)]
  assert record_format.encode(v2.generate_clip_and_truth("train", 5, 3)[0]) == first[5]
  assert not set(first) & {record_format.encode(c) for c in v2.generate_clips("eval", 8, 3)}
  assert not set(first) & {record_format.encode(c) for c in v2.generate_clips("train", 8, 4)}


def test_structure_and_labels(train_clips):
  config = ml_collections.ConfigDict(dict(task="classification", data=dict(
      modalities=MODALITIES, max_steps={m: hi for m, (_, hi) in v2.STEP_RANGE.items()},
      dims=dict(v2.DIMS), num_classes=2)))
  spec = examples.ExampleSpec.from_config(config)
  for clip, truth in train_clips[:300]:
    for m in MODALITIES:
      lo, hi = v2.STEP_RANGE[m]
      assert lo <= clip.features[m].shape[0] <= hi and clip.features[m].shape[1] == v2.DIMS[m]
    assert clip.label == int(sum(truth.bits.values()) >= 2)
    # Markers: one per scene of 3 distinct scenes; aligned iff video and image share them.
    for m in v2.MARKER_MODALITIES:
      scenes = v2.scene_of_steps(truth.cuts, truth.steps[m])
      assert tuple(scenes[list(truth.marker_steps[m])]) == truth.marker_scenes[m]
      assert len(set(truth.marker_scenes[m])) == v2.NUM_MARKERS
      assert set(scenes) == set(range(v2.NUM_SCENES))     # every scene has a step
    same = truth.marker_scenes["video"] == truth.marker_scenes["image"]
    assert same == bool(truth.bits["aligned"])
    if not same:
      assert not set(truth.marker_scenes["video"]) & set(truth.marker_scenes["image"])
    for m in v2.ORDER_MODALITIES:
      (sa, la), (sb, lb) = truth.order_spans[m]["A"], truth.order_spans[m]["B"]
      assert truth.bits[f"order_{m}"] == int(sa < sb)
      assert sa + la <= sb or sb + lb <= sa
    assert truth.broken is None                            # the train split is clean
    assert clip.step_class.any() == bool(clip.label)
    examples.to_example(record_format.decode(record_format.encode(clip)), spec)
  labels = np.array([c.label for c, _ in train_clips])
  assert 0.45 < labels.mean() < 0.55


def test_each_stream_alone_is_independent_of_alignment(train_clips):
  """Marker scenes of one stream: the same (uniform) distribution for aligned and not."""
  for m in v2.MARKER_MODALITIES:
    for aligned in (0, 1):
      counts = np.zeros(v2.NUM_SCENES)
      for _, t in train_clips:
        if t.bits["aligned"] == aligned:
          counts[list(t.marker_scenes[m])] += 1
      freq = counts / counts.sum()
      assert np.abs(freq - 1 / v2.NUM_SCENES).max() < 0.03, (m, aligned, freq)


def test_concatenated_time_means_stay_at_chance(train_clips):
  """The construction's bound for pooled features: no bit, and not the label, beyond chance."""
  x = _time_means(train_clips)
  n = 1000
  targets = {"label": np.array([c.label for c, _ in train_clips])}
  targets.update({b: np.array([t.bits[b] for _, t in train_clips]) for b in v2.BITS})
  for name, y in targets.items():
    probe = LogisticRegression(max_iter=3000).fit(x[:n], y[:n])
    accuracy = probe.score(x[n:], y[n:])
    assert accuracy < 0.58, (name, accuracy)          # 500 held-out clips: chance +- ~2.2%


def test_the_bits_are_readable_from_the_features(train_clips, directions):
  probes = [(_probe(c, directions), t.bits, c.label) for c, t in train_clips[:800]]
  for b in v2.ORDER_MODALITIES:
    assert np.mean([p[f"order_{b}"] == t[f"order_{b}"] for p, t, _ in probes]) > 0.97
  assert np.mean([p["aligned"] == t["aligned"] for p, t, _ in probes]) > 0.8
  fused = np.mean([int(sum(p.values()) >= 2) == y for p, _, y in probes])
  assert fused > 0.9
  # One bit alone: ~75% (majority of 3), two bits: ~75%.
  for b in v2.BITS:
    alone = np.mean([p[b] == y for p, _, y in probes])
    assert 0.65 < alone < 0.85, (b, alone)


def test_accuracy_bounds_match_the_docstring_and_the_data(eval_clips):
  assert [v2.bayes_accuracy(k) for k in range(4)] == [0.5, 0.75, 0.75, 1.0]
  bounds = v2.accuracy_bounds()
  expected = {"xattn_bidir": (1.0, 0.875), "xattn_bidir,use_gru=off": (0.75, 0.667),
              "concat": (0.75, 0.75), "video_only": (0.75, 0.708), "text_only": (0.75, 0.708),
              "image_only": (0.5, 0.5)}
  for variant, (clean, on_eval) in expected.items():
    assert bounds[variant]["clean"] == pytest.approx(clean, abs=1e-3)
    assert bounds[variant]["eval"] == pytest.approx(on_eval, abs=1e-3)
    assert f"{clean:.3f}   {on_eval:.3f}" in v2.__doc__
  # The Bayes rule on the generated eval split (truth bits, minus those a broken stream hides).
  rng = np.random.default_rng(0)
  for variant, reads in v2.READS.items():
    correct = []
    for clip, t in eval_clips:
      known = [t.bits[b] for b in reads if t.broken not in v2.NEEDS[b]]
      tie = not known or len(known) == 2 and known[0] != known[1]
      guess = int(rng.integers(2)) if tie else int(np.mean(known) > 0.5)
      correct.append(guess == clip.label)
    assert np.mean(correct) == pytest.approx(bounds[variant]["eval"], abs=0.04), variant


def test_broken_streams_carry_no_signal(eval_clips, directions):
  broken = [(c, t) for c, t in eval_clips if t.broken]
  assert 0.45 < len(broken) / len(eval_clips) < 0.55
  kinds = {(t.broken, t.broken_kind) for _, t in broken}
  assert kinds == {(m, k) for m in MODALITIES for k in v2.BROKEN_KINDS}
  for clip, t in broken:
    x = clip.features[t.broken]
    if t.broken_kind == "missing":
      assert not x.any()
    else:   # bias + N(0, 2^2): no step stands out along any planted direction
      d = directions[t.broken]
      assert abs(x.mean() - d.bias.mean()) < 0.6
      assert 1.6 < x.std() < 2.4
  # The order bit of a broken stream reads at chance; of an intact one, as in training clips.
  for m in v2.ORDER_MODALITIES:
    for is_broken in (True, False):
      hits = [_probe(c, directions)[f"order_{m}"] == t.bits[f"order_{m}"]
              for c, t in eval_clips if (t.broken == m) == is_broken]
      if is_broken:
        assert 0.38 < np.mean(hits) < 0.62, (m, np.mean(hits))
      else:
        assert np.mean(hits) > 0.97


def test_ensure_writes_once_and_reads_back(tmp_path):
  data_dir = str(tmp_path / "demo_v2")
  v2.ensure_demo_dataset(data_dir, num_train=16, num_eval=8)
  files = sorted(p.name for p in (tmp_path / "demo_v2").iterdir())
  mtime = (tmp_path / "demo_v2" / shards.DATASET_INFO).stat().st_mtime_ns
  v2.ensure_demo_dataset(data_dir, num_train=16, num_eval=8)          # stamp matches: no rewrite
  assert (tmp_path / "demo_v2" / shards.DATASET_INFO).stat().st_mtime_ns == mtime
  assert any(f.startswith("eval-") for f in files) and any(f.startswith("train-") for f in files)
  v2.ensure_demo_dataset(data_dir, num_train=20, num_eval=8)          # new stamp: regenerated
  assert (tmp_path / "demo_v2" / shards.DATASET_INFO).stat().st_mtime_ns != mtime


def test_config_and_grid(tmp_path, monkeypatch):
  """configs/demo_v2.py: the trainer's generator is v2, and 8 variants x 3 seeds all build."""
  from multimodal_gru import sweep
  monkeypatch.setenv("MGRU_DEMO_V2_DATA", str(tmp_path / "data"))
  runs = sweep.expand("configs/demo_v2.py", str(tmp_path / "root"))
  assert not (tmp_path / "data").exists()        # loading a config writes nothing
  assert {(r.config.data.generate_demo, r.config.data.demo_generator) for r in runs} == {
      (True, "v2")}
  assert runs[0].config.data.dir == str(tmp_path / "data")
  assert len(runs) == 24 and {r.overrides["seed"] for r in runs} == {0, 1, 2}
  variants = {tuple(sorted((k, v) for k, v in r.overrides.items() if k != "seed")) for r in runs}
  assert len(variants) == 8
  assert {r.config.model.fusion for r in runs} == {"video_only", "image_only", "text_only",
                                                   "concat", "xattn_bidir"}
  ablations = {k for r in runs for k in r.overrides} - {"seed", "model.fusion"}
  assert ablations == {"augment.enabled", "model.use_gru", "autoencoder.enabled"}
  assert all(r.config.eval.robustness for r in runs)
  assert [r.overrides["seed"] for r in runs[:8]] == [0] * 8      # seed 0 of every variant first
