"""Robustness evaluation: each corruption changes only what it names; metrics match a
dataset corrupted by hand; a finished run gets robust/* in results.json."""

import json

import jax
import numpy as np
import pytest

from conftest import tiny_config
from input_pipeline import pipeline
from input_pipeline import shards
from multimodal_gru import demo_data, evaluate, sharding, train
from multimodal_gru.evaluate import robustness
from multimodal_gru.models.model import build_model

MODALITIES = ("video", "image", "text")


@pytest.fixture(scope="module")
def setup(tiny_demo_dir):
  config = tiny_config(tiny_demo_dir)
  config.eval.robustness = True
  model = build_model(config)
  mesh = sharding.make_mesh(config.mesh)
  state, _ = train.create_train_state(config, model, mesh)
  eval_step = jax.jit(train.make_eval_step(config, model))
  to_global = lambda b: sharding.make_global_batch(b, mesh)
  batches = [{k: np.array(v) for k, v in b.items()} for b in pipeline.create_eval_batches(config)]
  return config, eval_step, state, to_global, batches


def _same(a, b, keys):
  for k in keys:
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_registry_names_follow_the_config(setup):
  config = setup[0]
  names = list(robustness.corruptions(config))
  assert names == ["missing_video", "missing_image", "missing_text", "missing_video+image",
                   "missing_video+text", "missing_image+text", "noise_0.5", "noise_1", "noise_2",
                   "drop_steps_0.25", "drop_steps_0.5", "shift_image_2", "shift_image_4"]
  config = config.copy_and_resolve_references()
  config.eval.corruptions = ("typo",)
  with pytest.raises(ValueError, match="unknown corruption family 'typo'"):
    robustness.corruptions(config)


def test_each_corruption_changes_only_what_it_names(setup):
  config, *_, batches = setup
  batch = batches[0]
  before = {k: v.copy() for k, v in batch.items()}
  fns = robustness.corruptions(config)
  for name, fn in fns.items():
    out = fn(batch)
    assert set(out) == set(batch)
    _same(batch, before, batch)                           # the input is never modified
    if name.startswith("missing_"):
      gone = name[len("missing_"):].split("+")
      for m in gone:
        assert not out[m].any() and not out[f"{m}_mask"].any()
      _same(out, batch, [k for k in batch if k.split("_mask")[0] not in gone])
    elif name.startswith("noise_"):
      level = float(name[len("noise_"):])
      _same(out, batch, [k for k in batch if k not in MODALITIES])
      for m in MODALITIES:
        real = batch[f"{m}_mask"]
        assert not out[m][~real].any()                    # padding stays zero
        delta = (out[m] - batch[m])[real]
        assert (delta != 0).mean() > 0.99
        ratio = delta.std() / batch[m][real].std()
        assert ratio == pytest.approx(level, rel=0.15), (name, m)
    elif name.startswith("drop_steps_"):
      fraction = float(name[len("drop_steps_"):])
      _same(out, batch, ["label", "example_mask"])
      for i in range(batch["label"].shape[0]):
        for m in MODALITIES:
          n = int(batch[f"{m}_mask"][i].sum())
          kept = int(out[f"{m}_mask"][i].sum())
          assert np.array_equal(out[f"{m}_mask"][i], np.arange(len(out[f"{m}_mask"][i])) < kept)
          assert kept == (n - min(round(fraction * n), n - 1) if n else 0)
          assert not out[m][i][kept:].any()
          # The kept rows are original rows, in their order (a subsequence).
          rows = [r.tobytes() for r in batch[m][i][:n]]
          src = [rows.index(r.tobytes()) for r in out[m][i][:kept]]
          assert src == sorted(src) and len(set(src)) == kept
          if m == "image":                                # step labels follow their frames
            assert np.array_equal(out["step_label"][i][:kept], batch["step_label"][i][src])
            assert np.array_equal(out["step_valid"][i][:kept], batch["step_valid"][i][src])
            assert not out["step_valid"][i][kept:].any()
    elif name.startswith("shift_image_"):
      k = int(name[len("shift_image_"):])
      _same(out, batch, [key for key in batch if key != "image"])
      for i in range(batch["label"].shape[0]):
        n = int(batch["image_mask"][i].sum())
        expected = batch["image"][i][np.maximum(np.arange(n) - k, 0)]
        assert np.array_equal(out["image"][i][:n], expected)
        assert not out["image"][i][n:].any()
    else:
      raise AssertionError(f"untested corruption {name}")
    again = fn(batch)
    _same(again, out, out)                                # deterministic


