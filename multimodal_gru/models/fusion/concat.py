"""`concat`: no attention; the streams' pooled and per-step features are concatenated."""

import flax.linen as nn

from multimodal_gru.models.fusion import register
from multimodal_gru.models.fusion.base import FusionModule


@register("concat")
class ConcatFusion(FusionModule):

  @nn.compact
  def __call__(self, seqs, masks, step_mask, *, train: bool):
    return self.readout(seqs, masks, step_mask)
