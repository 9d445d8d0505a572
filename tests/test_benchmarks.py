"""The PyTorch baseline of benchmarks/train_step.py computes what our model computes."""

import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference, train_step   # pylint: disable=g-import-not-at-top


@pytest.mark.torch
@pytest.mark.slow   # about 2 min: compiles the full model and its gradient
def test_torch_reference_matches_ours_on_a_small_dvd_model():
  config = train_step.make_config("dvd")
  config.model.hidden_dim, config.model.mlp_dim, config.model.num_heads = 16, 32, 2
  config.data.dims.video, config.data.dims.image, config.data.dims.text = 24, 20, 12
  diffs = torch_reference.check_equivalence(config, train_step.synthetic_batch(config, 4, seed=1))
  assert set(diffs) >= {"logits", "step_logits", "loss", "grad_relative"}
  for name, diff in diffs.items():
    assert diff < 1e-4, (name, diffs)
