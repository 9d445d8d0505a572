"""Frame sampling by time (segments, fixed-rate frames, keyframes) and padded batching."""

import numpy as np
import pytest

from multimodal_gru.extract import batching
from multimodal_gru.extract import sampling
from multimodal_gru.extract import sample_videos


def test_nearest_frames_picks_the_closest_time_and_clamps():
  times = np.array([0.0, 0.1, 0.3, 0.35, 0.9])
  np.testing.assert_array_equal(
      sampling.nearest_frames(times, np.array([-1.0, 0.04, 0.06, 0.18, 0.33, 0.7, 5.0])),
      [0, 0, 1, 1, 3, 4, 4])
  np.testing.assert_array_equal(sampling.nearest_frames(np.array([2.0]), np.zeros((2, 3))),
                                np.zeros((2, 3)))


def test_video_segments_count_length_and_centres():
  times = np.arange(0, 8, 1 / 30)   # 8 s at 30 fps, resampled at 25 fps
  indices, centres = sampling.video_segments(times, 0.0, 8.0, fps=25, length=16, stride=16)
  assert indices.shape == (12, 16)   # floor((200 - 16) / 16) + 1
  step_times = times[indices]
  targets = (np.arange(12)[:, None] * 16 + np.arange(16)) / 25
  assert np.abs(step_times - targets).max() <= 1 / 60 + 1e-9   # within half a source frame
  np.testing.assert_allclose(centres, (step_times[:, 0] + step_times[:, -1]) / 2)
  # Overlapping segments with a smaller stride.
  assert sampling.video_segments(times, 0.0, 8.0, 25, 16, 8)[0].shape == (24, 16)


def test_short_window_gives_one_segment_repeating_the_last_frame():
  times = np.arange(5) / 10
  indices, centres = sampling.video_segments(times, 0.0, 0.5, fps=25, length=16, stride=16)
  assert indices.shape == (1, 16)
  assert indices[0, 0] == 0 and indices[0, -1] == 4 and (np.diff(indices[0]) >= 0).all()
  assert 0 <= centres[0] <= 0.4


def test_frames_at_rate_follow_variable_frame_times():
  times = np.array([0.0, 0.05, 0.1, 0.7, 0.75, 1.4, 1.45, 1.5])   # irregular
  steps = sampling.frames_at_rate(times, 0.0, 2.0, fps=2)        # targets 0, 0.5, 1, 1.5
  np.testing.assert_array_equal(steps, [0, 3, 4, 7])
  # Fewer frames than steps: each frame once.
  np.testing.assert_array_equal(sampling.frames_at_rate(np.array([0.0, 1.0]), 0, 2, 4), [0, 1])
  assert len(sampling.frames_at_rate(np.array([3.2]), 3.0, 3.3, 2)) == 1


def test_keyframes_at_scene_cuts_then_every_max_gap():
  frames = sample_videos.synthetic_frames(16, size=64, cut_at=9)   # image steps, 0.5 s apart
  times = np.arange(16) * 0.5
  scores = sampling.change_scores(frames)
  assert np.isinf(scores[0]) and scores[9] > 0.12
  assert np.delete(scores, [0, 9]).max() < 0.05   # sliding one pixel is no cut
  keys = sampling.select_keyframes(times, scores, max_count=8, threshold=0.1, min_gap=1.0,
                                   max_gap=100.0)
  np.testing.assert_array_equal(keys, [0, 9])
  keys = sampling.select_keyframes(times, scores, max_count=8, threshold=0.1, min_gap=1.0,
                                   max_gap=2.0)
  np.testing.assert_array_equal(keys, [0, 4, 8, 9, 13])
  keys = sampling.select_keyframes(times, scores, max_count=2, threshold=0.1, min_gap=1.0,
                                   max_gap=2.0)
  np.testing.assert_array_equal(keys, [0, 9])   # the strongest changes are kept


def test_static_video_has_at_least_one_keyframe():
  frames = np.zeros((3, 32, 32, 3), np.uint8)
  keys = sampling.select_keyframes(np.array([0.0, 0.5, 1.0]), sampling.change_scores(frames),
                                   max_count=8, threshold=0.1, min_gap=1.0, max_gap=10.0)
  np.testing.assert_array_equal(keys, [0])


@pytest.mark.parametrize("n, batch, sizes", [(1, 8, [1]), (3, 8, [4]), (8, 8, [8]),
                                             (13, 8, [8, 8]), (17, 8, [8, 8, 1]), (5, 3, [3, 2])])
def test_batch_sizes(n, batch, sizes):
  assert batching.batch_sizes(n, batch) == sizes


def test_batched_matches_unbatched_and_drops_padding():
  calls = []

  def fn(x, y):
    calls.append(x.shape[0])
    return {"sum": x.sum(-1) + y, "first": x[:, 0]}

  x, y = np.arange(26.0).reshape(13, 2), np.arange(13.0)
  out = batching.batched(fn, [x, y], batch_size=4)
  np.testing.assert_array_equal(out["sum"], x.sum(-1) + y)
  np.testing.assert_array_equal(out["first"], x[:, 0])
  assert calls == [4, 4, 4, 1]


@pytest.mark.parametrize("max_inputs,batch,multiple,counts", [
    (12, 8, 1, [1, 2, 3, 5]), (12, 8, 8, [1]), (4, 8, 3, [1, 3]), (3, 32, 1, [1, 2, 3])])
def test_warm_up_counts_cover_every_batch_shape_once(max_inputs, batch, multiple, counts):
  assert batching.warm_up_counts(max_inputs, batch, multiple) == counts
  every = {s for n in range(1, max_inputs + 1) for s in batching.batch_sizes(n, batch, multiple)}
  covered = [s for n in counts for s in batching.batch_sizes(n, batch, multiple)]
  assert set(covered) == every and len(set(counts)) == len(counts)
