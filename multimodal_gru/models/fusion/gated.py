"""`gated`: a learned sigmoid gate per stream weighs projected stream features.

Clip: g_m = sigmoid(W_g [p_1; ...; p_M])_m, fused = sum_m g_m * W_m p_m.
Steps: the same, computed per image step on image-aligned features.
"""

import flax.linen as nn
import jax.numpy as jnp

from multimodal_gru.models.fusion import register
from multimodal_gru.models.fusion.base import FusionModule, FusionOutput, image_aligned, masked_mean


class _Gate(nn.Module):
  width: int
  dtype: object

  @nn.compact
  def __call__(self, feats):
    """feats: list of M arrays [..., H] -> [..., width]."""
    gates = nn.sigmoid(nn.Dense(len(feats), dtype=self.dtype, name="gate")(jnp.concatenate(feats, -1)))
    projected = [nn.Dense(self.width, dtype=self.dtype, name=f"proj_{i}")(f) for i, f in enumerate(feats)]
    return sum(gates[..., i:i + 1] * p for i, p in enumerate(projected))


@register("gated")
class GatedFusion(FusionModule):

  @nn.compact
  def __call__(self, seqs, masks, step_mask, *, train: bool):
    names = sorted(seqs)
    pooled = _Gate(self.width, self.dtype, name="clip_gate")([masked_mean(seqs[m], masks[m]) for m in names])
    aligned = {m: image_aligned({m: seqs[m]}, {m: masks[m]}, step_mask) for m in names}
    steps = _Gate(self.width, self.dtype, name="step_gate")([aligned[m] for m in names])
    return FusionOutput(pooled=pooled, steps=jnp.where(step_mask[..., None], steps, 0.0), seqs=seqs)
