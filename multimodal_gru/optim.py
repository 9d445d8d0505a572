"""Optimizer: AdamW with linear warmup + cosine decay and global-norm clipping."""

import jax
import optax


def learning_rate_schedule(config) -> optax.Schedule:
  o = config.optim
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=o.learning_rate,
      warmup_steps=min(o.warmup_steps, max(config.train.num_steps - 1, 0)),
      decay_steps=max(config.train.num_steps, 1), end_value=0.01 * o.learning_rate)


def make_optimizer(config) -> optax.GradientTransformation:
  """Weight decay applies to matrices only (not biases or LayerNorm scales)."""
  o = config.optim
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  return optax.chain(
      optax.clip_by_global_norm(o.grad_clip_norm),
      optax.adamw(learning_rate_schedule(config), b1=o.b1, b2=o.b2,
                  weight_decay=o.weight_decay, mask=decay_mask))
