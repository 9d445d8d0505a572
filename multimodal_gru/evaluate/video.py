"""Frame-level predictions for every frame of every video of a split, and their scores.

One pass over the split's records (the window-level evaluation's eval step and
batch shapes, so nothing recompiles): every record's per-step outputs
(classification: softmax of step_logits [T, K]; regression: step_va [T, 2]) are
placed at the frames of image/frame_index and mapped onto all frames of the
video (`frames.map_to_frames`). Frame times and labels come from the split's
frame files (`input_pipeline.video_frames`); without them a video is taken as
constant-rate (frame i at i / clip/fps) and unlabelled.

Multi-host: process p of P feeds the valid records p, p + P, ... and every
process sees the replicated outputs of all rows (rows in process order, as the
batch mesh puts each process's devices contiguously), so every process ends
with the same predictions.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from absl import logging
import jax
import numpy as np

from input_pipeline import examples
from input_pipeline import pipeline
from input_pipeline import record_format
from input_pipeline import shards
from input_pipeline import source as source_lib
from input_pipeline import tfrecord
from input_pipeline import video_frames
from multimodal_gru import metrics as metrics_lib
from multimodal_gru.evaluate import frames as frames_lib
from multimodal_gru.evaluate import protocol


class NoVideoMetadata(LookupError):
  """The split's records cannot be placed in videos; the message says why."""


@dataclasses.dataclass
class VideoPrediction:
  """Frame-level predictions of one video."""
  video_id: str
  times: np.ndarray                  # [N] seconds of the frames
  values: np.ndarray                 # [N, K] class probabilities | [N, 2] valence, arousal
  labels: np.ndarray | None = None   # [N] int (-1 unannotated) | [N, 2] (-5 unannotated)
  num_windows: int = 0

  @property
  def num_frames(self) -> int:
    return len(self.times)


@dataclasses.dataclass
class _Record:
  index: int                 # global record number in the split
  video_id: str
  num_frames: int
  fps: float | None
  frame_index: np.ndarray    # [T] predicted image steps only


def _bad(source, index: int, e: Exception, skip: bool) -> None:
  path, record = source.locate(index)
  field = getattr(e, "field", "<record>")
  error = pipeline.BadRecordError(path, record, field,
                                  f"field {field!r}: {getattr(e, 'message', e)}", skipping=skip)
  if not skip:
    raise error from e
  logging.log_first_n(logging.WARNING, "Video-level evaluation skips: %s", 20, error)


def _metadata(source, config, split: str) -> list[_Record]:
  """Pass 1: the placement of every readable record that carries video metadata."""
  t_max = int(config.data.max_steps["image"])
  records, without = [], 0
  for i in range(len(source)):
    try:
      clip = record_format.decode(source[i], modalities=())
    except (tfrecord.TFRecordCorruptError, record_format.RecordError) as e:
      _bad(source, i, e, bool(config.data.skip_bad_records))
      continue
    if not clip.has_video_meta:
      without += 1
      continue
    records.append(_Record(i, clip.video_id, clip.num_frames, clip.fps,
                           clip.frame_index[:t_max]))
  if not records:
    raise NoVideoMetadata(
        f"the {len(source)} records of split {split!r} in {config.data.dir} carry no video "
        "metadata (clip/video_id, clip/num_frames, image/frame_index): generated demo data, or "
        "made before these keys existed. Rewrite the data with `python -m "
        "multimodal_gru.prepare` or `python -m multimodal_gru.extract`.")
  if without:
    logging.warning("Video-level evaluation of %s leaves out %d of %d records without video "
                    "metadata.", split, without, len(source))
  return records


def _example(clip: record_format.Clip, spec: examples.ExampleSpec) -> dict[str, np.ndarray]:
  # The model never reads labels; dummies make unlabelled (test) records fit the batch contract.
  t = len(clip.features["image"])
  if spec.task == "classification":
    clip = dataclasses.replace(clip, label=0, step_class=None, valid=None)
  else:
    clip = dataclasses.replace(clip, va=np.zeros((t, 2), np.float32), valid=None)
  return examples.to_example(clip, spec)


