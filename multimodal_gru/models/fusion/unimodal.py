"""Unimodal baselines: `video_only`, `image_only`, `text_only`.

Only the named stream is encoded; per-step outputs are resampled onto the
image steps so that frame-level heads work for every baseline.
"""

import flax.linen as nn

from multimodal_gru.models.fusion import register
from multimodal_gru.models.fusion.base import FusionModule


class _Unimodal(FusionModule):

  @nn.compact
  def __call__(self, seqs, masks, step_mask, *, train: bool):
    return self.readout(seqs, masks, step_mask)


@register("video_only")
class VideoOnly(_Unimodal):
  modalities = ("video",)


@register("image_only")
class ImageOnly(_Unimodal):
  modalities = ("image",)


@register("text_only")
class TextOnly(_Unimodal):
  modalities = ("text",)
