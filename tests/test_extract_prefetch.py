"""Background decoding: bounded look-ahead, order kept, a bad video fails alone."""

import threading
import time

import numpy as np
import pytest

from multimodal_gru.extract import decode
from multimodal_gru.extract import pipeline
from multimodal_gru.extract import prefetch
from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import tiny_models

import test_extract_pipeline


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
  folder = tiny_models.save_image_model(str(tmp_path_factory.mktemp("models") / "vit"))
  return pipeline.Extractor(test_extract_pipeline.small_config(folder))


class CountingSample:
  """Counts the real `Extractor.sample` calls (windows decoded and sampled so far)."""

  def __init__(self, extractor):
    self.sample, self.count, self.lock = extractor.sample, 0, threading.Lock()

  def __call__(self, *args):
    out = self.sample(*args)
    with self.lock:
      self.count += 1
    return out


def test_look_ahead_is_bounded_whatever_the_length(extractor, tmp_path, monkeypatch):
  extractor.config.max_seconds = 0.0   # all 12 windows of a 24 s video
  path = sample_videos.write_synthetic_video(str(tmp_path / "long.mp4"), seconds=24, fps=10)
  counter = CountingSample(extractor)
  monkeypatch.setattr(extractor, "sample", counter)
  try:
    [video] = decode.name_videos([path])
    stream = prefetch.decoded_videos(extractor, [video], threads=1, depth=2)
    windows = iter(next(stream))
    next(windows)
    time.sleep(1.5)   # the worker runs ahead until the queue is full
    assert 2 <= counter.count <= 4   # 1 taken, 2 queued, 1 waiting to be queued
    assert len(list(windows)) == 11 and counter.count == 12
    stream.close()
  finally:
    extractor.config.max_seconds = 4.0


def test_videos_in_order_and_a_bad_one_fails_alone(extractor, tmp_path):
  paths = [sample_videos.write_synthetic_video(str(tmp_path / f"v{i}.mp4"), seconds=s, fps=10,
                                               seed=i) for i, s in enumerate([3.0, 1.5, 2.5])]
  (tmp_path / "bad.mp4").write_bytes(b"not a video")
  videos = decode.name_videos([paths[0], str(tmp_path / "bad.mp4"), *paths[1:]])
  got = []
  for items in prefetch.decoded_videos(extractor, videos, threads=2, depth=1):
    try:
      got.append((items.video.video_id, [w.image_times.tolist() for w in items],
                  len(items.timeline)))
    except decode.VideoDecodeError as e:
      got.append((items.video.video_id, str(e)))
  assert [g[0] for g in got] == ["v0", "bad", "v1", "v2"]
  assert "bad.mp4: cannot open" in got[1][1]
  for (video_id, times, frames), path in zip([got[0], got[2], got[3]], paths):
    timeline = []
    want = [w.image_times.tolist() for w in extractor.sampled_windows(path, None, timeline)]
    assert times == want and frames == len(timeline), video_id
    np.testing.assert_allclose(timeline[:2], [0.0, 0.1], atol=1e-6)