def test_randomness_is_per_example_not_per_batch(setup):
  """A clip is corrupted the same way whatever its batch and its position in it."""
  config, *_, batches = setup
  batch = batches[0]
  for name in ("noise_1", "drop_steps_0.5"):
    fn = robustness.corruptions(config)[name]
    whole = fn(batch)
    reversed_rows = fn({k: v[::-1] for k, v in batch.items()})
    single = fn({k: v[2:3] for k, v in batch.items()})
    for k in batch:
      assert np.array_equal(whole[k][::-1], reversed_rows[k]), (name, k)
      assert np.array_equal(whole[k][2:3], single[k]), (name, k)


def test_metrics_equal_a_dataset_corrupted_by_hand(setup, tmp_path):
  config, eval_step, state, to_global, batches = setup
  robust = robustness.evaluate_all(config, eval_step, state,
                                   lambda: pipeline.create_eval_batches(config), to_global)
  names = robustness.corruptions(config)
  assert set(robust) == {f"robust/{n}/{k}" for n in names
                         for k in evaluate.evaluate(config, eval_step, state, batches, to_global)}
  # Image frames shifted by 2 steps in the records themselves, scored as a clean eval set.
  clips = list(demo_data.generate_clips("eval", 40, 0))      # the tiny_demo_dir eval split
  for clip in clips:
    x = clip.features["image"]
    clip.features["image"] = x[np.maximum(np.arange(len(x)) - 2, 0)]
  shards.write_split(str(tmp_path), "eval", iter(clips), 2)
  shifted = config.copy_and_resolve_references()
  shifted.data.dir = str(tmp_path)
  by_hand = evaluate.evaluate(shifted, eval_step, state, pipeline.create_eval_batches(shifted),
                              to_global)
  for k, v in by_hand.items():
    assert robust[f"robust/shift_image_2/{k}"] == pytest.approx(v, abs=1e-6), k
  # Video and text removed by hand from the clean batches.
  hand = []
  for b in batches:
    b = dict(b)
    for m in ("video", "text"):
      b[m], b[f"{m}_mask"] = np.zeros_like(b[m]), np.zeros_like(b[f"{m}_mask"])
    hand.append(b)
  by_hand = evaluate.evaluate(config, eval_step, state, hand, to_global)
  for k, v in by_hand.items():
    assert robust[f"robust/missing_video+text/{k}"] == pytest.approx(v, abs=1e-6), k
  # Batch size does not matter (per-example randomness): noise and drops alike.
  rebatched = config.copy_and_resolve_references()
  rebatched.train.eval_batch_size = 8
  again = robustness.evaluate_all(rebatched, eval_step, state,
                                  lambda: pipeline.create_eval_batches(rebatched), to_global)
  for k in ("robust/noise_1/clip_accuracy", "robust/drop_steps_0.5/step_accuracy",
            "robust/noise_2/clip_roc_auc"):
    assert again[k] == pytest.approx(robust[k], abs=1e-6), k
  off = config.copy_and_resolve_references()
  off.eval.robustness = False
  assert robustness.evaluate_all(off, eval_step, state, lambda: batches, to_global) == {}


def test_finished_run_gets_robust_metrics(tiny_demo_dir, tmp_path):
  config = tiny_config(tiny_demo_dir)
  config.eval.corruptions = ("missing", "shift_image")
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  assert not any(k.startswith("robust/") for k in results["metrics"])
  out = robustness.evaluate_workdir(workdir)
  assert out["step"] == results["step"]
  for k, v in results["metrics"].items():                 # the same checkpoint, scored again
    assert out["metrics"][k] == pytest.approx(v, abs=1e-6), k
  with open(tmp_path / "run" / "results.json") as f:
    updated = json.load(f)
  robust = {k: v for k, v in updated["metrics"].items() if k.startswith("robust/")}
  assert robust == out["robust"] and "robust/shift_image_4/clip_accuracy" in robust
  assert "robust/missing_video+image/clip_accuracy" not in robust
  with open(tmp_path / "run" / "eval_eval" / "robustness.json") as f:
    assert json.load(f)["robust"] == robust

  # The trainer's own final evaluation (config.eval.robustness, harmless to turn on when resuming).
  config.eval.robustness = True
  rerun = train.train_and_evaluate(config, workdir)   # restores the final step, evaluates it
  in_training = {k: v for k, v in rerun["metrics"].items() if k.startswith("robust/")}
  assert in_training.keys() == robust.keys()
  for k, v in robust.items():
    assert in_training[k] == pytest.approx(v, abs=1e-6), k
