"""From a decoded `Clip` to one fixed-shape example of the batch contract.

Per example (the batch adds a leading B):
  {m}          float32 [T_m, D_m]  first T_m steps, zero-padded at the end
  {m}_mask     bool    [T_m]       True = real step
  label        int32   []          classification
  step_label   int32   [T_image]   classification (0 where not step_valid)
  va           float32 [T_image, 2] regression (0 where not step_valid)
  step_valid   bool    [T_image]   annotated AND real image step
  example_mask bool    []          True (False only in eval padding rows)

with T_m = config.data.max_steps[m] and D_m = config.data.dims[m]. Longer clips
keep their first T_m steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from input_pipeline import record_format

TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
  """What the config expects of every record."""
  task: str
  modalities: tuple[str, ...]
  max_steps: dict[str, int]
  dims: dict[str, int]
  num_classes: int

  @classmethod
  def from_config(cls, config) -> ExampleSpec:
    d = config.data
    if config.task not in TASKS:
      raise ValueError(f"config.task must be one of {TASKS}, got {config.task!r}")
    if not d.modalities:
      raise ValueError("config.data.modalities is empty")
    unknown = set(d.modalities) - set(record_format.MODALITIES)
    if unknown:
      raise ValueError(f"config.data.modalities: unknown {sorted(unknown)}; "
                       f"known: {record_format.MODALITIES}")
    names = tuple(d.modalities) + ("image",)
    return cls(task=config.task, modalities=tuple(d.modalities),
               max_steps={m: int(d.max_steps[m]) for m in names},
               dims={m: int(d.dims[m]) for m in d.modalities},
               num_classes=int(d.num_classes))

  @property
  def image_steps(self) -> int:
    return self.max_steps["image"]

  def empty_example(self) -> dict[str, np.ndarray]:
    """An all-zero example with example_mask False (eval padding rows)."""
    out: dict[str, Any] = {}
    for m in self.modalities:
      out[m] = np.zeros((self.max_steps[m], self.dims[m]), np.float32)
      out[f"{m}_mask"] = np.zeros((self.max_steps[m],), bool)
    t = self.image_steps
    if self.task == "classification":
      out["label"] = np.int32(0)
      out["step_label"] = np.zeros((t,), np.int32)
    else:
      out["va"] = np.zeros((t, 2), np.float32)
    out["step_valid"] = np.zeros((t,), bool)
    out["example_mask"] = np.bool_(False)
    return out


def _fit(x: np.ndarray, steps: int) -> np.ndarray:
  """First `steps` entries of x along axis 0, zero-padded at the end."""
  n = min(steps, x.shape[0])
  out = np.empty((steps,) + x.shape[1:], x.dtype)   # not np.zeros: no fresh zero pages
  out[:n] = x[:n]
  out[n:] = 0
  return out


def _mask(length: int, steps: int) -> np.ndarray:
  return np.arange(steps) < length


def _annotated(clip: record_format.Clip, steps: int) -> np.ndarray:
  """label/valid as bool [steps] (all True when absent)."""
  if clip.valid is None:
    return np.ones((steps,), bool)
  if len(clip.valid) != steps:
    raise record_format.RecordError("label/valid", f"{len(clip.valid)} values for {steps} "
                                    "labelled steps")
  return np.asarray(clip.valid, bool)


def to_example(clip: record_format.Clip, spec: ExampleSpec) -> dict[str, np.ndarray]:
  """Validates `clip` against `spec` and pads/crops it to the batch contract.

  Raises `record_format.RecordError` naming the offending field.
  """
  out: dict[str, Any] = {}
  for m in spec.modalities:
    x = clip.features[m]
    if x.shape[1] != spec.dims[m]:
      raise record_format.RecordError(
          f"{m}/features", f"feature width {x.shape[1]} != config.data.dims.{m}={spec.dims[m]}")
    out[m] = _fit(x, spec.max_steps[m])
    out[f"{m}_mask"] = _mask(x.shape[0], spec.max_steps[m])

  t = spec.image_steps
  if spec.task == "classification":
    if clip.label is None:
      raise record_format.RecordError("label/class", "missing (needed for classification)")
    if not 0 <= clip.label < spec.num_classes:
      raise record_format.RecordError(
          "label/class", f"{clip.label} not in [0, config.data.num_classes={spec.num_classes})")
    out["label"] = np.int32(clip.label)
    if clip.step_class is None:
      out["step_label"] = np.zeros((t,), np.int32)
      out["step_valid"] = np.zeros((t,), bool)
    else:
      step_class = np.asarray(clip.step_class)
      valid = _annotated(clip, len(step_class))
      bad = valid & ((step_class < 0) | (step_class >= spec.num_classes))
      if bad.any():
        i = int(np.argmax(bad))
        raise record_format.RecordError(
            "label/step_class", f"{int(step_class[i])} at step {i} not in "
            f"[0, config.data.num_classes={spec.num_classes})")
      out["step_valid"] = _fit(valid, t)
      out["step_label"] = np.where(out["step_valid"], _fit(step_class.astype(np.int32), t), 0)
  else:
    if clip.va is None:
      raise record_format.RecordError("label/va", "missing (needed for regression)")
    valid = _annotated(clip, len(clip.va))
    bad = valid & (np.abs(clip.va) > 1).any(axis=1)
    if bad.any():
      i = int(np.argmax(bad))
      raise record_format.RecordError(
          "label/va", f"valence/arousal {clip.va[i].tolist()} at annotated step {i} outside "
          "[-1, 1] (mark unannotated steps with label/valid = 0)")
    out["step_valid"] = _fit(valid, t)
    out["va"] = np.where(out["step_valid"][:, None], _fit(clip.va.astype(np.float32), t),
                         np.float32(0))
  out["example_mask"] = np.bool_(True)
  return out
