"""Default configuration shared by every config file in configs/.

All sizes are our own choices: the paper (arXiv 2507.03531) gives none.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "classification"     # "classification" (DVD) | "regression" (Aff-Wild2 valence/arousal)
  c.seed = 0

  # --- data ----------------------------------------------------------------
  c.data = d = ml_collections.ConfigDict()
  d.dir = ""                    # folder with {split}-*.tfrecord shards and dataset_info.json
  d.train_split = "train"
  d.eval_split = "eval"
  d.modalities = ("video", "image", "text")
  d.max_steps = ml_collections.ConfigDict(dict(video=16, image=32, text=8))   # pad/crop to these
  d.dims = ml_collections.ConfigDict(dict(video=1024, image=768, text=384))   # feature widths
  d.num_classes = 2             # classification only
  d.shuffle_seed = 0
  d.worker_count = 0            # grain worker processes (0 = in-process)
  d.worker_buffer_size = 2
  d.read_threads = 4            # threads for record reading/parsing
  d.skip_bad_records = False    # True: count and skip invalid records instead of raising
  d.generate_demo = False       # demo config: generate the embedded benchmark if missing
  d.demo_generator = "v1"       # with generate_demo: "v1" (demo_data.py) | "v2" (demo_data_v2.py)

  # --- model ---------------------------------------------------------------
  c.model = m = ml_collections.ConfigDict()
  m.fusion = "xattn_bidir"      # see multimodal_gru/models/fusion/ for the registry
  m.use_gru = True              # False: a linear projection + mean pooling replaces the GRU
  m.hidden_dim = 256            # GRU hidden size per direction; also the fusion width
  m.gru_layers = 1
  m.bidirectional = True
  m.num_heads = 4
  m.xattn_layers = 1
  m.mlp_dim = 512
  m.dropout = 0.1
  m.dtype = "float32"           # compute dtype: "float32" | "bfloat16"; params stay float32

  # --- feature-level augmentation (train only) ------------------------------
  c.augment = a = ml_collections.ConfigDict()
  a.enabled = True
  a.noise_std = 0.1             # Gaussian noise, in units of the feature's std
  a.feature_dropout = 0.1       # drop single feature values
  a.time_mask_prob = 0.1        # drop whole time steps
  a.modality_dropout = 0.1      # drop a whole modality (never all of them)
  a.mixup_alpha = 0.0           # feature-space mixup (classification); 0 = off

  # --- autoencoder ------------------------------------------------------------
  c.autoencoder = ae = ml_collections.ConfigDict()
  ae.enabled = True
  ae.weight = 0.1

  # --- losses ----------------------------------------------------------------
  c.loss = l = ml_collections.ConfigDict()
  l.label_smoothing = 0.0
  l.step_weight = 0.5           # weight of the per-step (frame-level) loss
  l.clip_weight = 1.0           # weight of the clip-level loss
  l.mse_weight = 0.0            # regression: MSE added to 1 - CCC

  # --- optimisation ------------------------------------------------------------
  c.optim = o = ml_collections.ConfigDict()
  o.learning_rate = 1e-3
  o.warmup_steps = 100
  o.weight_decay = 1e-4
  o.grad_clip_norm = 1.0
  o.b1 = 0.9
  o.b2 = 0.999

  # --- training loop ----------------------------------------------------------
  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 64             # global batch size, whatever the host/device count
  t.eval_batch_size = 128
  t.num_steps = 5000
  t.log_every = 50
  t.eval_every = 1000
  t.checkpoint_every = 500
  t.keep_checkpoints = 3
  # WORKDIR/config.json records the config of the first start; a rerun that changes the model
  # or the data stops (multimodal_gru/workdir.py lists the fields that may change). True:
  # resume anyway and record the new config (or start a new experiment in a new workdir).
  t.allow_config_change = False

  # --- robustness evaluation (multimodal_gru/evaluate/robustness.py) ----------
  # The eval set scored again under named corruptions: results.json and TensorBoard
  # get robust/<corruption>/<metric>. Families: missing (each stream), missing_pairs,
  # noise (Gaussian, std in units of each stream's feature std), drop_steps (a fraction
  # of the real steps removed), shift_image (image frames lag the other streams).
  c.eval = e = ml_collections.ConfigDict()
  e.robustness = False
  e.corruptions = ("missing", "missing_pairs", "noise", "drop_steps", "shift_image")
  e.noise_levels = (0.5, 1.0, 2.0)
  e.drop_fractions = (0.25, 0.5)
  e.shift_steps = (2, 4)        # image steps
  e.seed = 0

  # --- device mesh -------------------------------------------------------------
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))   # -1 = the rest
  return c
