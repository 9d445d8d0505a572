"""Tests for the scan-based GRU encoder (multimodal_gru/models/gru.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal_gru.models import gru

BATCH, STEPS, IN_DIM, HIDDEN = 4, 7, 6, 5
LENGTHS = np.array([7, 3, 1, 5])


def random_torch_state_dict(rng, in_dim, hidden, num_layers, bidirectional):
  """A torch.nn.GRU-style state_dict of random numpy arrays."""
  state = {}
  for layer in range(num_layers):
    layer_in = in_dim if layer == 0 else hidden * (2 if bidirectional else 1)
    for suffix in ("", "_reverse") if bidirectional else ("",):
      state[f"weight_ih_l{layer}{suffix}"] = rng.uniform(-0.5, 0.5, (3 * hidden, layer_in))
      state[f"weight_hh_l{layer}{suffix}"] = rng.uniform(-0.5, 0.5, (3 * hidden, hidden))
      state[f"bias_ih_l{layer}{suffix}"] = rng.uniform(-0.5, 0.5, (3 * hidden,))
      state[f"bias_hh_l{layer}{suffix}"] = rng.uniform(-0.5, 0.5, (3 * hidden,))
  return {k: v.astype(np.float32) for k, v in state.items()}


def numpy_gru(x, lengths, state, num_layers, bidirectional):
  """Per-example, per-step float64 loop over torch.nn.GRU's equations."""
  sigmoid = lambda a: 1 / (1 + np.exp(-a))
  layer_input = x.astype(np.float64)
  batch, steps, _ = x.shape
  finals = []
  for layer in range(num_layers):
    direction_outputs = []
    for suffix in ("", "_reverse") if bidirectional else ("",):
      w_ih, w_hh, b_ih, b_hh = (state[f"{name}_l{layer}{suffix}"].astype(np.float64)
                                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
      hidden = w_hh.shape[1]
      outputs, final = np.zeros((batch, steps, hidden)), np.zeros((batch, hidden))
      for b in range(batch):
        h = np.zeros(hidden)
        order = range(lengths[b])
        for t in reversed(order) if suffix else order:
          gi, gh = w_ih @ layer_input[b, t] + b_ih, w_hh @ h + b_hh
          r = sigmoid(gi[:hidden] + gh[:hidden])
          z = sigmoid(gi[hidden:2 * hidden] + gh[hidden:2 * hidden])
          n = np.tanh(gi[2 * hidden:] + r * gh[2 * hidden:])
          h = (1 - z) * n + z * h
          outputs[b, t] = h
        final[b] = h
      direction_outputs.append(outputs)
      finals.append(final)
    layer_input = np.concatenate(direction_outputs, axis=-1)
  return layer_input, np.stack(finals)


@functools.cache
def jitted_apply(num_layers, bidirectional, **kwargs):
  """A jitted GRUEncoder.apply, shared between tests to save compilations."""
  return jax.jit(gru.GRUEncoder(HIDDEN, num_layers, bidirectional, **kwargs).apply)


def encoder_and_params(num_layers, bidirectional, seed=0):
  """(jitted apply, params from a random torch-style state_dict, that state_dict)."""
  state = random_torch_state_dict(np.random.default_rng(seed), IN_DIM, HIDDEN, num_layers,
                                  bidirectional)
  params = {"params": gru.torch_gru_to_params(state, num_layers, bidirectional)}
  return jitted_apply(num_layers, bidirectional), params, state


def random_inputs(seed=1, lengths=LENGTHS):
  x = np.random.default_rng(seed).normal(size=(len(lengths), STEPS, IN_DIM)).astype(np.float32)
  return x, np.asarray(lengths, np.int32)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_numpy_reference(num_layers, bidirectional):
  apply, params, state = encoder_and_params(num_layers, bidirectional)
  lengths = np.array([7, 3, 0, 5])  # includes an empty sequence
  x, lengths = random_inputs(lengths=lengths)
  outputs, final = apply(params, x, lengths)
  want_outputs, want_final = numpy_gru(x, lengths, state, num_layers, bidirectional)
  num_dirs = 2 if bidirectional else 1
  assert outputs.shape == (BATCH, STEPS, num_dirs * HIDDEN)
  assert final.shape == (num_layers * num_dirs, BATCH, HIDDEN)
  np.testing.assert_allclose(outputs, want_outputs, atol=1e-5)
  np.testing.assert_allclose(final, want_final, atol=1e-5)
  assert np.all(np.asarray(outputs)[2] == 0) and np.all(np.asarray(final)[:, 2] == 0)


def test_unroll_does_not_change_results(unroll=3):  # 3 does not divide the 7 steps
  apply, params, _ = encoder_and_params(2, True)
  x, lengths = random_inputs()
  want = apply(params, x, lengths)
  got = jitted_apply(2, True, unroll=unroll)(params, x, lengths)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_init_params_have_converter_layout():
  _, params, _ = encoder_and_params(2, True)
  x, lengths = random_inputs()
  init = jax.jit(gru.GRUEncoder(HIDDEN, 2, True).init)(jax.random.key(0), x, lengths)
  assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, params)
  kernel = init["params"]["layer_0"]["hidden_kernel"][1]  # reverse direction, [H, 3H]
  for gate in range(3):  # orthogonal per gate
    block = kernel[:, gate * HIDDEN:(gate + 1) * HIDDEN]
    np.testing.assert_allclose(block.T @ block, np.eye(HIDDEN), atol=1e-5)


