"""Masked training losses (jax.numpy, jit-able).

Every loss takes a boolean-like `mask` over its leading dims and returns a
float32 scalar. Masked-out positions are replaced by zeros *before* any
arithmetic, so whatever they hold (padding, NaN, -5 "unannotated" values)
changes neither the loss nor its gradients. An empty mask gives 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_EPS = 1e-8


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of `values` over True positions of `mask` (same shape); 0 if none."""
  mask = mask.astype(bool)
  count = jnp.sum(mask, dtype=jnp.float32)
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1.0)


def _zero_masked(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Zeros out positions of x [..., D] where mask [...] is False."""
  return jnp.where(mask.astype(bool)[..., None], x, jnp.zeros((), x.dtype))


def soft_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
  """Cross entropy against target distributions (e.g. mixup labels).

  Args:
    logits: [..., K] unnormalised scores.
    targets: [..., K] probabilities (rows sum to 1).
    mask: [...] True where the loss counts.
  Returns:
    Scalar mean over masked positions.
  """
  logits = _zero_masked(logits.astype(jnp.float32), mask)
  targets = _zero_masked(targets.astype(jnp.float32), mask)
  per_position = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  return _masked_mean(per_position, mask)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                          label_smoothing: float = 0.0) -> jax.Array:
  """Cross entropy with integer labels, optionally label-smoothed.

  Args:
    logits: [..., K].
    labels: [...] int in [0, K) where mask is True (anything elsewhere).
    mask: [...].
    label_smoothing: mass spread uniformly over the K classes.
  Returns:
    Scalar mean over masked positions.
  """
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return soft_cross_entropy(logits, targets, mask)


def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean squared error over masked positions and all trailing values.

  Args:
    pred, target: [..., D].
    mask: [...].
  Returns:
    Scalar: sum of squared errors / (number of masked positions * D).
  """
  pred = _zero_masked(pred.astype(jnp.float32), mask)
  target = _zero_masked(target.astype(jnp.float32), mask)
  per_position = jnp.mean(jnp.square(pred - target), axis=-1)
  return _masked_mean(per_position, mask)


def reconstruction_loss(recon: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Autoencoder loss: MSE over real steps and feature dims. [B, T, D], [B, T, D], [B, T]."""
  return masked_mse(recon, target, mask)


def concordance_correlation(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """CCC per trailing column over all masked positions of the batch.

  Args:
    pred, target: [..., C].
    mask: [...].
  Returns:
    [C] CCC with population moments; epsilon in the denominator keeps constant
    series finite (their CCC is 0).
  """
  mask_f = mask.astype(jnp.float32)[..., None]
  pred = _zero_masked(pred.astype(jnp.float32), mask)
  target = _zero_masked(target.astype(jnp.float32), mask)
  reduce_axes = tuple(range(pred.ndim - 1))
  n = jnp.maximum(jnp.sum(mask_f, axis=reduce_axes), 1.0)
  mean_p = jnp.sum(pred * mask_f, axis=reduce_axes) / n
  mean_t = jnp.sum(target * mask_f, axis=reduce_axes) / n
  dp = (pred - mean_p) * mask_f
  dt = (target - mean_t) * mask_f
  var_p = jnp.sum(dp * dp, axis=reduce_axes) / n
  var_t = jnp.sum(dt * dt, axis=reduce_axes) / n
  cov = jnp.sum(dp * dt, axis=reduce_axes) / n
  return 2.0 * cov / (var_p + var_t + jnp.square(mean_p - mean_t) + _EPS)


def ccc_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """1 - mean over (valence, arousal) of the batch CCC; 0 for an empty mask.

  Args:
    pred, target: [..., 2].
    mask: [...].
  """
  ccc = concordance_correlation(pred, target, mask)
  return jnp.where(jnp.any(mask), 1.0 - jnp.mean(ccc), 0.0)
