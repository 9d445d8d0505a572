"""The multimodal model: per-stream encoders, a fusion variant, heads, autoencoder."""

from typing import Any, Mapping, Sequence

import flax.linen as nn
import ml_collections
import jax.numpy as jnp

from multimodal_gru.models import augment
from multimodal_gru.models.fusion import get_fusion
from multimodal_gru.models.gru import GRUEncoder

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class StreamEncoder(nn.Module):
  """Encodes one stream: LayerNorm, then a GRU (or a per-step MLP), projected to `hidden_dim`."""
  hidden_dim: int
  num_layers: int = 1
  bidirectional: bool = True
  use_gru: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask):
    """x [B, T, D], mask [B, T] -> [B, T, hidden_dim], zero at padded steps."""
    x = nn.LayerNorm(dtype=self.dtype, name="input_norm")(x)
    if self.use_gru:
      lengths = mask.sum(axis=1).astype(jnp.int32)
      y, _ = GRUEncoder(self.hidden_dim, self.num_layers, self.bidirectional, self.dtype, name="gru")(x, lengths)
      if self.bidirectional:
        y = nn.Dense(self.hidden_dim, dtype=self.dtype, name="merge_directions")(y)
    else:   # ablation: no recurrence; the fusion's pooling is a masked mean
      y = nn.gelu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="project")(x))
    return jnp.where(mask[..., None], y, 0.0)


class MLPHead(nn.Module):
  out_dim: int
  hidden_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    """x [..., F] -> [..., out_dim] float32."""
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.gelu(nn.Dense(self.hidden_dim, dtype=self.dtype, name="hidden")(x))
    return nn.Dense(self.out_dim, dtype=self.dtype, name="out")(x).astype(jnp.float32)


class MultimodalModel(nn.Module):
  """Cross-attentive GRU model.

  __call__(batch, train) with batch {m: [B, T_m, D_m], m_mask: [B, T_m]} returns
    classification: logits [B, K], step_logits [B, T_image, K]
    regression:     va [B, 2], step_va [B, T_image, 2] (tanh, in [-1, 1])
    autoencoder:    recon {m: [B, T_m, D_m]} when enabled
  """
  task: str
  modalities: Sequence[str]
  feature_dims: Mapping[str, int]
  fusion: str = "xattn_bidir"
  num_classes: int = 2
  hidden_dim: int = 256
  gru_layers: int = 1
  bidirectional: bool = True
  use_gru: bool = True
  num_heads: int = 4
  xattn_layers: int = 1
  mlp_dim: int = 512
  dropout: float = 0.1
  autoencoder: bool = True
  augment_cfg: Any = None      # config.augment as a FrozenConfigDict, or None = no augmentation
  dtype: Any = jnp.float32

  def streams(self) -> list[str]:
    wanted = get_fusion(self.fusion).modalities
    names = [m for m in self.modalities if wanted is None or m in wanted]
    if not names:
      raise ValueError(f"fusion {self.fusion!r} needs streams {wanted}, data.modalities is {self.modalities}")
    return names

  @nn.compact
  def __call__(self, batch, *, train: bool):
    names = self.streams()
    feats = {m: batch[m].astype(self.dtype) for m in names}
    masks = {m: batch[f"{m}_mask"] for m in names}
    step_mask = batch["image_mask"] if "image_mask" in batch else masks[names[0]]
    inputs = feats
    if train and self.augment_cfg is not None:
      inputs = augment.augment_features(self.make_rng("augment"), feats, masks, self.augment_cfg)
    seqs = {m: StreamEncoder(self.hidden_dim, self.gru_layers, self.bidirectional, self.use_gru,
                             self.dtype, name=f"{m}_encoder")(inputs[m], masks[m]) for m in names}
    fused = get_fusion(self.fusion)(
        width=self.hidden_dim, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        num_layers=self.xattn_layers, dropout=self.dropout, dtype=self.dtype,
        name="fusion")(seqs, masks, step_mask, train=train)
    out_dim = self.num_classes if self.task == "classification" else 2
    clip = MLPHead(out_dim, self.hidden_dim, self.dropout, self.dtype, name="clip_head")(fused.pooled, train=train)
    steps = MLPHead(out_dim, self.hidden_dim, self.dropout, self.dtype, name="step_head")(fused.steps, train=train)
    if self.task == "classification":
      out = {"logits": clip, "step_logits": steps}
    else:
      out = {"va": jnp.tanh(clip), "step_va": jnp.tanh(steps)}
    if self.autoencoder:
      out["recon"] = {
          m: MLPHead(self.feature_dims[m], self.hidden_dim, 0.0, self.dtype, name=f"{m}_decoder")(
              fused.seqs[m], train=train) for m in names}
    return out


def build_model(config) -> MultimodalModel:
  """The model described by `config` (see multimodal_gru/config_base.py)."""
  if config.task not in ("classification", "regression"):
    raise ValueError(f"config.task must be 'classification' or 'regression', got {config.task!r}")
  if config.model.dtype not in DTYPES:
    raise ValueError(f"config.model.dtype must be one of {sorted(DTYPES)}, got {config.model.dtype!r}")
  m = config.model
  return MultimodalModel(
      task=config.task,
      modalities=tuple(config.data.modalities),
      feature_dims={k: int(config.data.dims[k]) for k in config.data.modalities},
      fusion=m.fusion, num_classes=config.data.num_classes, hidden_dim=m.hidden_dim,
      gru_layers=m.gru_layers, bidirectional=m.bidirectional, use_gru=m.use_gru,
      num_heads=m.num_heads, xattn_layers=m.xattn_layers, mlp_dim=m.mlp_dim, dropout=m.dropout,
      autoencoder=config.autoencoder.enabled,
      augment_cfg=ml_collections.FrozenConfigDict(config.augment) if config.augment.enabled else None,
      dtype=DTYPES[m.dtype])
