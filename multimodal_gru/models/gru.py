"""Scan-based GRU encoder with torch.nn.GRU semantics on padded batches.

Equations (torch.nn.GRU, gate order r, z, n; initial state 0):
  r = σ(W_ir x + b_ir + W_hr h + b_hr)
  z = σ(W_iz x + b_iz + W_hz h + b_hz)
  n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
  h' = (1 - z) * n + z * h

Parameters of layer k (`layer_{k}`; E = number of directions, index 0 is the
forward direction and index 1 the reverse one):
  input_kernel   [D, E, 3H]   W_i^T, gates (r, z, n) along the last axis
  input_bias     [E, 3H]      b_i + (b_hr, b_hz, 0): the r and z hidden biases
                              only ever add to x W_i, so they are folded in
  hidden_kernel  [E, H, 3H]   W_h^T
  hidden_bias    [E, H]       b_hn (it sits inside r * (...), so it stays apart)

Speed: the input projection of all steps and both directions is one matmul
outside the recurrence; a scan step does one batched [E, B, H] x [E, H, 3H]
matmul plus the gate arithmetic for both directions at once (on one CPU core
as fast as two separate scans; on accelerators it halves the number of
sequential steps). The reverse direction reads the time-flipped sequence, in
which padding comes first: a masked step keeps the carry, so it stays 0
through the padding and then runs over each sequence's real steps backwards,
exactly like torch's packed sequences. The gradient is hand-written
(`jax.custom_vjp`): the backward scan does one [E, B, 3H] x [E, 3H, H] matmul
per step, and the hidden-kernel gradient is a single matmul over all steps
afterwards, instead of one small outer product per step. A consequence:
forward-mode differentiation (jax.jvp, jax.jacfwd) of the recurrence is not
supported; reverse mode (jax.grad) is.

Mixed precision: with dtype=bfloat16 the matmuls take bfloat16 operands and
accumulate in float32; the carry and the gate arithmetic stay float32 (a
bfloat16 carry drifts over long sequences), and so do the activations
passed between stacked layers. The encoder's outputs are cast to `dtype`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _scan_forward(gate_inputs, mask, hidden_kernel, hidden_bias, dtype, unroll,
                  keep_gates=False):
  """The recurrence as a plain lax.scan (also the autodiff reference in tests).

  Returns (final [E, B, H], states [T, E, B, H]) and, with keep_gates, the
  per-step (r, z, n, W_hn h + b_hn), each [T, E, B, H], for the backward pass.
  """
  _, num_dirs, batch, hidden = gate_inputs[0].shape
  w_h = hidden_kernel.astype(dtype)
  b_hn = hidden_bias[:, None, :]

  def step(h, inputs):
    i_r, i_z, i_n, valid = inputs
    gh = jnp.einsum("ebh,ehk->ebk", h.astype(dtype), w_h,
                    preferred_element_type=jnp.float32)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    z = jax.nn.sigmoid(i_z + h_z)
    hn = h_n + b_hn
    n = jnp.tanh(i_n + r * hn)
    h = jnp.where(valid, n + z * (h - n), h)
    return h, ((h, r, z, n, hn) if keep_gates else h)

  h0 = jnp.zeros((num_dirs, batch, hidden), jnp.float32)
  return jax.lax.scan(step, h0, (*gate_inputs, mask), unroll=unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def gru_recurrence(gate_inputs: tuple[jax.Array, jax.Array, jax.Array], mask: jax.Array,
                   hidden_kernel: jax.Array, hidden_bias: jax.Array,
                   dtype: Any = jnp.float32, unroll: int = 1):
  """Runs E independent GRU recurrences in one scan.

  Args:
    gate_inputs: (r, z, n) parts of x W_i + input_bias, each [T, E, B, H]
      float32. Separate arrays rather than one [T, E, B, 3H]: XLA:CPU does not
      vectorize a step whose fused gate math slices the scanned input along
      its last axis (about 5x slower gates, measured).
    mask: [T, E, B, 1] bool, True at real steps; other steps keep the carry.
    hidden_kernel: [E, H, 3H] float32.
    hidden_bias: [E, H] float32 (b_hn).
    dtype: matmul operand dtype (static).
    unroll: scan unroll factor (static).

  Returns:
    states [T, E, B, H] float32 (the carry after each step; at masked steps
    the unchanged carry) and final [E, B, H] float32 (the carry at the end).
  """
  final, states = _scan_forward(gate_inputs, mask, hidden_kernel, hidden_bias, dtype, unroll)
  return states, final


def _recurrence_fwd(gate_inputs, mask, hidden_kernel, hidden_bias, dtype, unroll):
  final, (states, r, z, n, hn) = _scan_forward(
      gate_inputs, mask, hidden_kernel, hidden_bias, dtype, unroll, keep_gates=True)
  return (states, final), (states, r, z, n, hn, mask, hidden_kernel)


def _recurrence_bwd(dtype, unroll, residuals, cotangents):
  states, r, z, n, hn, mask, hidden_kernel = residuals
  d_states, d_final = cotangents
  hidden = hidden_kernel.shape[1]
  prev_states = jnp.concatenate([jnp.zeros_like(states[:1]), states[:-1]], axis=0)
  w_h_t = jnp.swapaxes(hidden_kernel, 1, 2).astype(dtype)  # [E, 3H, H]

  def step(dh, inputs):
    d_state, h_prev, r, z, n, hn, valid = inputs
    dh = dh + d_state
    da_n = jnp.where(valid, dh * (1 - z) * (1 - n * n), 0.0)  # d(pre-tanh n)
    da_r = jnp.where(valid, da_n * hn * r * (1 - r), 0.0)     # d(pre-sigmoid r)
    da_z = jnp.where(valid, dh * (h_prev - n) * z * (1 - z), 0.0)
    d_gh = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)  # d(h W_h), [E, B, 3H]
    dh_prev = jnp.einsum("ebk,ekh->ebh", d_gh.astype(dtype), w_h_t,
                         preferred_element_type=jnp.float32)
    dh_prev = jnp.where(valid, dh_prev + dh * z, dh)
    return dh_prev, (d_gh, da_n)

  _, (d_gh, da_n) = jax.lax.scan(
      step, d_final, (d_states, prev_states, r, z, n, hn, mask), reverse=True, unroll=unroll)
  d_gate_inputs = (d_gh[..., :hidden], d_gh[..., hidden:2 * hidden], da_n)
  d_hidden_kernel = jnp.einsum("tebh,tebk->ehk", prev_states.astype(dtype), d_gh.astype(dtype),
                               preferred_element_type=jnp.float32)
  d_hidden_bias = jnp.sum(d_gh[..., 2 * hidden:], axis=(0, 2))
  return d_gate_inputs, None, d_hidden_kernel, d_hidden_bias


gru_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _orthogonal_per_gate(key, shape, dtype=jnp.float32):
  """[E, H, 3H] hidden kernel: an orthogonal [H, H] block per direction and gate."""
  num_dirs, hidden, _ = shape
  # lax.map, not vmap: a batched QR splits across jaxlib's CPU thread pool and deadlocks
  # when every (simulated) device initialises at once.
  blocks = jax.lax.map(lambda k: nn.initializers.orthogonal()(k, (hidden, hidden), dtype),
                       jax.random.split(key, num_dirs * 3))
  return blocks.reshape(num_dirs, 3, hidden, hidden).transpose(0, 2, 1, 3).reshape(shape)


class GRULayer(nn.Module):
  """One GRU layer, forward or bidirectional, on time-major padded inputs."""
  hidden_dim: int
  bidirectional: bool = False
  dtype: Any = jnp.float32
  unroll: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array):
    """x [T, B, D]; mask [T, B] bool, True at real steps (padding at the end).

    Returns outputs [T, B, E * H] float32 (0 at padded steps) and final
    [E, B, H] float32.
    """
    num_steps, batch, in_dim = x.shape
    num_dirs, hidden = 2 if self.bidirectional else 1, self.hidden_dim
    input_kernel = self.param("input_kernel", nn.initializers.lecun_normal(0, -1, batch_axis=1),
                              (in_dim, num_dirs, 3 * hidden))
    input_bias = self.param("input_bias", nn.initializers.zeros_init(), (num_dirs, 3 * hidden))
    hidden_kernel = self.param("hidden_kernel", _orthogonal_per_gate,
                               (num_dirs, hidden, 3 * hidden))
    hidden_bias = self.param("hidden_bias", nn.initializers.zeros_init(), (num_dirs, hidden))

    projected = jnp.einsum("tbd,dek->tbek", x.astype(self.dtype), input_kernel.astype(self.dtype),
                           preferred_element_type=jnp.float32) + input_bias  # [T, B, E, 3H]
    mask = mask[:, :, None]  # [T, B, 1]
    if self.bidirectional:  # the reverse direction runs on the time-flipped sequence
      projected = jnp.stack([projected[:, :, 0], projected[::-1, :, 1]], axis=1)
      dir_mask = jnp.stack([mask, mask[::-1]], axis=1)
    else:
      projected, dir_mask = projected.transpose(0, 2, 1, 3), mask[:, None]
    gate_inputs = tuple(jnp.split(projected, 3, axis=-1))  # r, z, n: [T, E, B, H] each
    states, final = gru_recurrence(gate_inputs, dir_mask, hidden_kernel, hidden_bias,
                                   self.dtype, self.unroll)  # [T, E, B, H], [E, B, H]
    if self.bidirectional:
      outputs = jnp.concatenate([states[:, 0], states[::-1, 1]], axis=-1)
    else:
      outputs = states[:, 0]
    return jnp.where(mask, outputs, 0.0), final


class GRUEncoder(nn.Module):
  """Stacked (bi)directional GRU over padded sequences, torch.nn.GRU semantics.

  Attributes:
    hidden_dim: H, state size per direction.
    num_layers: stacked layers; layer k reads layer k-1's (concatenated) outputs.
    bidirectional: add a reverse direction per layer.
    dtype: compute dtype of the matmuls; parameters are float32.
    unroll: scan unroll factor (a speed knob only).
  """
  hidden_dim: int
  num_layers: int = 1
  bidirectional: bool = False
  dtype: Any = jnp.float32
  unroll: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array):
    """Encodes a padded batch.

    Args:
      x: [B, T, D]; steps at or after `lengths[b]` are ignored.
      lengths: int [B], the number of real steps per sequence (0..T).

    Returns:
      outputs: [B, T, E * H] in `dtype`, directions concatenated (forward
        first); exactly 0 at padded steps.
      final: [num_layers * E, B, H] in `dtype`, ordered like torch's h_n (layer 0
        forward, layer 0 reverse, layer 1 forward, ...): the state after the
        last real step (forward) or after step 0 (reverse); 0 for empty
        sequences.
    """
    num_steps = x.shape[1]
    mask = jnp.arange(num_steps)[:, None] < jnp.asarray(lengths)[None, :]  # [T, B]
    h = jnp.swapaxes(x, 0, 1)  # time-major from here on
    finals = []
    for layer in range(self.num_layers):
      h, final = GRULayer(self.hidden_dim, self.bidirectional, self.dtype, self.unroll,
                          name=f"layer_{layer}")(h, mask)
      finals.append(final)
    outputs, final = jnp.swapaxes(h, 0, 1), jnp.concatenate(finals, axis=0)
    return outputs.astype(self.dtype), final.astype(self.dtype)


def torch_gru_to_params(state_dict: Mapping[str, np.ndarray], num_layers: int,
                        bidirectional: bool) -> dict:
  """Converts a torch.nn.GRU(batch_first=True) state_dict to GRUEncoder params.

  Args:
    state_dict: numpy arrays keyed weight_ih_l{k} [3H, D], weight_hh_l{k}
      [3H, H], bias_ih_l{k} [3H], bias_hh_l{k} [3H], plus the same keys with a
      `_reverse` suffix when bidirectional.
    num_layers: number of layers.
    bidirectional: whether the torch module is bidirectional.

  Returns:
    The inner params dict; use as `GRUEncoder.apply({"params": params}, ...)`.
  """
  suffixes = ("", "_reverse") if bidirectional else ("",)
  params = {}
  for layer in range(num_layers):
    parts = {"input_kernel": [], "input_bias": [], "hidden_kernel": [], "hidden_bias": []}
    for suffix in suffixes:
      get = lambda name: np.asarray(state_dict[f"{name}_l{layer}{suffix}"], np.float32)
      w_ih, w_hh, b_ih, b_hh = get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")
      hidden = w_hh.shape[1]
      parts["input_kernel"].append(w_ih.T)
      folded_hidden_bias = np.concatenate([b_hh[:2 * hidden], np.zeros(hidden, np.float32)])
      parts["input_bias"].append(b_ih + folded_hidden_bias)
      parts["hidden_kernel"].append(w_hh.T)
      parts["hidden_bias"].append(b_hh[2 * hidden:])
    params[f"layer_{layer}"] = {
        "input_kernel": np.stack(parts["input_kernel"], axis=1),  # [D, E, 3H]
        "input_bias": np.stack(parts["input_bias"]),               # [E, 3H]
        "hidden_kernel": np.stack(parts["hidden_kernel"]),         # [E, H, 3H]
        "hidden_bias": np.stack(parts["hidden_bias"]),             # [E, H]
    }
  return params