def test_padding_is_ignored():
  apply, params, _ = encoder_and_params(2, True)
  x, lengths = random_inputs()
  valid = np.arange(STEPS)[None, :] < lengths[:, None]
  garbage = np.where(valid[..., None], x, 1e3 * np.random.default_rng(2).normal(size=x.shape))
  outputs, final = apply(params, x, lengths)
  garbage_outputs, garbage_final = apply(params, garbage.astype(np.float32), lengths)
  np.testing.assert_array_equal(outputs, garbage_outputs)
  np.testing.assert_array_equal(final, garbage_final)
  assert np.all(np.asarray(outputs)[~valid] == 0)
  # No gradient reaches padded inputs.
  grad_x = jax.jit(jax.grad(lambda x: jnp.sum(apply(params, x, lengths)[0] ** 2)))(x)
  assert np.all(np.asarray(grad_x)[~valid] == 0)
  assert np.any(np.asarray(grad_x)[valid] != 0)


def test_jit_matches_eager():
  _, params, _ = encoder_and_params(1, True)
  x, lengths = random_inputs()
  model = gru.GRUEncoder(HIDDEN, 1, True)
  eager = model.apply(params, x, lengths)
  jitted = jax.jit(model.apply)(params, x, lengths)
  for a, b in zip(jitted, eager):
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_custom_gradient_matches_autodiff(bidirectional):
  """The hand-written VJP against autodiff through the plain scan."""
  num_dirs = 2 if bidirectional else 1
  rng = np.random.default_rng(3)
  gate_inputs = tuple(jnp.asarray(rng.normal(size=(STEPS, num_dirs, BATCH, HIDDEN)), jnp.float32)
                      for _ in range(3))
  hidden_kernel = jnp.asarray(rng.normal(size=(num_dirs, HIDDEN, 3 * HIDDEN)) * 0.5, jnp.float32)
  hidden_bias = jnp.asarray(rng.normal(size=(num_dirs, HIDDEN)), jnp.float32)
  mask = np.arange(STEPS)[:, None, None, None] < np.array([7, 3, 0, 5])[None, None, :, None]
  mask = np.concatenate([mask, mask[::-1]], axis=1)[:, :num_dirs]  # padding at the end and front
  state_weights = jnp.asarray(rng.normal(size=(STEPS, num_dirs, BATCH, HIDDEN)), jnp.float32)
  final_weights = jnp.asarray(rng.normal(size=(num_dirs, BATCH, HIDDEN)), jnp.float32)

  def loss(recurrence):
    def fn(gate_inputs, hidden_kernel, hidden_bias):
      states, final = recurrence(gate_inputs, mask, hidden_kernel, hidden_bias)
      return jnp.sum(states * state_weights) + jnp.sum(jnp.tanh(final) * final_weights)
    return jax.jit(jax.grad(fn, argnums=(0, 1, 2)))

  def plain_scan(*args):
    final, states = gru._scan_forward(*args, dtype=jnp.float32, unroll=1)
    return states, final

  got = loss(gru.gru_recurrence)(gate_inputs, hidden_kernel, hidden_bias)
  want = loss(plain_scan)(gate_inputs, hidden_kernel, hidden_bias)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_gradients_are_finite_and_nonzero():
  apply, params, _ = encoder_and_params(2, True)
  x, lengths = random_inputs()
  grads = jax.jit(jax.grad(lambda p: jnp.mean(apply(p, x, lengths)[0] ** 2)))(params)
  for name, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(grad)), name
    assert np.any(grad != 0), name


