"""Evaluation over the whole evaluation set (metrics are never batch averages).

Window level (this module): `evaluate` runs the eval step over every eval
batch; metrics over clips and image steps. Video level (the challenges'
protocol, every frame of every video): `video_level_metrics` (video.py) maps
step outputs onto frames (frames.py) and scores them (protocol.py); the command
`python -m multimodal_gru.evaluate` also writes submission files
(submission.py, see __main__.py).
"""

from typing import Callable, Iterable

import jax
import numpy as np

from multimodal_gru import metrics as metrics_lib
from multimodal_gru.evaluate.video import predict_frames, video_level_metrics  # noqa: F401


def eval_outputs(config, outputs, batch) -> dict:
  """What the host needs from one eval step: predictions, targets and masks (device arrays)."""
  keep = {"example_mask": batch["example_mask"], "step_valid": batch["step_valid"]}
  if config.task == "classification":
    keep.update(logits=outputs["logits"], step_logits=outputs["step_logits"],
                label=batch["label"], step_label=batch["step_label"])
  else:
    keep.update(va=outputs["va"], step_va=outputs["step_va"], target_va=batch["va"])
  return keep


class Evaluator:
  """Accumulates eval-step results on the host; `compute()` gives whole-set metrics."""

  def __init__(self, config):
    self.task = config.task
    if self.task == "classification":
      self.clip = metrics_lib.ClassificationMetrics(config.data.num_classes)
      self.step = metrics_lib.ClassificationMetrics(config.data.num_classes)
    else:
      self.clip = metrics_lib.RegressionMetrics()
      self.step = metrics_lib.RegressionMetrics()
    self.count = 0

  def update(self, r: dict) -> None:
    """r: eval_outputs() fetched to numpy (global arrays, every example once)."""
    examples = r["example_mask"].astype(bool)
    steps = r["step_valid"].astype(bool) & examples[:, None]
    self.count += int(examples.sum())
    if self.task == "classification":
      self.clip.update(r["logits"], r["label"], examples)
      k = r["step_logits"].shape[-1]
      self.step.update(r["step_logits"].reshape(-1, k), r["step_label"].reshape(-1), steps.reshape(-1))
    else:
      weights = steps[..., None].astype(np.float64)
      clip_target = (r["target_va"] * weights).sum(1) / np.maximum(weights.sum(1), 1.0)
      self.clip.update(r["va"], clip_target, steps.any(axis=1))
      self.step.update(r["step_va"].reshape(-1, 2), r["target_va"].reshape(-1, 2), steps.reshape(-1))

  def compute(self) -> dict[str, float]:
    out = {"num_examples": float(self.count)}
    out.update({f"clip_{k}": v for k, v in self.clip.compute().items()})
    out.update({f"step_{k}": v for k, v in self.step.compute().items()})
    return out


def evaluate(config, eval_step: Callable, state, batches: Iterable[dict], to_global: Callable) -> dict:
  """Runs `eval_step` over every eval batch and returns whole-set metrics."""
  evaluator = Evaluator(config)
  for batch in batches:
    evaluator.update(jax.device_get(eval_step(state, to_global(batch))))
  return evaluator.compute()
