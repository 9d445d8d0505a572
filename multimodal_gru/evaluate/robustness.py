"""Robustness evaluation: the eval set scored again under named corruptions.

A corruption maps one host eval batch (the batch contract of
input_pipeline/examples.py: {m} [B, T_m, D_m], {m}_mask [B, T_m], step labels
[B, T_image]) to a corrupted copy and changes only what its name says. The
families (`FAMILIES`, selected and sized by config.eval):

  missing_<m>          stream m absent: features 0, mask all False
  missing_<m1>+<m2>    two streams absent (every pair of config.data.modalities)
  noise_<s>            every stream: + N(0, (s * std)^2) at real steps, std = the
                       example's std of that stream over its real values
  drop_steps_<f>       every stream: round(f * T) of its T real steps removed (at
                       least one kept), the rest moved up in order; image step
                       labels follow their frames
  shift_image_<k>      image frames lag the other streams by k image steps:
                       image[t] <- image[max(t - k, 0)]; masks and labels stay

Randomness is drawn per example from (config.eval.seed, the corruption's name,
the example's own features), so a clip is corrupted the same way in any batch,
on any host, in any run. `evaluate_all` is what the trainer calls after its
final evaluation; `evaluate_workdir` scores a finished run (the
`python -m multimodal_gru.evaluate --robustness` command).
"""

from __future__ import annotations

import itertools
import json
import os
import zlib
from typing import Callable, Iterable, Mapping

import jax
import ml_collections
import numpy as np

from multimodal_gru import evaluate

Batch = Mapping[str, np.ndarray]
Corruption = Callable[[Batch], dict]          # batch -> corrupted copy
PREFIX = "robust"
_STEP_KEYS = ("step_label", "va", "step_valid")   # per image step: follow dropped image frames

FAMILIES: dict[str, Callable] = {}


def register(name: str):
  """Registers a family: fn(eval_config, modalities) -> {corruption name: Corruption}."""
  def wrap(fn):
    if name in FAMILIES:
      raise ValueError(f"corruption family {name!r} registered twice")
    FAMILIES[name] = fn
    return fn
  return wrap


def example_rngs(batch: Batch, seed: int, name: str, modalities) -> list[np.random.Generator]:
  """One generator per example row, from (seed, name, the row's features)."""
  key = zlib.crc32(name.encode())
  rows = batch[modalities[0]].shape[0]
  return [np.random.default_rng([seed, key, zlib.crc32(b"".join(
      np.ascontiguousarray(batch[m][i], np.float32).tobytes() for m in modalities))])
          for i in range(rows)]


def _copy(batch: Batch) -> dict:
  return {k: np.array(v, copy=True) for k, v in batch.items()}


def _missing(batch: Batch, streams) -> dict:
  out = _copy(batch)
  for m in streams:
    out[m] = np.zeros_like(out[m])
    out[f"{m}_mask"] = np.zeros_like(out[f"{m}_mask"])
  return out


@register("missing")
def _missing_each(cfg, modalities):
  return {f"missing_{m}": (lambda b, m=m: _missing(b, (m,))) for m in modalities}


@register("missing_pairs")
def _missing_pairs(cfg, modalities):
  return {f"missing_{a}+{b}": (lambda x, p=(a, b): _missing(x, p))
          for a, b in itertools.combinations(modalities, 2)}


def _noise(batch: Batch, level: float, rngs, modalities) -> dict:
  out = _copy(batch)
  for i, rng in enumerate(rngs):
    for m in modalities:
      real = batch[f"{m}_mask"][i]
      x = batch[m][i][real].astype(np.float64)
      if x.size:
        noise = rng.normal(size=x.shape) * level * x.std()
        out[m][i][real] = (x + noise).astype(out[m].dtype)
  return out


@register("noise")
def _noise_levels(cfg, modalities):
  def make(level, name):
    return lambda b: _noise(b, level, example_rngs(b, cfg.seed, name, modalities), modalities)
  return {f"noise_{s:g}": make(float(s), f"noise_{s:g}") for s in cfg.noise_levels}


def _drop_steps(batch: Batch, fraction: float, rngs, modalities) -> dict:
  out = _copy(batch)
  for i, rng in enumerate(rngs):
    for m in modalities:
      n = int(batch[f"{m}_mask"][i].sum())
      drop = min(int(round(fraction * n)), n - 1)
      if n == 0 or drop <= 0:
        continue
      keep = np.sort(rng.choice(n, n - drop, replace=False))
      keys = [m] + ([k for k in _STEP_KEYS if k in batch] if m == "image" else [])
      for k in keys:
        out[k][i] = 0
        out[k][i][:len(keep)] = batch[k][i][keep]
      out[f"{m}_mask"][i] = np.arange(batch[m].shape[1]) < len(keep)
  return out


