"""PyAV decoding: square frames, pts times (VFR), windows, bad files, video listing."""

import os

import numpy as np
import pytest

from multimodal_gru.extract import decode
from multimodal_gru.extract import sample_videos


def test_frames_are_square_crops_with_pts_times(tmp_path):
  frames = sample_videos.synthetic_frames(20, size=64)
  wide = np.concatenate([np.zeros((20, 64, 32, 3), np.uint8), frames,
                         np.zeros((20, 64, 32, 3), np.uint8)], axis=2)   # 128 x 64, black sides
  path = str(tmp_path / "wide.mp4")
  decode.write_video(path, wide, fps=10)
  with decode.VideoReader(path, size=32) as reader:
    assert reader.nominal_fps == 10
    decoded = list(reader.frames())
  assert [i for i, _, _ in decoded] == list(range(20))
  np.testing.assert_allclose([t for _, t, _ in decoded], np.arange(20) / 10, atol=1e-6)
  rgb = np.stack([f for _, _, f in decoded])
  assert rgb.shape == (20, 32, 32, 3) and rgb.dtype == np.uint8
  # The centre crop holds the pattern, not the black sides; it is the frame at half size.
  expected = frames[:, ::2, ::2].astype(float)
  assert np.abs(rgb.astype(float) - expected).mean() < 25
  assert rgb[:, :, :2].mean() > 40


def test_variable_frame_rate_times_come_from_pts(tmp_path):
  times = [0.0, 0.1, 0.5, 0.55, 2.0, 2.04]
  path = str(tmp_path / "vfr.mkv")
  decode.write_video(path, sample_videos.synthetic_frames(6), fps=10, times=times)
  with decode.VideoReader(path, size=32) as reader:
    np.testing.assert_allclose([t for _, t, _ in reader.frames()], times, atol=1e-3)


def test_windows_split_by_time_and_handle_the_tail(tmp_path):
  path = sample_videos.write_synthetic_video(str(tmp_path / "v.avi"), seconds=5.3, fps=10)
  windows = list(decode.iter_windows(path, 32, window_seconds=2.0, min_window_seconds=1.5))
  assert [w.index for w in windows] == [0, 1]   # the 1.3 s tail [4, 5.3) is dropped
  windows = list(decode.iter_windows(path, 32, window_seconds=2.0, min_window_seconds=0.5))
  assert [(w.index, w.start, w.end) for w in windows][:2] == [(0, 0.0, 2.0), (1, 2.0, 4.0)]
  assert windows[2].index == 2 and windows[2].end == pytest.approx(5.3)
  assert [len(w.times) for w in windows] == [20, 20, 13]
  np.testing.assert_array_equal(windows[1].frame_indices, np.arange(20, 40))
  assert windows[1].frames.shape == (20, 32, 32, 3)
  for w in windows:
    assert ((w.times >= w.start) & (w.times < w.end)).all()
  # A video shorter than min_window_seconds is still one window; max_seconds cuts.
  short = list(decode.iter_windows(path, 32, window_seconds=8.0, min_window_seconds=10.0))
  assert len(short) == 1 and len(short[0].times) == 53
  cut = list(decode.iter_windows(path, 32, 2.0, 0.5, max_seconds=3.0))
  assert [len(w.times) for w in cut] == [20, 10]


def test_gaps_leave_out_empty_windows(tmp_path):
  path = str(tmp_path / "gap.mkv")
  times = [0.0, 0.5, 1.0, 7.0, 7.5]
  decode.write_video(path, sample_videos.synthetic_frames(5), fps=10, times=times)
  windows = list(decode.iter_windows(path, 32, window_seconds=2.0, min_window_seconds=0.5))
  assert [w.index for w in windows] == [0, 3]
  np.testing.assert_array_equal(windows[1].frame_indices, [3, 4])


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100, "truncated", "garbled"])
def test_bad_files_raise_a_clear_error(tmp_path, content):
  path = str(tmp_path / "bad.mp4")
  if isinstance(content, str):
    sample_videos.write_synthetic_video(path, seconds=4, fps=10)
    data = bytearray(open(path, "rb").read())
    if content == "truncated":
      data = data[:len(data) // 2]
    else:
      data[len(data) // 3:len(data) // 3 + 2000] = np.random.default_rng(0).bytes(2000)
    open(path, "wb").write(bytes(data))
  with pytest.raises(decode.VideoDecodeError, match="bad.mp4: (cannot open|decoding failed)"):
    list(decode.iter_windows(path, 32, 2.0, 0.5))


def test_file_without_video_stream(tmp_path):
  import av  # pylint: disable=g-import-not-at-top
  path = str(tmp_path / "audio.wav")
  with av.open(path, "w") as c:
    stream = c.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate = 8000
    c.mux(stream.encode(frame))
  with pytest.raises(decode.VideoDecodeError, match="no video stream"):
    decode.VideoReader(path, 32)


def test_list_and_name_videos(tmp_path):
  for name in ["a/x.mp4", "a/y.AVI", "b/x.mp4", "b/notes.txt"]:
    os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
    (tmp_path / name).write_bytes(b"")
  found = decode.list_videos(str(tmp_path))
  assert [os.path.relpath(p, tmp_path) for p in found] == ["a/x.mp4", "a/y.AVI", "b/x.mp4"]
  assert decode.list_videos(f"{tmp_path}/a/*.mp4,{tmp_path}/b") == [
      str(tmp_path / "a/x.mp4"), str(tmp_path / "b/x.mp4")]
  assert [v.video_id for v in decode.name_videos(found)] == ["a/x", "a/y", "b/x"]
