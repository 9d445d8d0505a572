"""Model: every fusion variant's shapes and masks, attention edge cases, toggles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal_gru.config_base import get_base_config
from multimodal_gru.models import fusion
from multimodal_gru.models.attention import CrossAttentionBlock
from multimodal_gru.models.fusion.base import align_steps
from multimodal_gru.models.model import build_model

T = dict(video=6, image=10, text=4)
D = dict(video=12, image=10, text=8)


def small_config(task="classification", fusion_name="xattn_bidir", **model):
  c = get_base_config()
  c.task = task
  c.data.num_classes = 3
  for m in T:
    c.data.max_steps[m] = T[m]
    c.data.dims[m] = D[m]
  c.model.fusion = fusion_name
  c.model.hidden_dim = 16
  c.model.mlp_dim = 24
  c.model.num_heads = 2
  c.model.update(model)
  return c


def random_batch(rng, batch_size=3, lengths=None):
  """Random features; example i has lengths[m][i] real steps and garbage after them."""
  lengths = lengths or dict(video=[6, 3, 1], image=[10, 5, 2], text=[4, 2, 1])
  batch = {}
  for m in T:
    batch[m] = rng.normal(size=(batch_size, T[m], D[m])).astype(np.float32)
    batch[f"{m}_mask"] = np.arange(T[m])[None] < np.array(lengths[m])[:, None]
  batch["label"] = rng.integers(0, 3, batch_size).astype(np.int32)
  batch["step_label"] = rng.integers(0, 3, (batch_size, T["image"])).astype(np.int32)
  batch["va"] = rng.uniform(-1, 1, (batch_size, T["image"], 2)).astype(np.float32)
  batch["step_valid"] = batch["image_mask"].copy()
  batch["example_mask"] = np.ones(batch_size, bool)
  return batch


def init_apply(config, batch, seed=0):
  """Returns (model, params, eval outputs, jitted eval apply(params, batch))."""
  model = build_model(config)
  params = jax.jit(lambda b: model.init(jax.random.key(seed), b, train=False)["params"])(batch)
  apply = jax.jit(lambda p, b: model.apply({"params": p}, b, train=False))
  return model, params, apply(params, batch), apply


def test_registry_lists_every_variant():
  assert set(fusion.available()) == {
      "xattn_bidir", "xattn_image", "concat", "gated", "video_only", "image_only", "text_only"}
  with pytest.raises(ValueError, match="must be one of"):
    fusion.get_fusion("nope")


@pytest.mark.parametrize("name,task", [(n, "classification") for n in fusion.available()]
                         + [("xattn_bidir", "regression"), ("text_only", "regression")])
def test_fusion_variant_shapes_and_padding(name, task):
  rng = np.random.default_rng(0)
  batch = random_batch(rng)
  config = small_config(task, name)
  model, params, out, apply = init_apply(config, batch)
  if task == "classification":
    assert out["logits"].shape == (3, 3)
    assert out["step_logits"].shape == (3, T["image"], 3)
    key, step_key = "logits", "step_logits"
  else:
    assert out["va"].shape == (3, 2) and out["step_va"].shape == (3, T["image"], 2)
    assert np.all(np.abs(np.asarray(out["va"])) <= 1.0)
    key, step_key = "va", "step_va"
  streams = model.streams()
  assert set(out["recon"]) == set(streams)
  for m in streams:
    assert out["recon"][m].shape == (3, T[m], D[m])
  # Unimodal variants have parameters for their own stream only.
  expected = {f"{m}_encoder" for m in streams}
  assert {k for k in params if k.endswith("_encoder")} == expected
  # Garbage at padded steps changes nothing at real steps.
  garbage = dict(batch)
  for m in T:
    pad = ~batch[f"{m}_mask"][..., None]
    garbage[m] = np.where(pad, 1e3 * rng.normal(size=batch[m].shape), batch[m]).astype(np.float32)
  out2 = apply(params, garbage)
  np.testing.assert_allclose(out2[key], out[key], atol=1e-5)
  valid = batch["image_mask"][..., None]
  np.testing.assert_allclose(np.where(valid, out2[step_key], 0), np.where(valid, out[step_key], 0), atol=1e-5)


def test_unimodal_ignores_other_streams():
  rng = np.random.default_rng(1)
  batch = random_batch(rng)
  model, params, out, apply = init_apply(small_config(fusion_name="video_only"), batch)
  changed = dict(batch, image=batch["image"] + 5.0, text=batch["text"] * -3.0)
  np.testing.assert_allclose(apply(params, changed)["logits"],
                             out["logits"], atol=1e-6)


def test_cross_attention_uses_other_streams():
  rng = np.random.default_rng(2)
  batch = random_batch(rng)
  for name in ["xattn_bidir", "xattn_image", "concat", "gated"]:
    model, params, out, apply = init_apply(small_config(fusion_name=name), batch)
    changed = dict(batch, text=batch["text"] + rng.normal(size=batch["text"].shape).astype(np.float32))
    diff = np.abs(apply(params, changed)["logits"] - out["logits"]).max()
    assert diff > 1e-4, name


def test_cross_attention_fully_masked_keys_is_finite():
  block = CrossAttentionBlock(num_heads=2, mlp_dim=8)
  x = jnp.ones((2, 3, 4))
  x_mask = jnp.array([[True, True, False], [True, False, False]])
  ctx = jnp.ones((2, 5, 4))
  ctx_mask = jnp.array([[True] * 5, [False] * 5])   # example 1 has no keys at all
  params = block.init(jax.random.key(0), x, x_mask, ctx, ctx_mask, train=False)

  def f(x):
    return block.apply(params, x, x_mask, ctx, ctx_mask, train=False)

  y = f(x)
  assert np.isfinite(np.asarray(y)).all()
  assert np.all(np.asarray(y)[~np.asarray(x_mask)] == 0)
  grad = jax.grad(lambda x: f(x).sum())(x)
  assert np.isfinite(np.asarray(grad)).all()


def test_empty_stream_in_one_example_is_finite():
  rng = np.random.default_rng(3)
  batch = random_batch(rng, lengths=dict(video=[6, 0, 1], image=[10, 5, 2], text=[0, 2, 0]))
  for name in ["xattn_bidir", "gated", "text_only"]:
    _, _, out, _ = init_apply(small_config(fusion_name=name), batch)
    assert np.isfinite(np.asarray(out["logits"])).all(), name


def test_align_steps_by_relative_position():
  x = jnp.arange(4, dtype=jnp.float32)[None, :, None] + 1          # steps 1..4
  mask = jnp.array([[True, True, False, False]])                    # 2 real source steps
  target = jnp.array([[True, True, True, True, False, False]])      # 4 real target steps
  y = align_steps(x, mask, target)[0, :, 0]
  np.testing.assert_array_equal(np.asarray(y), [1, 1, 2, 2, 0, 0])


def test_augmentation_only_in_training_and_toggles():
  rng = np.random.default_rng(4)
  batch = random_batch(rng)
  config = small_config(dropout=0.0)
  model, params, out, apply = init_apply(config, batch)
  # Eval is deterministic and augmentation-free.
  np.testing.assert_array_equal(apply(params, batch)["logits"], out["logits"])
  train_out = jax.jit(lambda p, b: model.apply(
      {"params": p}, b, train=True, rngs={"dropout": jax.random.key(0), "augment": jax.random.key(1)}))(params, batch)
  assert np.abs(train_out["logits"] - out["logits"]).max() > 1e-4
  config.augment.enabled = False
  model2 = build_model(config)
  train_out2 = jax.jit(lambda p, b: model2.apply(
      {"params": p}, b, train=True, rngs={"dropout": jax.random.key(0)}))(params, batch)
  np.testing.assert_allclose(train_out2["logits"], out["logits"], atol=1e-6)


def test_no_gru_and_no_autoencoder_and_bfloat16():
  batch = random_batch(np.random.default_rng(5))
  model, params, out, apply = init_apply(small_config(use_gru=False), batch)
  assert not any("gru" in k for k in jax.tree_util.keystr(params).split("'"))
  config = small_config()
  config.autoencoder.enabled = False
  _, _, out, _ = init_apply(config, batch)
  assert "recon" not in out
  config = small_config(dtype="bfloat16")
  _, params, out16, _ = init_apply(config, batch)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  _, _, out32, _ = init_apply(small_config(), batch)
  assert out16["logits"].dtype == jnp.float32
  np.testing.assert_allclose(out16["logits"], out32["logits"], atol=0.1)
