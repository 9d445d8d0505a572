"""The training objective: task losses on clip and steps, plus reconstruction."""

import jax.numpy as jnp

from multimodal_gru import losses


def clip_va_target(batch):
  """Clip-level valence/arousal target: mean over annotated steps. -> ([B, 2], mask [B])."""
  valid = batch["step_valid"] & batch["example_mask"][:, None]
  weights = valid.astype(jnp.float32)[..., None]
  target = (batch["va"] * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
  return target, valid.any(axis=1)


def compute_losses(outputs, batch, config, clip_targets=None, step_targets=None):
  """Returns (total loss, {name: scalar}).

  outputs: the model's outputs; batch: the (possibly mixed) batch.
  clip_targets [B, K] / step_targets [B, T, K]: soft targets from mixup, else None.
  """
  examples = batch["example_mask"]
  step_mask = batch["step_valid"] & examples[:, None]
  parts = {}
  if config.task == "classification":
    if clip_targets is None:
      parts["clip_loss"] = losses.softmax_cross_entropy(
          outputs["logits"], batch["label"], examples, config.loss.label_smoothing)
      parts["step_loss"] = losses.softmax_cross_entropy(
          outputs["step_logits"], batch["step_label"], step_mask, config.loss.label_smoothing)
    else:
      parts["clip_loss"] = losses.soft_cross_entropy(outputs["logits"], clip_targets, examples)
      parts["step_loss"] = losses.soft_cross_entropy(outputs["step_logits"], step_targets, step_mask)
  else:
    target, clip_mask = clip_va_target(batch)
    parts["clip_loss"] = losses.ccc_loss(outputs["va"], target, clip_mask)
    parts["step_loss"] = losses.ccc_loss(outputs["step_va"], batch["va"], step_mask)
    if config.loss.mse_weight > 0:
      parts["clip_loss"] += config.loss.mse_weight * losses.masked_mse(outputs["va"], target, clip_mask)
      parts["step_loss"] += config.loss.mse_weight * losses.masked_mse(outputs["step_va"], batch["va"], step_mask)
  total = config.loss.clip_weight * parts["clip_loss"] + config.loss.step_weight * parts["step_loss"]
  if "recon" in outputs:
    recon = [losses.reconstruction_loss(r, batch[m], batch[f"{m}_mask"] & examples[:, None])
             for m, r in sorted(outputs["recon"].items())]
    parts["recon_loss"] = sum(recon) / len(recon)
    total = total + config.autoencoder.weight * parts["recon_loss"]
  parts["loss"] = total
  return total, parts
