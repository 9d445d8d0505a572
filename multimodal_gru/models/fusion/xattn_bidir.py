"""`xattn_bidir` (default): every stream attends to all the others, in both directions.

Per layer, simultaneously for each stream m: m <- CrossAttention(m, concat of the
other streams along time). So image attends to video and text, and video and
text attend back to image (and to each other).
"""

import jax.numpy as jnp

import flax.linen as nn

from multimodal_gru.models.attention import CrossAttentionBlock
from multimodal_gru.models.fusion import register
from multimodal_gru.models.fusion.base import FusionModule


def context_of(seqs, masks, names):
  """Streams `names` concatenated along time: ([B, sum T, H], [B, sum T])."""
  return (jnp.concatenate([seqs[n] for n in names], axis=1),
          jnp.concatenate([masks[n] for n in names], axis=1))


@register("xattn_bidir")
class BidirectionalCrossAttentionFusion(FusionModule):

  @nn.compact
  def __call__(self, seqs, masks, step_mask, *, train: bool):
    names = sorted(seqs)
    for layer in range(self.num_layers):
      updated = {}
      for m in names:
        context, context_mask = context_of(seqs, masks, [n for n in names if n != m])
        updated[m] = CrossAttentionBlock(
            self.num_heads, self.mlp_dim, self.dropout, self.dtype,
            name=f"{m}_attends_others_{layer}")(seqs[m], masks[m], context, context_mask, train=train)
      seqs = updated
    return self.readout(seqs, masks, step_mask)
