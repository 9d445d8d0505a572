"""Window placement in videos: overlapping windows, the optional record keys, frame files."""

import numpy as np
import pytest

from input_pipeline import record_format
from input_pipeline import video_frames
from multimodal_gru.extract import decode
from multimodal_gru.extract import sample_videos


def test_overlapping_windows(tmp_path):
  path = sample_videos.write_synthetic_video(str(tmp_path / "v.avi"), seconds=5.3, fps=10)
  timeline = []
  windows = list(decode.iter_windows(path, 32, 2.0, 0.5, stride_seconds=1.0, timeline=timeline))
  np.testing.assert_allclose(timeline, np.arange(53) / 10, atol=1e-6)
  assert [(w.index, w.start) for w in windows] == [(k, float(k)) for k in range(5)]
  for w in windows[:4]:   # complete windows: 20 frames from k s
    np.testing.assert_array_equal(w.frame_indices, np.arange(10 * w.index, 10 * w.index + 20))
  # The last window holds the tail up to the end; no window only repeats its frames.
  np.testing.assert_array_equal(windows[4].frame_indices, np.arange(40, 53))
  assert windows[4].end == pytest.approx(5.3)
  # Default stride = the window length: the non-overlapping windows as before.
  plain = list(decode.iter_windows(path, 32, 2.0, 0.5))
  assert [list(w.frame_indices[[0, -1]]) for w in plain] == [[0, 19], [20, 39], [40, 52]]
  with pytest.raises(ValueError, match="stride 3.0 s must be in"):
    list(decode.iter_windows(path, 32, 2.0, 0.5, stride_seconds=3.0))


def test_overlap_skips_gaps(tmp_path):
  path = str(tmp_path / "gap.mkv")
  decode.write_video(path, sample_videos.synthetic_frames(5), fps=10,
                     times=[0.0, 0.5, 1.0, 7.0, 7.5])
  windows = list(decode.iter_windows(path, 32, 2.0, 0.5, stride_seconds=1.0))
  assert [(w.index, w.frame_indices.tolist()) for w in windows] == [
      (0, [0, 1, 2]), (1, [2]), (6, [3, 4])]


def clip(**kw):
  return record_format.Clip(clip_id="v-w0000", features={
      "video": np.ones((1, 3), np.float32), "image": np.ones((3, 2), np.float32),
      "text": np.ones((1, 2), np.float32)}, label=0, **kw)


def test_record_video_metadata_round_trip():
  c = clip(video_id="v_left", num_frames=90, fps=29.97, frame_index=np.array([0, 15, 30]))
  back = record_format.decode(record_format.encode(c))
  assert (back.video_id, back.num_frames, back.frame_index.tolist()) == ("v_left", 90, [0, 15, 30])
  assert back.fps == pytest.approx(29.97) and back.has_video_meta
  # Also without decoding any features (evaluation's first pass).
  meta = record_format.decode(record_format.encode(c), modalities=())
  assert meta.features == {} and meta.frame_index.tolist() == [0, 15, 30]
  old = record_format.decode(record_format.encode(clip()))   # records written before the keys
  assert (old.video_id, old.num_frames, old.fps, old.frame_index) == ("", None, None, None)
  assert not old.has_video_meta


@pytest.mark.parametrize("kw, field, message", [
    (dict(frame_index=np.array([0, 1])), "image/frame_index", "2 values for 3 image steps"),
    (dict(num_frames=20, frame_index=np.array([0, 10, 20])), "image/frame_index",
     "outside \\[0, clip/num_frames=20\\)"),
    (dict(num_frames=0), "clip/num_frames", ">= 1"),
    (dict(fps=-1.0), "clip/fps", "> 0"),
])
def test_bad_video_metadata(kw, field, message):
  with pytest.raises(record_format.RecordError, match=message) as e:
    record_format.decode(record_format.encode(clip(**kw)))
  assert e.value.field == field


def test_frame_files(tmp_path):
  va = np.full((4, 2), -5, np.float32)
  va[1] = [0.5, -0.5]
  video_frames.write_split(str(tmp_path), "eval", [
      video_frames.VideoFrames("a", np.arange(4) / 10, va),
      video_frames.VideoFrames("sub/b", np.arange(3) / 10)])
  stored = video_frames.read_split(str(tmp_path), "eval")
  assert sorted(stored) == ["a", "sub/b"] and stored["sub/b"].labels is None
  assert stored["a"].annotated().tolist() == [False, True, False, False]
  video_frames.write_split(str(tmp_path), "eval", [video_frames.VideoFrames("c", np.zeros(1))])
  assert list(video_frames.read_split(str(tmp_path), "eval")) == ["c"]   # replaced, not merged
  assert video_frames.read_split(str(tmp_path), "test") == {}
  # Within the tolerance (5 frames here) labels are cut or padded; beyond it an error.
  fitted = video_frames.fit_labels(np.ones(97, np.int64), 100, 0.01, "x.csv", -1)
  assert fitted.tolist() == [1] * 97 + [-1] * 3
  with pytest.raises(video_frames.FrameCountError, match="x.csv: 94 annotated frames.*100 "
                     "frames.*tolerance of 5"):
    video_frames.fit_labels(np.ones(94), 100, 0.01, "x.csv", -1)
