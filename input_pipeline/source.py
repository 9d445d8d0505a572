"""A grain random-access data source over all TFRecord shards of a split."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from input_pipeline import tfrecord


class TFRecordShardsSource:
  """Records of several TFRecord files as one random-access sequence.

  Implements grain's `RandomAccessDataSource` protocol (`__len__`,
  `__getitem__`) and is picklable for grain worker processes (file descriptors
  are reopened in each process). `source[i]` is the CRC-checked data of global
  record i; records are numbered file by file in the order of `paths`.

  Only records with intact framing are served: a file's unreadable end
  (truncated, damaged length) is not part of the sequence. Finding and
  reporting such damage is `shard_check.scan`'s job, which the pipeline runs
  before opening a split. A data CRC error raises `TFRecordCorruptError` when
  the record is read.
  """

  def __init__(self, paths: Sequence[str],
               readers: Sequence[tfrecord.TFRecordReader] | None = None):
    """`readers`, if given, are the already opened `TFRecordReader`s of `paths`."""
    self.paths = list(paths)
    self._readers = (list(readers) if readers is not None
                     else [tfrecord.TFRecordReader(p) for p in self.paths])
    if [r.path for r in self._readers] != self.paths:
      raise ValueError("readers must be those of paths, in the same order")
    sizes = [len(r) for r in self._readers]
    self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

  def __len__(self) -> int:
    return int(self._starts[-1])

  def _shard(self, index: int) -> tuple[int, int]:
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range [0, {len(self)})")
    shard = int(np.searchsorted(self._starts, index, side="right")) - 1
    return shard, int(index - self._starts[shard])

  def locate(self, index: int) -> tuple[str, int]:
    """(file, record number in that file) of global record `index`."""
    shard, record = self._shard(int(index))
    return self.paths[shard], record

  def __getitem__(self, index: int) -> bytes:
    shard, record = self._shard(int(index))
    return self._readers[shard].read_record(record)

  def __repr__(self) -> str:
    return f"TFRecordShardsSource({len(self.paths)} files, {len(self)} records)"
