"""Sentence embeddings of captions: a Flax BERT-like encoder + pooling, or CLIP text.

BERT-like checkpoints follow their sentence-transformers files where present:
1_Pooling/config.json (mean / cls / max pooling, default mean), modules.json
(a Normalize module = L2-normalize), sentence_bert_config.json (max_seq_length).
all-MiniLM-L6-v2 thus gives mean-pooled, L2-normalized 384-d vectors, as the
sentence-transformers model does. CLIP checkpoints give the L2-normalized
projected text embedding.
"""

from __future__ import annotations

import json
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import transformers

from multimodal_gru.extract import batching
from multimodal_gru.extract import devices as devices_lib
from multimodal_gru.extract import weights

_LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)


def _read_json(name_or_path: str, filename: str) -> dict | list | None:
  """A JSON file of a local folder or hub repo (hub cache), None if it has none."""
  path = transformers.utils.cached_file(
      weights.resolve(name_or_path), filename, local_files_only=weights.offline(),
      _raise_exceptions_for_missing_entries=False,
      _raise_exceptions_for_connection_errors=False)
  if path is None:
    return None
  with open(path) as f:
    return json.load(f)


def _l2_normalize(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class SentenceEncoder:
  """Captions -> [N, D] float32, batched and jitted (lengths padded to a few buckets)."""

  def __init__(self, name_or_path: str, max_length: int = 64, batch_size: int = 32,
               dtype: str = "float32", devices: devices_lib.LocalDevices | None = None):
    self.name, self.batch_size, self.dtype = name_or_path, batch_size, dtype
    self.devices = devices or devices_lib.default()
    compute = devices_lib.compute_dtype(dtype)
    what, field = "text model", "text.model"
    config = weights.from_pretrained(transformers.AutoConfig, name_or_path, what, field)
    self.tokenizer = weights.from_pretrained(transformers.AutoTokenizer, name_or_path, what, field)
    self.is_clip = config.model_type == "clip"
    if self.is_clip:
      self.model, self.params = weights.load_flax_model(transformers.FlaxCLIPModel, name_or_path,
                                                        what, field, compute)
      self.pooling, self.normalize = "clip_projection", True
      limit = config.text_config.max_position_embeddings
    else:
      self.model, self.params = weights.load_flax_model(transformers.FlaxAutoModel, name_or_path,
                                                        what, field, compute)
      pooling = (_read_json(name_or_path, "1_Pooling/config.json")
                 or {"pooling_mode_mean_tokens": True})
      modes = [m for m in ("mean", "cls", "max") if pooling.get(f"pooling_mode_{m}_tokens")]
      if len(modes) != 1:
        raise ValueError(f"{what} {name_or_path}: unsupported pooling {pooling}")
      self.pooling = modes[0]
      modules = _read_json(name_or_path, "modules.json") or []
      self.normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
      limit = (_read_json(name_or_path, "sentence_bert_config.json") or {}).get(
          "max_seq_length", config.max_position_embeddings)
    self.params = self.devices.replicate(self.params)
    self.max_length = min(max_length, limit)
    self.model_class = type(self.model).__name__
    self._forward = jax.jit(self._apply)
    ids = jax.ShapeDtypeStruct((1, _LENGTH_BUCKETS[0]), jnp.int32)
    self.dim = jax.eval_shape(self._apply, self.params, ids, ids).shape[-1]

  def _apply(self, params, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    if self.is_clip:
      x = self.model.get_text_features(input_ids, attention_mask, params=params)
    else:
      hidden = self.model(input_ids, attention_mask=attention_mask,
                          token_type_ids=jnp.zeros_like(input_ids), params=params,
                          train=False).last_hidden_state
      mask = attention_mask[..., None].astype(hidden.dtype)
      if self.pooling == "mean":
        x = (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)
      elif self.pooling == "cls":
        x = hidden[:, 0]
      else:
        x = jnp.where(mask > 0, hidden, -1e9).max(1)
    x = x.astype(jnp.float32)
    return _l2_normalize(x) if self.normalize else x

  def __call__(self, texts: Sequence[str]) -> np.ndarray:
    tokens = self.tokenizer(list(texts), truncation=True, max_length=self.max_length,
                            padding="longest", return_tensors="np")
    longest = tokens["input_ids"].shape[1]
    length = next(b for b in _LENGTH_BUCKETS + (longest,) if b >= longest)
    pad = lambda x, v: np.pad(x, ((0, 0), (0, length - longest)), constant_values=v)
    ids = pad(tokens["input_ids"], self.tokenizer.pad_token_id or 0).astype(np.int32)
    mask = pad(tokens["attention_mask"], 0).astype(np.int32)
    return batching.batched(lambda i, m: self._forward(self.params, i, m), [ids, mask],
                            self.batch_size, self.devices)

  def info(self) -> dict:
    return {"name": weights.describe(self.name), "class": self.model_class, "dim": self.dim,
            "pooling": self.pooling, "l2_normalized": self.normalize,
            "max_length": self.max_length, "compute_dtype": self.dtype}
