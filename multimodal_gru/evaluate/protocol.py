"""The challenges' official frame-level scores, plus per-video diagnostics.

Aff-Wild2 valence-arousal (ABAW): P = (CCC_valence + CCC_arousal) / 2, each
CCC over the frames of ALL videos of the split concatenated, frames whose label
is outside [-1, 1] (the -5 marker) left out; CCC = 2 cov(x, y) / (var x +
var y + (mean x - mean y)^2) with population moments.

DVD violence (ABAW): macro F1 over the classes, over all annotated frames of
all videos (label >= 0), prediction = argmax of the frame probabilities. The
macro mean runs over the classes present in the labels or the predictions
(scikit-learn's f1_score(average="macro")), i.e. both classes on any real split.

Per-video numbers (`video_per_video_*`: the mean over videos of each video's
score, videos where it is undefined left out) are for diagnosis only; they are
NOT the challenge score. Every scalar key starts with `video_`; `video_score`
is the challenge's number.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from multimodal_gru import metrics as metrics_lib

VA = ("valence", "arousal")


def _nanmean(values) -> float:
  values = np.asarray(list(values), np.float64)
  return float(np.nanmean(values)) if values.size and not np.isnan(values).all() else float("nan")


def affwild2_scores(predictions: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
                    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """(scalars, per-video) of [N, 2] valence/arousal predictions and -5-marked labels."""
  preds, targets, per_video = [], [], {}
  for video_id in sorted(labels):
    label = np.asarray(labels[video_id], np.float64)
    pred = np.asarray(predictions[video_id], np.float64)
    if pred.shape != label.shape:
      raise ValueError(f"video {video_id}: predictions {pred.shape} for labels {label.shape}")
    keep = np.all(np.abs(label) <= 1, axis=1)
    preds.append(pred[keep])
    targets.append(label[keep])
    ccc = [metrics_lib.concordance_correlation(pred[keep, i], label[keep, i]) for i in range(2)]
    per_video[video_id] = {"frames": int(len(label)), "annotated_frames": int(keep.sum()),
                           "ccc_valence": ccc[0], "ccc_arousal": ccc[1],
                           "ccc_mean": (ccc[0] + ccc[1]) / 2}
  pred, target = np.concatenate(preds), np.concatenate(targets)
  out: dict[str, float] = {}
  for i, name in enumerate(VA):
    out[f"video_ccc_{name}"] = metrics_lib.concordance_correlation(pred[:, i], target[:, i])
  out["video_ccc_mean"] = (out["video_ccc_valence"] + out["video_ccc_arousal"]) / 2
  for i, name in enumerate(VA):
    out[f"video_mse_{name}"] = (float(np.mean((pred[:, i] - target[:, i]) ** 2))
                                if len(pred) else float("nan"))
  for key in ("ccc_valence", "ccc_arousal", "ccc_mean"):
    out[f"video_per_video_{key}"] = _nanmean(v[key] for v in per_video.values())
  out.update(video_num_videos=float(len(per_video)), video_num_frames=float(len(pred)),
             video_score=out["video_ccc_mean"])
  return out, per_video


def f1_per_class(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """[K] F1 of each class; nan for a class in neither the labels nor the predictions."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(confusion, (labels, predictions), 1)
  tp = np.diag(confusion).astype(np.float64)
  denom = 2 * tp + (confusion.sum(0) - tp) + (confusion.sum(1) - tp)
  return np.divide(2 * tp, denom, out=np.full(num_classes, np.nan), where=denom > 0)


def dvd_scores(probabilities: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
               num_classes: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """(scalars, per-video) of [N, K] frame probabilities and [N] labels (-1 = unannotated)."""
  preds, targets, per_video = [], [], {}
  for video_id in sorted(labels):
    label = np.asarray(labels[video_id], np.int64)
    prob = np.asarray(probabilities[video_id])
    if prob.shape != (len(label), num_classes):
      raise ValueError(f"video {video_id}: probabilities {prob.shape} for {len(label)} frames, "
                       f"{num_classes} classes")
    keep = label >= 0
    pred = prob[keep].argmax(axis=1)
    preds.append(pred)
    targets.append(label[keep])
    per_video[video_id] = {
        "frames": int(len(label)), "annotated_frames": int(keep.sum()),
        "macro_f1": metrics_lib.macro_f1(pred, label[keep], num_classes),
        "accuracy": float((pred == label[keep]).mean()) if keep.any() else float("nan")}
  pred, target = np.concatenate(preds), np.concatenate(targets)
  out = {"video_macro_f1": metrics_lib.macro_f1(pred, target, num_classes)}
  for c, f1 in enumerate(f1_per_class(pred, target, num_classes)):
    out[f"video_f1_class{c}"] = float(f1)
  out["video_accuracy"] = float((pred == target).mean()) if len(target) else float("nan")
  out["video_per_video_macro_f1"] = _nanmean(v["macro_f1"] for v in per_video.values())
  out.update(video_num_videos=float(len(per_video)), video_num_frames=float(len(target)),
             video_score=out["video_macro_f1"])
  return out, per_video


def scores(task: str, values: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
           num_classes: int = 2) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """The protocol of `task`: regression = Aff-Wild2, classification = DVD."""
  if task == "regression":
    return affwild2_scores(values, labels)
  return dvd_scores(values, labels, num_classes)