def _step_outputs(config, eval_step: Callable, state: Any, to_global: Callable,
                  source, records: list[_Record]) -> dict[int, np.ndarray]:
  """Pass 2: record index -> [T, C] step values (probabilities or valence/arousal)."""
  spec = examples.ExampleSpec.from_config(config)
  process, count = jax.process_index(), jax.process_count()
  local = int(config.train.eval_batch_size) // count
  mine = records[process::count]
  num_batches = math.ceil(math.ceil(len(records) / count) / local)
  key = "step_logits" if config.task == "classification" else "step_va"
  modalities = tuple(dict.fromkeys(spec.modalities + ("image",)))
  out = {}
  for b in range(num_batches):
    rows = []
    for r in mine[b * local:(b + 1) * local]:
      try:
        clip = record_format.decode(source[r.index], modalities)
        rows.append(_example(clip, spec))
      except (tfrecord.TFRecordCorruptError, record_format.RecordError) as e:
        _bad(source, r.index, e, bool(config.data.skip_bad_records))
        rows.append(spec.empty_example())   # example_mask False: dropped below
    rows += [spec.empty_example()] * (local - len(rows))
    batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}
    result = jax.device_get(eval_step(state, to_global(batch)))
    values, mask = np.asarray(result[key], np.float64), np.asarray(result["example_mask"], bool)
    for g in range(values.shape[0]):    # global rows: process-major
      q, j = divmod(g, local)
      position = q + count * (b * local + j)
      if position < len(records) and mask[g]:
        r = records[position]
        steps = values[g, :len(r.frame_index)]
        out[r.index] = metrics_lib.softmax(steps) if key == "step_logits" else steps
  return out


def predict_frames(config, eval_step: Callable, state: Any, to_global: Callable,
                   split: str | None = None) -> dict[str, VideoPrediction]:
  """video_id -> frame-level predictions of every video of `split`.

  `eval_step(state, global_batch)` returns `evaluate.eval_outputs` (as in
  training); `to_global` turns a host-local batch into the global one. Raises
  NoVideoMetadata when the records cannot be placed in videos.
  """
  split = split or config.data.eval_split
  source = source_lib.TFRecordShardsSource(shards.split_files(config.data.dir, split))
  records = _metadata(source, config, split)
  stored = video_frames.read_split(config.data.dir, split)
  outputs = _step_outputs(config, eval_step, state, to_global, source, records)
  by_video: dict[str, list[_Record]] = {}
  for r in records:
    if r.index in outputs:
      by_video.setdefault(r.video_id, []).append(r)
  result, constant_rate = {}, []
  for video_id, recs in sorted(by_video.items()):
    num_frames = recs[0].num_frames
    if video_id in stored:
      times, labels = stored[video_id].times, stored[video_id].labels
      if len(times) != num_frames:
        raise ValueError(
            f"{video_frames.split_dir(config.data.dir, split)}/{video_id}.npz holds {len(times)} "
            f"frames, the records of {video_id} say clip/num_frames={num_frames}: the frame files "
            "are from another write of the split. Write the split again (prepare / extract).")
    else:
      fps = recs[0].fps or 25.0
      times, labels = np.arange(num_frames) / fps, None
      constant_rate.append(video_id)
    windows = [(times[r.frame_index], outputs[r.index]) for r in recs]
    result[video_id] = VideoPrediction(video_id, times, frames_lib.map_to_frames(times, windows),
                                       labels, len(recs))
  if constant_rate:
    logging.warning("%d videos of %s have no frame file in %s (unlabelled; frame i taken at "
                    "i / fps): %s", len(constant_rate), split,
                    video_frames.split_dir(config.data.dir, split), ", ".join(constant_rate[:5]))
  return result


def scores(config, predictions: dict[str, VideoPrediction]
           ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
  """The challenge scores of the labelled videos ({}, {} when none is labelled)."""
  labelled = {k: v for k, v in predictions.items() if v.labels is not None}
  if not labelled:
    return {}, {}
  return protocol.scores(config.task, {k: v.values for k, v in labelled.items()},
                         {k: v.labels for k, v in labelled.items()},
                         int(config.data.num_classes))


def video_level_metrics(config, eval_step: Callable, state: Any, to_global: Callable,
                        split: str | None = None) -> dict[str, float]:
  """The challenge's frame-level scores of `split` (`video_*` keys, see protocol.py).

  {} (with a log line saying why) when the split's records carry no video
  metadata (e.g. the generated demo data) or it has no frame labels.
  """
  split = split or config.data.eval_split
  try:
    predictions = predict_frames(config, eval_step, state, to_global, split)
  except NoVideoMetadata as e:
    logging.info("No video-level metrics: %s", e)
    return {}
  metrics, _ = scores(config, predictions)
  if not metrics:
    logging.info("No video-level metrics: no frame labels for split %r in %s.", split,
                 video_frames.split_dir(config.data.dir, split))
  return metrics
