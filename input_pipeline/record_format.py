"""The clip record format: one `tf.train.Example` per clip (or window).

Keys (all optional keys may be absent):

  clip/id            bytes     clip identifier
  clip/source        bytes     video file the clip came from
  features/dtype     bytes     b"float16" or b"float32"
  {m}/features       bytes     row-major little-endian array [T_m, D_m] in features/dtype
  {m}/shape          int64     [T_m, D_m]
  {m}/timestamps     float     [T_m] seconds (optional)
  text/captions      bytes     [T_text] caption strings behind the text features (optional)
  label/class        int64     [1] clip class (classification)
  label/step_class   int64     [T_image] class per image step (optional)
  label/va           float     [T_image * 2] valence, arousal per image step, interleaved
  label/valid        int64     [T_image] 1 = annotated step, 0 = not (optional, default all 1)
  clip/video_id      bytes     the scored video (Aff-Wild2: the annotation name) (optional)
  clip/num_frames    int64     [1] decoded frames of that video (optional)
  clip/fps           float     [1] its frame rate (optional)
  image/frame_index  int64     [T_image] 0-based video frame behind each image step (optional)

for m in MODALITIES. The four video keys (written by extraction / preparation)
place the window in its video, so that step predictions can be mapped back to
every frame (multimodal_gru/evaluate/); records without them still read.

The proto is tensorflow-datasets' wire-compatible copy of
tf.train.Example, so files parse with `tf.io.parse_single_example` and no
tensorflow is needed here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
from tensorflow_datasets.proto import tf_example_pb2

MODALITIES = ("video", "image", "text")
FEATURE_DTYPES = ("float16", "float32")


class RecordError(ValueError):
  """A record that does not follow the format; `field` names the offending key."""

  def __init__(self, field: str, message: str):
    super().__init__(f"field {field!r}: {message}")
    self.field = field
    self.message = message


@dataclasses.dataclass
class Clip:
  """One decoded clip. Feature arrays are [T_m, D_m] float32."""
  clip_id: str
  features: dict[str, np.ndarray]
  source: str = ""
  timestamps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  captions: list[str] = dataclasses.field(default_factory=list)
  label: int | None = None                 # clip class
  step_class: np.ndarray | None = None     # [T_image] int
  va: np.ndarray | None = None             # [T_image, 2] float
  valid: np.ndarray | None = None          # [T_image] bool
  video_id: str = ""                       # the video the window belongs to ("" = unknown)
  num_frames: int | None = None            # frames of that video
  fps: float | None = None                 # its frame rate
  frame_index: np.ndarray | None = None    # [T_image] int, video frame of each image step

  @property
  def has_video_meta(self) -> bool:
    """Whether the clip can be placed in its video (see the module doc)."""
    return bool(self.video_id) and self.num_frames is not None and self.frame_index is not None


def encode(clip: Clip, dtype: str = "float16") -> bytes:
  """Serializes a `Clip` to tf.train.Example bytes."""
  if dtype not in FEATURE_DTYPES:
    raise ValueError(f"features dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
  example = tf_example_pb2.Example()
  feat = example.features.feature
  feat["clip/id"].bytes_list.value.append(clip.clip_id.encode())
  feat["clip/source"].bytes_list.value.append(clip.source.encode())
  feat["features/dtype"].bytes_list.value.append(dtype.encode())
  for m, x in clip.features.items():
    x = np.asarray(x)
    if x.ndim != 2:
      raise ValueError(f"clip {clip.clip_id}: {m} features must be [T, D], got {x.shape}")
    feat[f"{m}/features"].bytes_list.value.append(
        np.ascontiguousarray(x, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())
    feat[f"{m}/shape"].int64_list.value.extend(x.shape)
  for m, ts in clip.timestamps.items():
    feat[f"{m}/timestamps"].float_list.value.extend(np.asarray(ts, np.float32).tolist())
  if clip.captions:
    feat["text/captions"].bytes_list.value.extend(c.encode() for c in clip.captions)
  if clip.label is not None:
    feat["label/class"].int64_list.value.append(int(clip.label))
  if clip.step_class is not None:
    feat["label/step_class"].int64_list.value.extend(np.asarray(clip.step_class).astype(int).tolist())
  if clip.va is not None:
    feat["label/va"].float_list.value.extend(np.asarray(clip.va, np.float32).reshape(-1).tolist())
  if clip.valid is not None:
    feat["label/valid"].int64_list.value.extend(np.asarray(clip.valid).astype(int).tolist())
  if clip.video_id:
    feat["clip/video_id"].bytes_list.value.append(clip.video_id.encode())
  if clip.num_frames is not None:
    feat["clip/num_frames"].int64_list.value.append(int(clip.num_frames))
  if clip.fps is not None:
    feat["clip/fps"].float_list.value.append(float(clip.fps))
  if clip.frame_index is not None:
    feat["image/frame_index"].int64_list.value.extend(
        np.asarray(clip.frame_index).astype(np.int64).tolist())
  return example.SerializeToString()


def _bytes(feat, key: str, required: bool = True) -> Sequence[bytes] | None:
  if key not in feat:
    if required:
      raise RecordError(key, "missing")
    return None
  return feat[key].bytes_list.value


def _ints(feat, key: str) -> np.ndarray | None:
  return np.array(list(feat[key].int64_list.value), np.int64) if key in feat else None


def _floats(feat, key: str) -> np.ndarray | None:
  return np.array(list(feat[key].float_list.value), np.float32) if key in feat else None


def decode(data: bytes, modalities: Sequence[str] = MODALITIES) -> Clip:
  """Parses Example bytes into a `Clip`; raises `RecordError` naming the field.

  Checks structure only (keys, shapes, sizes, finiteness); dims against the
  config and label ranges are checked by the pipeline.
  """
  example = tf_example_pb2.Example()
  try:
    example.ParseFromString(data)
  except Exception as e:  # protobuf raises DecodeError
    raise RecordError("<example>", f"not a tf.train.Example ({e})") from e
  feat = example.features.feature
  clip_id = b"".join(_bytes(feat, "clip/id")).decode(errors="replace")
  source = b"".join(_bytes(feat, "clip/source", required=False) or []).decode(errors="replace")
  dtype = b"".join(_bytes(feat, "features/dtype")).decode(errors="replace")
  if dtype not in FEATURE_DTYPES:
    raise RecordError("features/dtype", f"must be one of {FEATURE_DTYPES}, got {dtype!r}")
  clip = Clip(clip_id=clip_id, source=source, features={})
  for m in modalities:
    raw = _bytes(feat, f"{m}/features")
    shape = _ints(feat, f"{m}/shape")
    if shape is None:
      raise RecordError(f"{m}/shape", "missing")
    if shape.size != 2 or (shape < 0).any():
      raise RecordError(f"{m}/shape", f"must be [T, D] with T, D >= 0, got {shape.tolist()}")
    if len(raw) != 1:
      raise RecordError(f"{m}/features", f"expected one bytes value, got {len(raw)}")
    itemsize = np.dtype(dtype).itemsize
    if len(raw[0]) != shape.prod() * itemsize:
      raise RecordError(f"{m}/features",
                        f"{len(raw[0])} bytes do not hold {shape.tolist()} {dtype} values")
    if shape[0] == 0:
      raise RecordError(f"{m}/features", "empty modality (0 steps)")
    x = np.frombuffer(raw[0], np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(np.float32)
    if not np.isfinite(x).all():
      bad = np.argwhere(~np.isfinite(x))[0].tolist()
      raise RecordError(f"{m}/features", f"non-finite value at step {bad[0]}, dim {bad[1]}")
    clip.features[m] = x
    ts = _floats(feat, f"{m}/timestamps")
    if ts is not None:
      if ts.shape[0] != shape[0]:
        raise RecordError(f"{m}/timestamps", f"{ts.shape[0]} values for {shape[0]} steps")
      clip.timestamps[m] = ts
  captions = _bytes(feat, "text/captions", required=False)
  clip.captions = [c.decode(errors="replace") for c in captions] if captions else []
  label = _ints(feat, "label/class")
  if label is not None:
    if label.size != 1:
      raise RecordError("label/class", f"expected 1 value, got {label.size}")
    clip.label = int(label[0])
  n_image = clip.features["image"].shape[0] if "image" in clip.features else None
  for key, attr in (("label/step_class", "step_class"), ("label/valid", "valid")):
    v = _ints(feat, key)
    if v is not None:
      if n_image is not None and v.size != n_image:
        raise RecordError(key, f"{v.size} values for {n_image} image steps")
      setattr(clip, attr, v.astype(bool) if attr == "valid" else v)
  va = _floats(feat, "label/va")
  if va is not None:
    if n_image is not None and va.size != 2 * n_image:
      raise RecordError("label/va", f"{va.size} values, expected 2 x {n_image} image steps")
    if not np.isfinite(va).all():
      raise RecordError("label/va", "non-finite value")
    clip.va = va.reshape(-1, 2)
  _decode_video_meta(feat, clip)
  return clip


def _decode_video_meta(feat, clip: Clip) -> None:
  """The optional clip/video_id, clip/num_frames, clip/fps and image/frame_index."""
  video_id = _bytes(feat, "clip/video_id", required=False)
  clip.video_id = b"".join(video_id).decode(errors="replace") if video_id else ""
  num_frames = _ints(feat, "clip/num_frames")
  if num_frames is not None:
    if num_frames.size != 1 or num_frames[0] < 1:
      raise RecordError("clip/num_frames", f"expected one value >= 1, got {num_frames.tolist()}")
    clip.num_frames = int(num_frames[0])
  fps = _floats(feat, "clip/fps")
  if fps is not None:
    if fps.size != 1 or not np.isfinite(fps[0]) or fps[0] <= 0:
      raise RecordError("clip/fps", f"expected one finite value > 0, got {fps.tolist()}")
    clip.fps = float(fps[0])
  index = _ints(feat, "image/frame_index")
  if index is not None:
    shape = _ints(feat, "image/shape")   # read even when the image features are not decoded
    if shape is not None and shape.size == 2 and index.size != shape[0]:
      raise RecordError("image/frame_index", f"{index.size} values for {shape[0]} image steps")
    if index.size and (index.min() < 0 or (clip.num_frames is not None
                                           and index.max() >= clip.num_frames)):
      raise RecordError("image/frame_index", f"frame indices {index.min()}..{index.max()} outside "
                        f"[0, clip/num_frames={clip.num_frames})")
    clip.frame_index = index


def clip_to_dict(clip: Clip) -> dict[str, Any]:
  """Flat dict of numpy arrays for the pipeline (before padding)."""
  out: dict[str, Any] = {f"{m}": x for m, x in clip.features.items()}
  if clip.label is not None:
    out["label"] = np.int32(clip.label)
  if clip.step_class is not None:
    out["step_label"] = clip.step_class.astype(np.int32)
  if clip.va is not None:
    out["va"] = clip.va.astype(np.float32)
  if clip.valid is not None:
    out["step_valid"] = clip.valid
  return out


def feature_dims(clip: Clip) -> Mapping[str, int]:
  return {m: x.shape[1] for m, x in clip.features.items()}
