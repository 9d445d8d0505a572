"""Feature-level augmentation (training only).

All functions are pure: (rng, inputs) -> inputs, with inputs {m: [B, T_m, D_m]}
and masks {m: [B, T_m]}; padded steps stay zero.
"""

from typing import Mapping

import jax
import jax.numpy as jnp


def augment_features(rng, feats: Mapping[str, jax.Array], masks: Mapping[str, jax.Array], cfg):
  """Gaussian noise, feature dropout, time masking and whole-modality dropout.

  cfg: config.augment (noise_std is relative to each feature's std over real steps).
  Returns (feats, masks); time masking and modality dropout zero features but keep
  masks, so sequence lengths and alignment are unchanged.
  """
  names = sorted(feats)
  rng_noise, rng_drop, rng_time, rng_modality = jax.random.split(rng, 4)
  batch = feats[names[0]].shape[0]
  # Whole-modality dropout; at least one stream is always kept per example.
  keep_modality = jax.random.bernoulli(rng_modality, 1.0 - cfg.modality_dropout, (batch, len(names)))
  rescue = jax.random.randint(jax.random.fold_in(rng_modality, 1), (batch,), 0, len(names))
  keep_modality = keep_modality | (~keep_modality.any(axis=1, keepdims=True)
                                   & (jnp.arange(len(names))[None] == rescue[:, None]))
  out = {}
  for i, m in enumerate(names):
    x = feats[m]
    step_mask = masks[m][..., None].astype(x.dtype)
    if cfg.noise_std > 0:
      count = jnp.maximum(step_mask.sum(axis=(0, 1)), 1.0)
      mean = (x * step_mask).sum(axis=(0, 1)) / count
      std = jnp.sqrt((jnp.square(x - mean) * step_mask).sum(axis=(0, 1)) / count)
      x = x + cfg.noise_std * std * jax.random.normal(jax.random.fold_in(rng_noise, i), x.shape, x.dtype)
    if cfg.feature_dropout > 0:
      keep = jax.random.bernoulli(jax.random.fold_in(rng_drop, i), 1.0 - cfg.feature_dropout, x.shape)
      x = jnp.where(keep, x / (1.0 - cfg.feature_dropout), 0.0)
    if cfg.time_mask_prob > 0:
      keep_t = jax.random.bernoulli(jax.random.fold_in(rng_time, i), 1.0 - cfg.time_mask_prob, x.shape[:2])
      x = x * keep_t[..., None]
    x = x * keep_modality[:, i, None, None]
    out[m] = x * step_mask
  return out


def mixup(rng, batch: Mapping[str, jax.Array], num_classes: int, alpha: float, names):
  """Feature-space mixup for classification.

  Mixes each example with a shuffled partner: features x' = lam x + (1 - lam) x[perm],
  masks OR-ed, one-hot targets mixed the same way. Returns (batch, clip_targets [B, K],
  step_targets [B, T_image, K]).
  """
  rng_lam, rng_perm = jax.random.split(rng)
  batch_size = batch["label"].shape[0]
  lam = jax.random.beta(rng_lam, alpha, alpha, (batch_size,))
  perm = jax.random.permutation(rng_perm, batch_size)
  mixed = dict(batch)
  for m in names:
    l = lam[:, None, None]
    mixed[m] = l * batch[m] + (1 - l) * batch[m][perm]
    mixed[f"{m}_mask"] = batch[f"{m}_mask"] | batch[f"{m}_mask"][perm]
  clip = jax.nn.one_hot(batch["label"], num_classes)
  clip = lam[:, None] * clip + (1 - lam[:, None]) * clip[perm]
  step = jax.nn.one_hot(batch["step_label"], num_classes)
  step = lam[:, None, None] * step + (1 - lam[:, None, None]) * step[perm]
  mixed["step_valid"] = batch["step_valid"] & batch["step_valid"][perm]
  mixed["example_mask"] = batch["example_mask"] & batch["example_mask"][perm]
  return mixed, clip, step


