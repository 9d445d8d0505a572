"""Masked losses against numpy formulas; masking, empty masks and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal_gru import losses


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_ccc(x, y):
  cov = np.mean((x - x.mean()) * (y - y.mean()))
  return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_numpy(rng, smoothing):
  b, t, k = 4, 6, 3
  logits = rng.normal(size=(b, t, k)).astype(np.float32)
  labels = rng.integers(0, k, size=(b, t))
  mask = rng.random((b, t)) < 0.6
  targets = np.eye(k)[labels] * (1 - smoothing) + smoothing / k
  per = -(targets * _np_log_softmax(logits.astype(np.float64))).sum(-1)
  want = per[mask].mean()
  got = jax.jit(losses.softmax_cross_entropy, static_argnums=3)(logits, labels, mask, smoothing)
  assert got.shape == () and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_soft_cross_entropy_matches_numpy(rng):
  logits = rng.normal(size=(8, 4)).astype(np.float32)
  targets = rng.dirichlet(np.ones(4), size=8)
  mask = np.array([1, 1, 0, 1, 0, 1, 1, 1], bool)
  want = -(targets * _np_log_softmax(logits.astype(np.float64))).sum(-1)[mask].mean()
  np.testing.assert_allclose(losses.soft_cross_entropy(logits, targets, mask), want, rtol=1e-5)


def test_ccc_and_mse_match_numpy(rng):
  b, t = 5, 10
  target = np.tanh(rng.normal(size=(b, t, 2))).astype(np.float32)
  pred = (0.5 * target + 0.3 * rng.normal(size=(b, t, 2)) + 0.2).astype(np.float32)
  mask = rng.random((b, t)) < 0.7
  p, y = pred[mask].astype(np.float64), target[mask].astype(np.float64)
  want_ccc = np.array([_np_ccc(p[:, i], y[:, i]) for i in range(2)])
  np.testing.assert_allclose(losses.concordance_correlation(pred, target, mask), want_ccc,
                             rtol=1e-5)
  np.testing.assert_allclose(jax.jit(losses.ccc_loss)(pred, target, mask),
                             1 - want_ccc.mean(), rtol=1e-5)
  np.testing.assert_allclose(losses.masked_mse(pred, target, mask), ((p - y) ** 2).mean(),
                             rtol=1e-5)


def test_reconstruction_loss_matches_numpy(rng):
  recon = rng.normal(size=(3, 7, 5)).astype(np.float32)
  target = rng.normal(size=(3, 7, 5)).astype(np.float32)
  mask = np.arange(7)[None] < np.array([[7], [3], [1]])
  want = ((recon - target) ** 2)[mask].mean()
  np.testing.assert_allclose(losses.reconstruction_loss(recon, target, mask), want, rtol=1e-5)


def _all_losses(logits, labels, probs, pred, target, mask):
  return jnp.stack([
      losses.softmax_cross_entropy(logits, labels, mask, label_smoothing=0.1),
      losses.soft_cross_entropy(logits, probs, mask),
      losses.ccc_loss(pred, target, mask),
      losses.masked_mse(pred, target, mask),
      losses.reconstruction_loss(pred, target, mask),
  ])


def _inputs(rng, b=4, t=6, k=3):
  return dict(
      logits=rng.normal(size=(b, t, k)).astype(np.float32),
      labels=rng.integers(0, k, size=(b, t)),
      probs=rng.dirichlet(np.ones(k), size=(b, t)).astype(np.float32),
      pred=rng.normal(size=(b, t, 2)).astype(np.float32),
      target=rng.normal(size=(b, t, 2)).astype(np.float32),
      mask=rng.random((b, t)) < 0.5)


def test_garbage_in_masked_positions_changes_nothing(rng):
  x = _inputs(rng)
  masked = ~x["mask"]
  garbage = dict(x)
  for key in ("logits", "probs", "pred", "target"):
    garbage[key] = np.where(masked[..., None], np.float32(np.nan), x[key])
  garbage["labels"] = np.where(masked, 1000, x["labels"])
  clean_value = _all_losses(**x)
  np.testing.assert_array_equal(_all_losses(**garbage), clean_value)

  def total(logits, pred, **rest):
    return jnp.sum(_all_losses(logits=logits, pred=pred, **rest))

  rest = {k: garbage[k] for k in ("labels", "probs", "target", "mask")}
  grads = jax.grad(total, argnums=(0, 1))(garbage["logits"], garbage["pred"], **rest)
  for g in grads:
    assert np.isfinite(g).all()
    assert (np.asarray(g)[masked] == 0).all()


def test_empty_mask_gives_zero_and_finite_gradients(rng):
  x = _inputs(rng)
  x["mask"] = np.zeros_like(x["mask"])
  np.testing.assert_array_equal(_all_losses(**x), np.zeros(5, np.float32))

  def total(logits, pred, **rest):
    return jnp.sum(_all_losses(logits=logits, pred=pred, **rest))

  rest = {k: x[k] for k in ("labels", "probs", "target", "mask")}
  grads = jax.grad(total, argnums=(0, 1))(x["logits"], x["pred"], **rest)
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)


def test_ccc_loss_finite_for_constant_predictions(rng):
  target = rng.normal(size=(4, 8, 2)).astype(np.float32)
  pred = np.zeros_like(target)
  mask = np.ones((4, 8), bool)
  value, grad = jax.value_and_grad(losses.ccc_loss)(pred, target, mask)
  assert np.isfinite(value) and np.isfinite(grad).all()
  np.testing.assert_allclose(value, 1.0, atol=1e-6)   # CCC of a constant is 0
  assert np.abs(grad).max() > 0                       # still a learning signal


def test_bfloat16_inputs_are_computed_in_float32(rng):
  logits = rng.normal(size=(16, 5)).astype(np.float32)
  labels = rng.integers(0, 5, size=16)
  mask = np.ones(16, bool)
  lo = losses.softmax_cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels, mask)
  assert lo.dtype == jnp.float32
  hi = losses.softmax_cross_entropy(logits, labels, mask)
  np.testing.assert_allclose(lo, hi, rtol=2e-2)
