"""Keyframe captions: a Flax image-to-text model, or Kinetics class names from I3D."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from transformers import modeling_flax_utils

from multimodal_gru.extract import batching
from multimodal_gru.extract import devices as devices_lib
from multimodal_gru.extract import image_encoder
from multimodal_gru.extract import weights
from multimodal_gru.extract.kinetics400_labels import KINETICS400_LABELS

KINETICS_SOURCE = "fallback:i3d-kinetics-topk"


class FlaxVisionEncoderDecoder(transformers.FlaxVisionEncoderDecoderModel):
  """FlaxVisionEncoderDecoderModel that also loads with `_do_init=False`.

  transformers refuses `_do_init=False` for this class, so every load would run
  a full random init eagerly first (tens of seconds of op-by-op compilation on
  CPU, even for a tiny model). Skipping it only needs the input shape that the
  parent computes; generation then takes `params` explicitly.
  """

  def __init__(self, config, input_shape=None, seed: int = 0, dtype=jnp.float32,
               _do_init: bool = True, **kwargs):
    if _do_init:
      super().__init__(config, input_shape, seed, dtype, **kwargs)
      return
    size, channels = config.encoder.image_size, getattr(config.encoder, "num_channels", 3)
    modeling_flax_utils.FlaxPreTrainedModel.__init__(
        self, config, self.module_class(config=config, dtype=dtype, **kwargs),
        input_shape=input_shape or ((1, size, size, channels), (1, 1)), seed=seed, dtype=dtype,
        _do_init=False)


class ImageCaptioner:
  """FlaxVisionEncoderDecoderModel (e.g. ViT-GPT2) with jitted greedy / beam generation."""

  def __init__(self, name_or_path: str, max_length: int = 16, num_beams: int = 4,
               batch_size: int = 8, dtype: str = "float32",
               devices: devices_lib.LocalDevices | None = None):
    self.name, self.batch_size, self.dtype = name_or_path, batch_size, dtype
    self.devices = devices or devices_lib.default()
    what, field = "captioning model", "captioner.model"
    self.model, params = weights.load_flax_model(FlaxVisionEncoderDecoder, name_or_path,
                                                 what, field, devices_lib.compute_dtype(dtype))
    self.params = self.devices.replicate(params)
    self.tokenizer = weights.from_pretrained(transformers.AutoTokenizer, name_or_path, what, field)
    self.preprocess = image_encoder.preprocessing(name_or_path, self.model.config.encoder, what,
                                                  field)
    self.max_length, self.num_beams = max_length, num_beams
    self.source = f"captioner:{weights.describe(name_or_path)}"

    def generate(params, frames):
      return self.model.generate(self.preprocess(frames), params=params, max_length=max_length,
                                 num_beams=num_beams).sequences
    self._generate = jax.jit(generate)

  def __call__(self, frames: np.ndarray, segment_logits: np.ndarray | None = None) -> list[str]:
    """[N, S, S, 3] uint8 keyframes -> N captions (`segment_logits` is unused)."""
    del segment_logits
    tokens = batching.batched(lambda x: self._generate(self.params, x), [frames],
                              self.batch_size, self.devices)
    return [c.strip() for c in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]

  def info(self) -> dict:
    return {"name": weights.describe(self.name), "source": self.source,
            "max_length": self.max_length, "num_beams": self.num_beams,
            "compute_dtype": self.dtype}


class KineticsCaptioner:
  """Fallback without captioner weights: the top-k Kinetics-400 classes of I3D.

  Caption of a keyframe = its segment's k most likely classes, e.g.
  "playing drums, playing guitar".
  """

  source = KINETICS_SOURCE

  def __init__(self, top_k: int = 2):
    self.top_k = top_k

  def __call__(self, frames: np.ndarray | None, segment_logits: np.ndarray) -> list[str]:
    """segment_logits [N, 400] of the segment behind each keyframe -> N captions."""
    del frames
    top = np.argsort(-segment_logits, axis=-1, kind="stable")[:, :self.top_k]
    return [", ".join(KINETICS400_LABELS[i] for i in row) for row in top]

  def info(self) -> dict:
    return {"name": "kinetics", "source": self.source, "top_k": self.top_k}
