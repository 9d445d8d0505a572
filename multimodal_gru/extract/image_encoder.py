"""Per-frame features from a transformers Flax vision model (CLIP vision, ViT, ...)."""

from __future__ import annotations

import dataclasses

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import transformers

from multimodal_gru.extract import batching
from multimodal_gru.extract import devices as devices_lib
from multimodal_gru.extract import weights

_CLIP_TYPES = ("clip", "clip_vision_model")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How a model wants its pixels: size x size, (x / 255 - mean) / std, NCHW."""
  size: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def __call__(self, frames: jax.Array) -> jax.Array:
    """[B, S, S, 3] uint8 square frames -> [B, 3, size, size] float32."""
    x = frames.astype(jnp.float32) / 255.0
    if x.shape[1:3] != (self.size, self.size):
      x = jax.image.resize(x, (x.shape[0], self.size, self.size, 3), "bicubic")
    x = (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)
    return x.transpose(0, 3, 1, 2)


def preprocessing(name_or_path: str, vision_config, what: str, field: str) -> Preprocessing:
  """Mean/std from the checkpoint's image processor, size from its vision config."""
  default = (transformers.image_utils.OPENAI_CLIP_MEAN, transformers.image_utils.OPENAI_CLIP_STD) \
      if vision_config.model_type in _CLIP_TYPES else ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
  try:
    processor = weights.from_pretrained(transformers.AutoImageProcessor, name_or_path, what, field)
    mean, std = processor.image_mean, processor.image_std
  except (weights.WeightsNotFoundError, ValueError, KeyError) as e:
    logging.warning("%s %s: no image processor config (%s); using mean %s, std %s.",
                    what, name_or_path, type(e).__name__, *default)
    mean, std = default
  return Preprocessing(int(vision_config.image_size), tuple(map(float, mean)),
                       tuple(map(float, std)))


class ImageEncoder:
  """Pooled output of a Flax vision model per frame, batched and jitted."""

  def __init__(self, name_or_path: str, batch_size: int = 16, dtype: str = "float32",
               devices: devices_lib.LocalDevices | None = None):
    self.name, self.batch_size, self.dtype = name_or_path, batch_size, dtype
    self.devices = devices or devices_lib.default()
    what, field = "image model", "image.model"
    config = weights.from_pretrained(transformers.AutoConfig, name_or_path, what, field)
    cls = (transformers.FlaxCLIPVisionModel if config.model_type in _CLIP_TYPES
           else transformers.FlaxAutoModel)
    self.model, params = weights.load_flax_model(cls, name_or_path, what, field,
                                                 devices_lib.compute_dtype(dtype))
    self.params = self.devices.replicate(params)
    vision_config = getattr(self.model.config, "vision_config", self.model.config)
    self.preprocess = preprocessing(name_or_path, vision_config, what, field)
    self.model_class = type(self.model).__name__
    self._forward = jax.jit(self._apply)
    size = self.preprocess.size
    self.dim = jax.eval_shape(self._apply, self.params,
                              jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8)).shape[-1]

  def _apply(self, params, frames: jax.Array) -> jax.Array:
    pooled = self.model(self.preprocess(frames), params=params, train=False).pooler_output
    return pooled.reshape(pooled.shape[0], -1).astype(jnp.float32)   # ResNet poolers: [B, C, 1, 1]

  def __call__(self, frames: np.ndarray) -> np.ndarray:
    """[N, S, S, 3] uint8 -> [N, D] float32."""
    return batching.batched(lambda x: self._forward(self.params, x), [frames],
                            self.batch_size, self.devices)

  def info(self) -> dict:
    return {"name": weights.describe(self.name), "class": self.model_class, "dim": self.dim,
            "output": "pooler_output", "image_size": self.preprocess.size,
            "compute_dtype": self.dtype}
