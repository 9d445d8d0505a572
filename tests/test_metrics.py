"""Whole-set metrics against sklearn and a two-pass numpy CCC."""

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from multimodal_gru import metrics


def _random_classification(rng, n, k, ties=False):
  if ties:   # rows drawn from a small pool: many exactly tied scores
    logits = rng.normal(size=(n // 10, k))[rng.integers(0, n // 10, size=n)]
    labels = np.where(rng.random(n) < 0.5, logits.argmax(-1), rng.integers(0, k, size=n))
    return logits, labels
  labels = rng.integers(0, k, size=n)
  return rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels], labels


def _sklearn_reference(logits, labels, k):
  probs = metrics.softmax(logits)
  pred = probs.argmax(-1)
  if k == 2:
    auc = skm.roc_auc_score(labels, probs[:, 1])
    ap = skm.average_precision_score(labels, probs[:, 1])
  else:
    auc = skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    ap = skm.average_precision_score(label_binarize(labels, classes=range(k)), probs,
                                     average="macro")
  return dict(accuracy=skm.accuracy_score(labels, pred),
              macro_f1=skm.f1_score(labels, pred, average="macro"),
              roc_auc=auc, average_precision=ap)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("ties", [False, True])
def test_classification_matches_sklearn(k, ties):
  rng = np.random.default_rng(k * 10 + ties)
  logits, labels = _random_classification(rng, 600, k, ties)
  if ties:
    assert len(np.unique(metrics.softmax(logits)[:, 1])) <= 60
  acc = metrics.ClassificationMetrics(k)
  acc.update(logits, labels, np.ones(600, bool))
  got = acc.compute()
  want = _sklearn_reference(logits, labels, k)
  for name, value in want.items():
    np.testing.assert_allclose(got[name], value, rtol=1e-12, atol=1e-12, err_msg=name)


def test_batched_masked_accumulation_equals_one_shot():
  rng = np.random.default_rng(1)
  k = 3
  logits, labels = _random_classification(rng, 500, k, ties=True)
  mask = rng.random(500) < 0.7
  batched = metrics.ClassificationMetrics(k)
  garbage_labels = np.where(mask, labels, 99)    # masked rows may hold anything
  for start in range(0, 500, 64):
    sl = slice(start, start + 64)
    batched.update(logits[sl], garbage_labels[sl], mask[sl])
  one_shot = metrics.ClassificationMetrics(k)
  one_shot.update(logits[mask], labels[mask], np.ones(mask.sum(), bool))
  assert batched.count == mask.sum()
  assert batched.compute() == pytest.approx(one_shot.compute(), rel=1e-12)
  want = _sklearn_reference(logits[mask], labels[mask], k)
  assert batched.compute() == pytest.approx(want, rel=1e-12)


def test_step_metrics_flatten_time_with_prefix():
  rng = np.random.default_rng(2)
  b, t = 8, 12
  logits, labels = _random_classification(rng, b * t, 2)
  mask = np.arange(t)[None, :] < rng.integers(3, t + 1, size=(b, 1))
  acc = metrics.ClassificationMetrics(2, prefix="step_")
  acc.update(logits.reshape(b, t, 2), labels.reshape(b, t), mask)
  got = acc.compute()
  flat = mask.reshape(-1)
  want = _sklearn_reference(logits[flat], labels[flat], 2)
  assert set(got) == {f"step_{n}" for n in want}
  for name, value in want.items():
    assert got[f"step_{name}"] == pytest.approx(value, rel=1e-12)


def test_single_class_gives_nan_ranking_metrics():
  acc = metrics.ClassificationMetrics(2)
  acc.update(np.random.default_rng(0).normal(size=(10, 2)), np.ones(10, int), np.ones(10, bool))
  out = acc.compute()
  assert np.isnan(out["roc_auc"]) and np.isnan(out["average_precision"])
  assert np.isfinite(out["accuracy"])


def test_multiclass_auc_skips_absent_class():
  rng = np.random.default_rng(3)
  logits, labels = _random_classification(rng, 300, 3)
  keep = labels != 2                                 # class 2 never occurs
  acc = metrics.ClassificationMetrics(3)
  acc.update(logits[keep], labels[keep], np.ones(keep.sum(), bool))
  probs = metrics.softmax(logits[keep])
  want = np.mean([skm.roc_auc_score(labels[keep] == c, probs[:, c]) for c in (0, 1)])
  assert acc.compute()["roc_auc"] == pytest.approx(want, rel=1e-12)


def test_empty_classification_is_nan():
  out = metrics.ClassificationMetrics(2).compute()
  assert all(np.isnan(v) for v in out.values())


def test_out_of_range_label_raises():
  acc = metrics.ClassificationMetrics(2)
  with pytest.raises(ValueError, match="labels outside"):
    acc.update(np.zeros((2, 2)), np.array([0, 2]), np.ones(2, bool))


def _ccc_two_pass(x, y):
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  mx, my = x.mean(), y.mean()
  cov = ((x - mx) * (y - my)).mean()
  return 2 * cov / (((x - mx) ** 2).mean() + ((y - my) ** 2).mean() + (mx - my) ** 2)


def test_regression_batched_equals_whole_set_two_pass():
  rng = np.random.default_rng(4)
  b, t = 40, 32
  target = np.tanh(rng.normal(size=(b, t, 2)))
  pred = 0.6 * target + 0.3 * rng.normal(size=(b, t, 2)) + 0.1
  mask = rng.random((b, t)) < 0.8
  pred_garbage = np.where(mask[..., None], pred, 1e6)   # masked steps never count
  acc = metrics.RegressionMetrics()
  for start in range(0, b, 7):
    acc.update(pred_garbage[start:start + 7], target[start:start + 7], mask[start:start + 7])
  got = acc.compute()
  p, y = pred[mask], target[mask]
  for i, name in enumerate(("valence", "arousal")):
    assert got[f"ccc_{name}"] == pytest.approx(_ccc_two_pass(p[:, i], y[:, i]), rel=1e-12)
    assert got[f"mse_{name}"] == pytest.approx(np.mean((p[:, i] - y[:, i]) ** 2), rel=1e-12)
  assert got["ccc_mean"] == pytest.approx((got["ccc_valence"] + got["ccc_arousal"]) / 2)
  assert acc.count == mask.sum()


def test_regression_is_accurate_with_large_offsets():
  # Values far from zero stress naive running sums; the merged moments must stay exact.
  rng = np.random.default_rng(5)
  target = 1e4 + rng.normal(size=(20000, 2))
  pred = target + 0.5 * rng.normal(size=(20000, 2))
  acc = metrics.RegressionMetrics()
  for chunk in np.array_split(np.arange(20000), 37):
    acc.update(pred[chunk], target[chunk], np.ones(chunk.size, bool))
  got = acc.compute()
  assert got["ccc_valence"] == pytest.approx(_ccc_two_pass(pred[:, 0], target[:, 0]), rel=1e-10)
  assert got["ccc_arousal"] == pytest.approx(_ccc_two_pass(pred[:, 1], target[:, 1]), rel=1e-10)


def test_whole_set_ccc_differs_from_mean_of_batch_cccs():
  # Each batch (think: one video) has its own level that the prediction follows,
  # with no within-batch agreement: per-batch CCCs are near 0, the whole-set CCC is high.
  rng = np.random.default_rng(6)
  acc = metrics.RegressionMetrics()
  batch_cccs, preds, targets = [], [], []
  for i in range(6):
    level = (i - 2.5) * 0.3
    target = level + 0.1 * rng.normal(size=(50, 2))
    pred = level + 0.1 * rng.normal(size=(50, 2))
    acc.update(pred, target, np.ones(50, bool))
    batch_cccs.append(_ccc_two_pass(pred[:, 0], target[:, 0]))
    preds.append(pred)
    targets.append(target)
  whole = _ccc_two_pass(np.concatenate(preds)[:, 0], np.concatenate(targets)[:, 0])
  got = acc.compute()["ccc_valence"]
  assert got == pytest.approx(whole, rel=1e-12)
  assert abs(np.mean(batch_cccs) - got) > 0.3


def test_regression_degenerate_cases():
  out = metrics.RegressionMetrics().compute()
  assert all(np.isnan(v) for v in out.values())
  acc = metrics.RegressionMetrics()
  acc.update(np.zeros((5, 2)), np.zeros((5, 2)), np.ones(5, bool))   # 0 / 0
  assert np.isnan(acc.compute()["ccc_valence"])
  assert acc.compute()["mse_valence"] == 0.0
  assert metrics.concordance_correlation(np.arange(5.0), np.arange(5.0)) == pytest.approx(1.0)
