"""Shared pieces of the fusion variants.

A fusion module maps encoded streams to a fused clip vector and fused
per-step features aligned to the image stream:

  __call__(seqs, masks, *, train) -> FusionOutput
    seqs  {m: [B, T_m, H]}  encoder outputs (zero at padded steps)
    masks {m: [B, T_m]}     bool, True = real step
"""

from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class FusionOutput:
  pooled: jax.Array                    # [B, F] clip representation
  steps: jax.Array                     # [B, T_image, F] per-step representation
  seqs: Mapping[str, jax.Array]        # {m: [B, T_m, H]} fused per-modality sequences (for the autoencoder)


def masked_mean(x, mask):
  """x [B, T, H], mask [B, T] -> [B, H]; zero for an all-padding row."""
  mask = mask.astype(x.dtype)[..., None]
  return (x * mask).sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0)


def align_steps(x, mask, target_mask):
  """Resamples x [B, T, H] onto the target's steps by relative position.

  Streams are sampled uniformly over the same clip, so target step i of n
  maps to source step floor((i + 0.5) * m / n) of m real steps.
  mask [B, T], target_mask [B, T'] -> [B, T', H], zero at padded target steps.
  """
  src_len = mask.sum(axis=1, keepdims=True).astype(jnp.float32)          # [B, 1]
  dst_len = target_mask.sum(axis=1, keepdims=True).astype(jnp.float32)   # [B, 1]
  pos = jnp.arange(target_mask.shape[1], dtype=jnp.float32)[None]       # [1, T']
  idx = jnp.floor((pos + 0.5) * src_len / jnp.maximum(dst_len, 1.0)).astype(jnp.int32)
  idx = jnp.clip(idx, 0, x.shape[1] - 1)
  out = jnp.take_along_axis(x, idx[..., None], axis=1)
  return jnp.where(target_mask[..., None], out, 0.0)


def image_aligned(seqs: Mapping[str, Any], masks: Mapping[str, Any], image_mask):
  """Every stream resampled to the image steps, concatenated: [B, T_image, sum H]."""
  return jnp.concatenate(
      [align_steps(seqs[m], masks[m], image_mask) for m in sorted(seqs)], axis=-1)


class FusionModule(nn.Module):
  """Fields shared by every fusion variant (sizes come from config.model)."""
  width: int
  num_heads: int = 4
  mlp_dim: int = 512
  num_layers: int = 1
  dropout: float = 0.0
  dtype: Any = jnp.float32
  # Streams this variant reads; None = every configured stream.
  modalities = None

  def readout(self, seqs, masks, step_mask) -> FusionOutput:
    """Concatenates masked means (clip) and image-aligned steps of every stream."""
    names = sorted(seqs)
    pooled = jnp.concatenate([masked_mean(seqs[m], masks[m]) for m in names], axis=-1)
    return FusionOutput(pooled=pooled, steps=image_aligned(seqs, masks, step_mask), seqs=seqs)
