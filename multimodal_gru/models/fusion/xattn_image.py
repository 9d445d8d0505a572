"""`xattn_image`: only the image stream queries; it attends to video and text.

Video and text are not updated (one-directional ablation of `xattn_bidir`).
"""

import flax.linen as nn

from multimodal_gru.models.attention import CrossAttentionBlock
from multimodal_gru.models.fusion import register
from multimodal_gru.models.fusion.base import FusionModule
from multimodal_gru.models.fusion.xattn_bidir import context_of


@register("xattn_image")
class ImageCrossAttentionFusion(FusionModule):

  @nn.compact
  def __call__(self, seqs, masks, step_mask, *, train: bool):
    if "image" not in seqs:
      raise ValueError("fusion 'xattn_image' needs the image stream in data.modalities")
    others = [n for n in sorted(seqs) if n != "image"]
    context, context_mask = context_of(seqs, masks, others)
    image = seqs["image"]
    for layer in range(self.num_layers):
      image = CrossAttentionBlock(
          self.num_heads, self.mlp_dim, self.dropout, self.dtype,
          name=f"image_attends_others_{layer}")(image, masks["image"], context, context_mask, train=train)
    return self.readout({**seqs, "image": image}, masks, step_mask)
