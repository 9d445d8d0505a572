"""The encoders data-parallel over 8 local devices give the features of 1 device.

Runs in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8
(the device count is fixed when JAX starts): real I3D and MiniLM weights, a
tiny random ViT; batches that need padding to a multiple of 8. With the same
batch per device (1 device at batch b, 8 devices at 8 b) the features are
bitwise identical; with another per-device batch they differ by XLA:CPU's
batch-dependent rounding only.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""\
    import json, sys
    import jax
    import numpy as np
    from multimodal_gru.extract import batching, devices, image_encoder, sample_videos
    from multimodal_gru.extract import text_encoder, tiny_models, video_i3d
    from multimodal_gru.extract import config as config_lib

    eight = devices.LocalDevices()
    one = devices.LocalDevices(jax.local_devices()[:1])
    assert eight.count == 8 and one.count == 1
    frames = sample_videos.synthetic_frames(40, size=64, cut_at=20)
    segments = frames.reshape(5, 8, 64, 64, 3)            # 5 segments: padded to 8 rows
    folder = tiny_models.save_image_model(sys.argv[1])
    texts = ["a man playing guitar", "two people fight in the street", "soup", "", "a dog"] * 3
    out = {"sizes": batching.batch_sizes(13, 4, 8)}
    # per-device batch b: 1 device at batch b, 8 devices at batch 8 b
    for name, d, b in (("one", one, 1), ("eight", eight, 8), ("one_b2", one, 2)):
      i3d = video_i3d.I3DEncoder(batch_size=b, input_size=64, devices=d)
      image = image_encoder.ImageEncoder(folder, batch_size=2 * b, devices=d)
      text = text_encoder.SentenceEncoder(config_lib.MINILM, batch_size=b, devices=d)
      features, logits = i3d(segments)
      out[name] = {"i3d": features.tolist(), "logits": logits.tolist(),
                   "image": image(frames[:12]).tolist(), "text": text(texts).tolist(),
                   "sharding": str(i3d.variables["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"]
                                   .sharding.device_set.__len__())}
    print("RESULT" + json.dumps(out))
    """)


def test_eight_devices_give_the_features_of_one(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT,
             XLA_FLAGS="--xla_force_host_platform_device_count=8", MGRU_DISTRIBUTED="off")
  result = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "vit")], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.split("RESULT", 1)[1])
  assert out["sizes"] == [8, 8]   # batch 4 rounded up to the 8 devices
  assert out["one"]["sharding"] == "1" and out["eight"]["sharding"] == "8"   # replicated
  for key in ("i3d", "logits", "image", "text"):
    one, eight = np.asarray(out["one"][key]), np.asarray(out["eight"][key])
    assert one.shape == eight.shape and len(one) in (5, 12, 15)
    np.testing.assert_array_equal(one, eight)
    # Another per-device batch: XLA:CPU's kernels round differently (I3D measured 1.0e-5 abs,
    # logits 1.8e-4; far below the float16 the records store).
    np.testing.assert_allclose(np.asarray(out["one_b2"][key]), eight, rtol=1e-3, atol=1e-4)


def test_bfloat16_compute_is_close_to_float32(tmp_path):
  import pytest  # pylint: disable=g-import-not-at-top
  from multimodal_gru.extract import devices
  from multimodal_gru.extract import image_encoder
  from multimodal_gru.extract import sample_videos
  from multimodal_gru.extract import tiny_models
  from multimodal_gru.extract import video_i3d
  segments = sample_videos.synthetic_frames(16, size=64, cut_at=8).reshape(2, 8, 64, 64, 3)
  out = {}
  for dtype in ("float32", "bfloat16"):
    features, _ = video_i3d.I3DEncoder(2, 64, dtype)(segments)
    assert features.dtype == np.float32
    out[dtype] = features
  cosine = (out["float32"] * out["bfloat16"]).sum(-1) / (
      np.linalg.norm(out["float32"], axis=-1) * np.linalg.norm(out["bfloat16"], axis=-1))
  assert (cosine > 0.99).all() and np.abs(out["float32"] - out["bfloat16"]).max() > 0, cosine
  folder = tiny_models.save_image_model(str(tmp_path / "vit"))
  image = image_encoder.ImageEncoder(folder, 4, "bfloat16")
  assert image.model.dtype == devices.COMPUTE_DTYPES["bfloat16"]
  assert image(segments[0]).dtype == np.float32
  with pytest.raises(ValueError, match="compute_dtype must be one of"):
    video_i3d.I3DEncoder(2, 64, "float16")