def test_bfloat16_close_to_float32():
  apply, params, _ = encoder_and_params(2, True)
  x, lengths = random_inputs()
  outputs, final = apply(params, x, lengths)
  bf16 = gru.GRUEncoder(HIDDEN, 2, True, dtype=jnp.bfloat16)
  outputs16, final16 = jax.jit(bf16.apply)(params, x, lengths)
  assert outputs16.dtype == jnp.bfloat16 and final16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(outputs16, np.float32), outputs, atol=5e-2)
  np.testing.assert_allclose(np.asarray(final16, np.float32), final, atol=5e-2)
  grads = jax.jit(jax.grad(
      lambda p: jnp.mean(bf16.apply(p, x, lengths)[0].astype(jnp.float32) ** 2)))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.torch
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_matches_torch(num_layers, bidirectional):
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  module = torch.nn.GRU(IN_DIM, HIDDEN, num_layers=num_layers, bidirectional=bidirectional,
                        batch_first=True)
  state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
  params = {"params": gru.torch_gru_to_params(state, num_layers, bidirectional)}
  model = gru.GRUEncoder(HIDDEN, num_layers, bidirectional)
  x, lengths = random_inputs()
  output_weights = np.random.default_rng(4).normal(
      size=(BATCH, STEPS, HIDDEN * (2 if bidirectional else 1))).astype(np.float32)

  x_torch = torch.tensor(x, requires_grad=True)
  packed = torch.nn.utils.rnn.pack_padded_sequence(
      x_torch, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
  packed_out, want_final = module(packed)
  want_outputs, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True,
                                                          total_length=STEPS)
  (torch.sum(want_outputs * torch.tensor(output_weights)) + torch.sum(want_final)).backward()

  def loss(params, x):
    outputs, final = model.apply(params, x, lengths)
    return jnp.sum(outputs * output_weights) + jnp.sum(final), (outputs, final)

  (grad_params, grad_x), (outputs, final) = jax.jit(
      jax.grad(loss, argnums=(0, 1), has_aux=True))(params, x)
  np.testing.assert_allclose(outputs, want_outputs.detach().numpy(), atol=1e-5)
  np.testing.assert_allclose(final, want_final.detach().numpy(), atol=1e-5)
  valid = np.arange(STEPS)[None, :] < lengths[:, None]
  assert np.all(np.asarray(outputs)[~valid] == 0)
  # Gradients: the hand-written VJP against torch's autograd.
  np.testing.assert_allclose(grad_x, x_torch.grad.numpy(), atol=1e-4)
  grad_hidden_kernel = grad_params["params"]["layer_0"]["hidden_kernel"][0]
  np.testing.assert_allclose(grad_hidden_kernel, module.weight_hh_l0.grad.numpy().T, atol=1e-4)
