"""Aff-Wild2 valence/arousal: per-frame regression, metric CCC over all frames.

  python -m multimodal_gru.prepare --dataset=affwild2 --manual_dir=/path/to/Aff-Wild2 --out=/data/affwild2_features
  python -m multimodal_gru.main --config=configs/affwild2.py --workdir=DIR --config.data.dir=/data/affwild2_features

The loss is 1 - CCC on the per-step outputs (frame level, the challenge metric)
plus the clip-level head; all sizes are ours.
"""

import os

from multimodal_gru.config_base import get_base_config


def get_config():
  c = get_base_config()
  c.task = "regression"
  c.data.dir = os.environ.get("MGRU_AFFWILD2_DATA", "")
  c.data.max_steps.video, c.data.max_steps.image, c.data.max_steps.text = 16, 32, 8
  c.data.dims.video, c.data.dims.image, c.data.dims.text = 1024, 768, 384

  c.model.hidden_dim = 256
  c.model.mlp_dim = 512
  c.loss.step_weight = 1.0     # per-frame valence/arousal is the task
  c.loss.clip_weight = 0.2
  c.loss.mse_weight = 0.1

  c.train.batch_size = 64
  c.train.num_steps = 20_000
  c.train.eval_every = 2000
  c.train.checkpoint_every = 1000
  return c


def get_sweep():
  """Paper-style ablation (python -m multimodal_gru.sweep --config=THIS_FILE --workdir=ROOT).

  Unimodal baselines, concat, gated, image-only and bidirectional cross-attention,
  each with and without feature augmentation and the autoencoder, 3 seeds: 84 runs.
  """
  from multimodal_gru import grid
  return grid.product(
      grid.sweep("model.fusion", ["video_only", "image_only", "text_only", "concat", "gated",
                                  "xattn_image", "xattn_bidir"]),
      grid.sweep("augment.enabled", [True, False]),
      grid.sweep("autoencoder.enabled", [True, False]),
      grid.sweep("seed", [0, 1, 2]))
