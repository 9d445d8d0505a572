"""DVD violence detection: clip- and frame-level classification (violent / non-violent).

Prepare the data first (DVD is distributed under an EULA; see the README):
  python -m multimodal_gru.prepare --dataset=dvd --manual_dir=/path/to/DVD --out=/data/dvd_features
  python -m multimodal_gru.main --config=configs/dvd.py --workdir=DIR --config.data.dir=/data/dvd_features

Feature widths follow the default extractors: I3D Mixed_5c (1024), CLIP ViT-B/32
pooled (768), all-MiniLM-L6-v2 (384). All sizes are ours; the paper gives none.
"""

import os

from multimodal_gru.config_base import get_base_config


def get_config():
  c = get_base_config()
  c.task = "classification"
  c.data.dir = os.environ.get("MGRU_DVD_DATA", "")
  c.data.num_classes = 2
  c.data.max_steps.video, c.data.max_steps.image, c.data.max_steps.text = 16, 32, 8
  c.data.dims.video, c.data.dims.image, c.data.dims.text = 1024, 768, 384

  c.model.hidden_dim = 256
  c.model.mlp_dim = 512
  c.model.num_heads = 4
  c.augment.mixup_alpha = 0.2
  c.loss.label_smoothing = 0.1

  c.train.batch_size = 64
  c.train.num_steps = 10_000
  c.train.eval_every = 1000
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
