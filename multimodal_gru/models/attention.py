"""Cross-attention between modality sequences."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class CrossAttentionBlock(nn.Module):
  """Queries from one stream attend to keys/values from other streams.

  Pre-LayerNorm residual block: x + MHA(LN(x), LN(ctx)), then x + MLP(LN(x)).
  Queries whose keys are all masked receive no attention update (never NaN).
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, x_mask, context, context_mask, *, train: bool):
    """x [B, Tq, H], x_mask [B, Tq] bool, context [B, Tk, H], context_mask [B, Tk] bool -> [B, Tq, H]."""
    width = x.shape[-1]
    attn_mask = nn.make_attention_mask(x_mask, context_mask)   # [B, 1, Tq, Tk]
    q = nn.LayerNorm(dtype=self.dtype, name="norm_q")(x)
    kv = nn.LayerNorm(dtype=self.dtype, name="norm_kv")(context)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.dropout,
        deterministic=not train, name="attention")(q, kv, mask=attn_mask)
    has_keys = jnp.any(context_mask, axis=-1)[:, None, None]   # [B, 1, 1]
    y = jnp.where(has_keys & x_mask[..., None], y, 0.0)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.LayerNorm(dtype=self.dtype, name="norm_mlp")(x)
    y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_in")(y)
    y = nn.gelu(y)
    y = nn.Dense(width, dtype=self.dtype, name="mlp_out")(y)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(y)
    return jnp.where(x_mask[..., None], x, 0.0)