@register("drop_steps")
def _drop_fractions(cfg, modalities):
  def make(fraction, name):
    return lambda b: _drop_steps(b, fraction, example_rngs(b, cfg.seed, name, modalities),
                                 modalities)
  return {f"drop_steps_{f:g}": make(float(f), f"drop_steps_{f:g}") for f in cfg.drop_fractions}


def _shift_image(batch: Batch, steps: int) -> dict:
  out = _copy(batch)
  x, mask = batch["image"], batch["image_mask"]
  for i in range(x.shape[0]):
    n = int(mask[i].sum())
    src = np.maximum(np.arange(n) - steps, 0)
    out["image"][i][:n] = x[i][src]
  return out


@register("shift_image")
def _shift_steps(cfg, modalities):
  if "image" not in modalities:
    return {}
  return {f"shift_image_{k}": (lambda b, k=int(k): _shift_image(b, k)) for k in cfg.shift_steps}


def corruptions(config) -> dict[str, Corruption]:
  """The named corruptions config.eval asks for, in config order."""
  cfg, modalities = config.eval, tuple(config.data.modalities)
  out = {}
  for family in cfg.corruptions:
    if family not in FAMILIES:
      raise ValueError(f"unknown corruption family {family!r} in config.eval.corruptions; "
                       f"known: {sorted(FAMILIES)}")
    out.update(FAMILIES[family](cfg, modalities))
  return out


def evaluate_all(config, eval_step: Callable, state, make_batches: Callable[[], Iterable[dict]],
                 to_global: Callable, writer=None, step: int | None = None) -> dict[str, float]:
  """{robust/<corruption>/<metric>: value} over the whole eval set; {} if eval.robustness is off.

  make_batches() starts a fresh pass over the eval batches (host numpy); each
  corruption gets its own pass. With `writer`, the metrics also go to it at `step`.
  """
  if not config.get("eval", {}).get("robustness", False):
    return {}
  out = {}
  for name, corrupt in corruptions(config).items():
    metrics = evaluate.evaluate(config, eval_step, state, map(corrupt, make_batches()),
                                to_global)
    out.update({f"{PREFIX}/{name}/{k}": v for k, v in metrics.items()})
  if writer is not None:
    writer.write_scalars(step, out)
  return out


def with_eval_defaults(config) -> ml_collections.ConfigDict:
  """A copy of `config` with robustness on; config.eval added from the base config if absent."""
  from multimodal_gru import config_base
  config = ml_collections.ConfigDict(config.to_dict())
  if "eval" not in config:
    config.eval = config_base.get_base_config().eval
  config.eval.robustness = True
  return config


def evaluate_workdir(workdir: str, split: str = "eval", checkpoint: int | None = None,
                     out: str | None = None) -> dict:
  """Scores a finished run's checkpoint clean and under every corruption.

  Writes OUT/robustness.json (default WORKDIR/eval_<split>/) and TensorBoard
  scalars in WORKDIR; for the eval split at the run's final step, also adds
  the robust/* metrics to WORKDIR/results.json (as the trainer does).
  Returns {"step", "metrics" (clean), "robust", "files"}.
  """
  from input_pipeline import pipeline
  from multimodal_gru import predict, summary
  from multimodal_gru.evaluate import run as run_lib
  run_ = run_lib.restore_run(workdir, checkpoint,
                             with_eval_defaults(predict.load_run_config(workdir)))
  config, params, step = run_.config, run_.params, run_.step
  eval_step, to_global = run_.eval_step, run_.to_global
  data_split = config.data.eval_split if split == "eval" else split
  make_batches = lambda: pipeline.create_eval_batches(config, split=data_split)
  clean = evaluate.evaluate(config, eval_step, params, make_batches(), to_global)
  is_chief = jax.process_index() == 0
  writer = summary.create_default_writer(workdir, just_logging=not is_chief)
  robust = evaluate_all(config, eval_step, params, make_batches, to_global,
                        writer if split == "eval" else None, step)
  writer.close()
  files = []
  if is_chief:
    out = out or os.path.join(workdir, f"eval_{split}")
    os.makedirs(out, exist_ok=True)
    files.append(os.path.join(out, "robustness.json"))
    with open(files[-1], "w") as f:
      json.dump({"split": data_split, "checkpoint_step": step, "run": os.path.abspath(workdir),
                 "metrics": clean, "robust": robust}, f, indent=1, sort_keys=True)
    results_path = os.path.join(workdir, "results.json")
    with open(results_path) as f:
      results = json.load(f)
    if split == "eval" and results.get("step") == step:
      results["metrics"].update(robust)
      with open(results_path + ".tmp", "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
      os.replace(results_path + ".tmp", results_path)
      files.append(results_path)
  return {"step": step, "metrics": clean, "robust": robust, "files": files}
