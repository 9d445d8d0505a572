"""Metric writers: TensorBoard event files and log lines, without tensorflow.

A small stand-in for `clu.metric_writers` (which imports tensorflow). The
TensorBoard writer uses only tensorboard's own event-file writer and protos,
so the event files are read by a stock TensorBoard.

  writer = create_default_writer(workdir, just_logging=jax.process_index() > 0)
  writer.write_hparams(config)        # HParams dashboard + a text table
  writer.write_scalars(step, {"train/loss": 0.3})
  writer.close()
"""

from __future__ import annotations

import abc
import sys
import time
import types
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.text import metadata as text_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter

# tensorboard's file I/O goes through `tensorboard.compat.tf`, which imports
# tensorflow whenever it is installed. The (empty) module `tensorboard.compat.notf`
# is tensorboard's own "no_tensorflow" switch: it forces the TF-free stub.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

Scalars = Mapping[str, Any]   # values: python / numpy / jax scalars


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}; accepts dicts and ml_collections.ConfigDict."""
  if hasattr(config, "to_dict"):
    config = config.to_dict()
  out: dict[str, Any] = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if hasattr(value, "to_dict") or isinstance(value, Mapping):
      out.update(flatten_config(value, prefix=f"{name}."))
    else:
      out[name] = value
  return out


def _hparam_value(value: Any) -> bool | int | float | str:
  if isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, np.generic):
    return value.item()
  return str(value)


class MetricWriter(abc.ABC):
  """Interface shared by all writers."""

  @abc.abstractmethod
  def write_scalars(self, step: int, scalars: Scalars) -> None:
    """Writes one value per tag at `step`."""

  @abc.abstractmethod
  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Records the run's (possibly nested) configuration once."""

  @abc.abstractmethod
  def write_text(self, step: int, tag: str, text: str) -> None:
    """Writes a (markdown) text summary."""

  def flush(self) -> None:
    pass

  def close(self) -> None:
    self.flush()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class TensorBoardWriter(MetricWriter):
  """Writes a TensorBoard event file under `logdir`."""

  def __init__(self, logdir: str, flush_secs: float = 30.0):
    self.logdir = logdir
    self._writer = EventFileWriter(logdir, flush_secs=flush_secs)

  def _add(self, step: int, summary: summary_pb2.Summary) -> None:
    self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary))

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    summary = summary_pb2.Summary()
    for tag, value in scalars.items():
      summary.value.add(tag=tag, simple_value=float(value))
    self._add(step, summary)

  def write_text(self, step: int, tag: str, text: str) -> None:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING,
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                                    string_val=[text.encode()])
    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, tensor=tensor,
                      metadata=text_metadata.create_summary_metadata(display_name=tag,
                                                                     description=""))
    self._add(step, summary)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    flat = {k: _hparam_value(v) for k, v in flatten_config(hparams).items()}
    self._add(0, hparams_summary.hparams_pb(flat))
    table = "\n".join(["| name | value |", "|---|---|"] +
                      [f"| {k} | {v} |" for k, v in sorted(flat.items())])
    self.write_text(0, "config", table)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class LoggingWriter(MetricWriter):
  """One readable absl log line per call."""

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    values = ", ".join(f"{k}={float(v):.6g}" for k, v in scalars.items())
    logging.info("[%d] %s", step, values)

  def write_text(self, step: int, tag: str, text: str) -> None:
    logging.info("[%d] %s: %s", step, tag, text)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    flat = flatten_config(hparams)
    logging.info("hparams: %s", ", ".join(f"{k}={v}" for k, v in sorted(flat.items())))


class MultiWriter(MetricWriter):
  """Forwards every call to several writers."""

  def __init__(self, writers: Sequence[MetricWriter]):
    self.writers = list(writers)

  def write_scalars(self, step: int, scalars: Scalars) -> None:
    for w in self.writers:
      w.write_scalars(step, scalars)

  def write_text(self, step: int, tag: str, text: str) -> None:
    for w in self.writers:
      w.write_text(step, tag, text)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    for w in self.writers:
      w.write_hparams(hparams)

  def flush(self) -> None:
    for w in self.writers:
      w.flush()

  def close(self) -> None:
    for w in self.writers:
      w.close()


def create_default_writer(logdir: str | None, just_logging: bool = False) -> MetricWriter:
  """Log lines everywhere; plus TensorBoard files unless `just_logging` (non-zero processes)."""
  writers: list[MetricWriter] = [LoggingWriter()]
  if logdir and not just_logging:
    writers.append(TensorBoardWriter(logdir))
  return MultiWriter(writers)
