"""Demo: the embedded, generated multimodal benchmark (see multimodal_gru/demo_data.py).

  python -m multimodal_gru.main --config=configs/demo.py --workdir=/tmp/demo
  python -m multimodal_gru.main --config=configs/demo.py:regression --workdir=/tmp/demo_va

Trains in a few minutes on 2 CPU cores. The data are generated (deterministically)
into data.dir on first use. Sizes are ours.
"""

import os

from multimodal_gru.config_base import get_base_config


def get_config(task: str = "classification"):
  c = get_base_config()
  if task not in ("classification", "regression"):
    raise ValueError(f"configs/demo.py:TASK takes classification or regression, got {task!r}")
  c.task = task
  c.data.dir = os.environ.get("MGRU_DEMO_DATA",
                              os.path.expanduser("~/.cache/multimodal_gru/demo_v1"))
  c.data.generate_demo = True
  c.data.max_steps.video, c.data.max_steps.image, c.data.max_steps.text = 16, 32, 8
  c.data.dims.video, c.data.dims.image, c.data.dims.text = 64, 64, 32
  c.data.num_classes = 2

  c.model.hidden_dim = 64
  c.model.mlp_dim = 128
  c.model.num_heads = 4
  c.model.dropout = 0.1

  c.optim.learning_rate = 2e-3
  c.optim.warmup_steps = 50
  c.train.batch_size = 32
  c.train.eval_batch_size = 256
  c.train.num_steps = 1200
  c.train.log_every = 50
  c.train.eval_every = 400
  c.train.checkpoint_every = 200
  return c


def get_sweep():
  """Demo ablation: python -m multimodal_gru.sweep --config=configs/demo.py --workdir=ROOT

  6 fusions x feature augmentation on/off x 2 seeds = 24 runs of 600 steps (half
  the demo run), seed 0 of every variant first. Measured: 1h01m on 2 shared CPU cores
  (44 min for seed 0, which compiles 12 programs; 17 min for seed 1, which reuses the
  compilation cache). Results: docs/ablation_demo.md.
  """
  from multimodal_gru import grid
  return grid.product(
      {"train.num_steps": 600},
      grid.sweep("seed", [0, 1]),
      grid.sweep("model.fusion", ["video_only", "image_only", "text_only", "concat",
                                  "xattn_image", "xattn_bidir"]),
      grid.sweep("augment.enabled", [True, False]))
