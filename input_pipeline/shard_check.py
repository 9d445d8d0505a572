"""File-level checks of a split's shards: what is damaged, and how many records it cost.

`scan(paths, manifest)` opens every shard through its offset index (one header
scan, cached in `{shard}.idx`; see tfrecord.py), which checks the framing and
the length CRCs, and finds:

  shard/not_found     a dangling symlink, or a file gone since it was listed
  shard/not_a_file    a directory (or another non-file) with a shard's name
  shard/unreadable    a file that cannot be opened or read (permissions, I/O)
  shard/empty         a 0-byte file (unless it was written with no records)
  tfrecord/length     a truncated end, or a length that runs past the end
  tfrecord/length_crc a damaged record length (the rest of the file is lost)
  shard/records       fewer records than written, though the file ends cleanly
                      (e.g. truncated exactly at a record boundary)
  tfrecord/data_crc   records whose data fail the CRC (only with full_crc=True,
                      which reads every record; cheap for eval-sized splits)

Records lost are counted against the counts that `shards.write_split` recorded
in `{split}.shards.json`. For a split written without them, the records at an
unreadable end are estimated from the split's mean record size, and those of a
missing or empty file from the mean records per intact shard; such counts
carry `estimated=True`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from input_pipeline import tfrecord


@dataclasses.dataclass
class Damage:
  """What one shard lost: `records_lost` records (exact unless `estimated`)."""
  path: str
  field: str             # the first problem found, one of those in the module doc
  reason: str            # all problems found, for people
  records_lost: int
  estimated: bool = False

  def to_json(self) -> dict:
    return {"field": self.field, "reason": self.reason, "records_lost": self.records_lost,
            "estimated": self.estimated}

  def __str__(self) -> str:
    lost = f"{'about ' if self.estimated else ''}{self.records_lost} records lost"
    return f"{self.path}: field {self.field!r}: {self.reason}; {lost}"


@dataclasses.dataclass
class SplitScan:
  """`readers` of the shards that could be opened (damaged or not), in `paths` order."""
  readers: list[tfrecord.TFRecordReader]
  damage: list[Damage]
  num_shards: int = 0     # all shards, damaged or not
  bad_data_crc: int = 0   # records of `readers` that failed the data CRC (full_crc only)

  @property
  def records(self) -> int:
    """Readable records (framing intact; data CRC intact too where it was checked)."""
    return sum(len(r) for r in self.readers) - self.bad_data_crc

  @property
  def records_lost(self) -> int:
    return sum(d.records_lost for d in self.damage)


class BadShardError(ValueError):
  """Damaged shards in a split; `damage` lists them (`Damage`), the message names them."""

  def __init__(self, split: str, data_dir: str, damage: Sequence[Damage], num_shards: int):
    lines = "\n".join(f"  {d}" for d in damage)
    super().__init__(
        f"Split {split!r} in {data_dir!r}: {len(damage)} of {num_shards} shards are damaged:\n"
        f"{lines}\nRestore these files from a good copy or write the split again (the tool "
        "that made it: python -m multimodal_gru.prepare / multimodal_gru.extract), or set "
        "data.skip_bad_records=True to use the readable records (the start-up check then "
        "reports the records lost per file).")
    self.split = split
    self.damage = list(damage)


def _open(path: str) -> tuple[tfrecord.TFRecordReader | None, str, str]:
  """(reader, "", "") or (None, field, reason) for a path that is not a readable file."""
  if not os.path.exists(path):
    target = f" (a symlink to {os.readlink(path)!r}, which does not exist)" if os.path.islink(
        path) else ""
    return None, "shard/not_found", f"the file does not exist{target}"
  if not os.path.isfile(path):
    kind = "a directory" if os.path.isdir(path) else "not a regular file"
    return None, "shard/not_a_file", f"{kind}, not a shard file"
  try:
    return tfrecord.TFRecordReader(path), "", ""
  except OSError as e:
    return None, "shard/unreadable", f"cannot be read ({type(e).__name__}: {e.strerror or e})"


def _bad_data_crc(reader: tfrecord.TFRecordReader) -> list[int]:
  """Records of `reader` whose data CRC (or framing, if changed since indexing) fails."""
  bad = []
  for i in range(len(reader)):
    try:
      reader.read_record(i)
    except tfrecord.TFRecordCorruptError:
      bad.append(i)
  return bad


def _records(numbers: list[int], limit: int = 5) -> str:
  shown = ", ".join(map(str, numbers[:limit]))
  return shown + (f", ... ({len(numbers)} in all)" if len(numbers) > limit else "")


def scan(paths: Sequence[str], manifest: dict[str, dict[str, int]] | None, *,
         full_crc: bool = False) -> SplitScan:
  """Checks the shards `paths` of one split (see the module doc).

  Args:
    paths: the split's shard files, in order.
    manifest: {file name: {"records", "bytes"}} as written (`shards.read_manifest`),
      or None where the split was written without it.
    full_crc: also read every record and check its data CRC.
  """
  result = SplitScan(readers=[], damage=[], num_shards=len(paths))
  pending = []   # (Damage, unreadable bytes or None) whose count is still to be estimated
  for path in paths:
    written = (manifest or {}).get(os.path.basename(path))
    reader, field, reason = _open(path)
    if reader is None:
      damage = Damage(path, field, reason, written["records"] if written else 0, not written)
      result.damage.append(damage)
      if not written:
        pending.append((damage, None))
      continue
    result.readers.append(reader)
    index, problems = reader.index, []
    tail_bytes = None   # unreadable bytes at the end; None: nothing to estimate them from
    if index.file_size == 0 and not (written and written["records"] == 0):
      problems.append(("shard/empty", "the file is empty (0 bytes)"))
    elif (tail := reader.tail_error()) is not None:
      tail_bytes = index.file_size - tail.offset
      problems.append((tail.field, f"record {tail.record} at byte offset {tail.offset}: "
                       f"{index.tail_message}; records {tail.record} and later, bytes "
                       f"{tail.offset}..{index.file_size} ({tail_bytes} bytes), cannot be read"))
    lost_end = bool(problems)
    if written and len(reader) < written["records"] and not problems:
      problems.append(("shard/records", f"the file ends cleanly after {len(reader)} records "
                       f"but {written['records']} were written ({index.file_size} of "
                       f"{written['bytes']} bytes)"))
    bad = _bad_data_crc(reader) if full_crc else []
    if bad:
      problems.append(("tfrecord/data_crc", f"{len(bad)} records fail the data CRC "
                       f"(records {_records(bad)})"))
      result.bad_data_crc += len(bad)
    if not problems:
      continue
    reason = "; ".join(p for _, p in problems)
    if written:
      lost = max(0, written["records"] - len(reader)) + len(bad)
      reason += f"; {written['records']} records were written"
    else:
      lost = len(bad)
    damage = Damage(path, problems[0][0], reason, lost, estimated=lost_end and not written)
    result.damage.append(damage)
    if damage.estimated:
      pending.append((damage, tail_bytes))
  _estimate(pending, result)
  return result


def _estimate(pending: list[tuple[Damage, int | None]], result: SplitScan) -> None:
  """Adds estimated counts: unreadable bytes / mean record bytes, or mean records per shard."""
  if not pending:
    return
  damaged = {d.path for d in result.damage}
  intact = [len(r) for r in result.readers if r.path not in damaged]
  framed = [(r.index.tail_offset if r.index.tail_field else r.index.file_size, len(r))
            for r in result.readers if len(r)]
  record_bytes = sum(b for b, _ in framed) / max(1, sum(n for _, n in framed))
  per_shard = round(sum(intact) / len(intact)) if intact else 0
  for damage, tail_bytes in pending:
    if tail_bytes is None:     # nothing readable to go by: a missing or empty file
      damage.records_lost += per_shard
      how = f"the mean of {per_shard} records per intact shard"
    else:
      damage.records_lost += max(1, round(tail_bytes / record_bytes)) if framed else 1
      how = (f"{tail_bytes} unreadable bytes / {record_bytes:.0f} bytes per record"
             if framed else "no readable record to measure; at least 1")
    damage.reason += f" (no record counts were written with this split; estimate from {how})"
