"""The report's paired comparisons over seeds and its robustness table."""

import json

import numpy as np
import pytest
from scipy import stats

from multimodal_gru import report, report_stats

REFERENCE = {"fusion": "xattn_bidir", "augment": True, "use_gru": True, "ae": True}


def _write_run(root, name, seed, settings, clean, robust):
  config = {"seed": seed, "model": {"fusion": settings["fusion"], "use_gru": settings["use_gru"]},
            "augment": {"enabled": settings["augment"]},
            "autoencoder": {"enabled": settings["ae"]}}
  metrics = {"clip_accuracy": clean, "num_examples": 100.0}
  metrics.update({f"robust/{c}/clip_accuracy": v for c, v in robust.items()})
  run = root / f"{name},seed={seed}"
  run.mkdir(parents=True)
  (run / "results.json").write_text(json.dumps(dict(
      step=10, task="classification", primary_metric="clip_accuracy", metrics=metrics,
      config=config, num_parameters=1)))


@pytest.fixture
def root(tmp_path):
  values = {   # name: (settings change, clean accuracy per seed)
      "xattn": ({}, [0.80, 0.84, 0.82]),
      "concat": ({"fusion": "concat"}, [0.70, 0.75, 0.71]),
      "video_only": ({"fusion": "video_only"}, [0.60, 0.62, 0.61]),
      "text_only": ({"fusion": "text_only"}, [0.65, 0.66, 0.64]),
      "noaug": ({"augment": False}, [0.81, 0.82, 0.83]),
  }
  for name, (change, accs) in values.items():
    for seed, acc in enumerate(accs):
      _write_run(tmp_path, name, seed, {**REFERENCE, **change}, acc,
                 {"missing_video": acc - 0.2, "noise_1": acc - 0.1})
  return tmp_path


def test_paired_interval_and_test(root):
  variants = report.group_variants(report.load_runs(str(root)))
  pairs = {claim: (a, b) for claim, a, b in report_stats.comparison_pairs(variants)}
  assert set(pairs) == {"fused vs best unimodal", "xattn_bidir vs concat",
                        "augmentation on vs off"}    # GRU and AE are not varied by this grid
  a, candidates = pairs["fused vs best unimodal"]
  assert a.settings["model.fusion"] == "xattn_bidir"
  assert {v.settings["model.fusion"] for v in candidates} == {"video_only", "text_only"}
  concat = pairs["xattn_bidir vs concat"][1][0]
  r = report_stats.paired(a.runs, concat.runs, "clip_accuracy")
  d = np.array([0.80, 0.84, 0.82]) - np.array([0.70, 0.75, 0.71])
  half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
  assert (r.n, r.diff) == (3, pytest.approx(d.mean()))
  assert (r.low, r.high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
  assert r.p == pytest.approx(stats.ttest_rel([0.80, 0.84, 0.82], [0.70, 0.75, 0.71]).pvalue)
  # The mean over corruptions, per run.
  assert report_stats.run_value(a.runs[0], "robust_mean/clip_accuracy") == pytest.approx(0.65)


def test_report_has_comparisons_and_robustness_tables(root):
  md = report.build_report(str(root)).markdown
  rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines()
          if line.startswith("| ") and " vs " in line and "`clip_accuracy`" in line}
  assert "A better" in rows["fused vs best unimodal"]
  assert "`fusion=text_only" in rows["fused vs best unimodal"]          # the best unimodal
  assert "A better" in rows["xattn_bidir vs concat"]
  assert "within noise" in rows["augmentation on vs off"]
  assert "robust_mean/clip_accuracy" in md
  header = next(line for line in md.splitlines() if line.startswith("| variant | seeds | clean"))
  assert header.split(" | ")[3:5] == ["missing_video", "noise_1"]
  xattn = next(line for line in md.splitlines()
               if line.startswith("| `fusion=xattn_bidir,augment=on") and "0.820 ± 0.020" in line)
  assert "0.620 ± 0.020" in xattn and "0.720 ± 0.020" in xattn
  # robust/* metrics stay out of the main table.
  main = next(line for line in md.splitlines() if line.startswith("| variant | seeds | clip_acc"))
  assert "robust" not in main
