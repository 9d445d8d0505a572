"""TFRecord files without tensorflow: writer, CRC-checked reader, offset index.

Framing of one record, as written by tensorflow's RecordWriter (little-endian):

  uint64 length | uint32 masked_crc(length bytes) | data[length] | uint32 masked_crc(data)

with masked_crc(x) = rotate_right(crc32c(x), 15) + 0xa282ead8 (mod 2^32).

Random access goes through an offset index per file, built by one scan of the
record headers and cached beside the file as `{file}.idx`. The cache is used
while the file's size, mtime and the CRC32C of its first and last 64 KiB are
those stored in it and the index arrays match their own stored checksum;
otherwise (a rewritten file, an mtime restored by hand, a damaged or crafted
index) it is rebuilt. A change in the middle of a large file that keeps its
size, mtime and record lengths is still caught by the data CRC. Every read
verifies the length CRC and the data CRC; a damaged or truncated file raises
`TFRecordCorruptError` naming the file, the record number and the byte offset.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import threading
from typing import Iterator

from absl import logging
import crc32c
import numpy as np

_HEADER_BYTES = 12   # uint64 length + uint32 masked crc of the length
_FOOTER_BYTES = 4    # uint32 masked crc of the data
_MASK_DELTA = 0xA282EAD8
_INDEX_SUFFIX = ".idx"
_INDEX_VERSION = 2
_FINGERPRINT_BYTES = 64 * 1024   # head and tail of a file checked against its cached index


def masked_crc(data: bytes) -> int:
  """TFRecord's masked CRC32C of `data`."""
  crc = crc32c.crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
  """One record with its TFRecord framing."""
  length = struct.pack("<Q", len(data))
  return b"".join((length, struct.pack("<I", masked_crc(length)), data,
                   struct.pack("<I", masked_crc(data))))


class TFRecordCorruptError(ValueError):
  """A record whose framing or checksums are wrong.

  `field` is one of "tfrecord/length" (truncated file or a length that does
  not fit), "tfrecord/length_crc", "tfrecord/data_crc".
  """

  def __init__(self, path: str, record: int, offset: int, field: str, message: str):
    super().__init__(f"{path}: record {record} at byte offset {offset}: field {field!r}: "
                     f"{message}")
    self.path = path
    self.record = record
    self.offset = offset
    self.field = field
    self.message = message


def unframe(framed: bytes, path: str, record: int, offset: int) -> bytes:
  """Checks the framing of one record read from `offset` and returns its data."""
  if len(framed) < _HEADER_BYTES:
    raise TFRecordCorruptError(path, record, offset, "tfrecord/length",
                               f"file ends inside the record header ({len(framed)} of "
                               f"{_HEADER_BYTES} bytes); the file is truncated")
  length_bytes = framed[:8]
  (length,) = struct.unpack("<Q", length_bytes)
  (length_crc,) = struct.unpack("<I", framed[8:12])
  if masked_crc(length_bytes) != length_crc:
    raise TFRecordCorruptError(path, record, offset, "tfrecord/length_crc",
                               "length checksum mismatch; the file is corrupt")
  end = _HEADER_BYTES + length + _FOOTER_BYTES
  if len(framed) != end:
    raise TFRecordCorruptError(
        path, record, offset, "tfrecord/length",
        f"record of {length} bytes but {len(framed) - _HEADER_BYTES - _FOOTER_BYTES} "
        "bytes available; the file is truncated or changed after it was indexed")
  data = framed[_HEADER_BYTES:end - _FOOTER_BYTES]
  (data_crc,) = struct.unpack("<I", framed[end - _FOOTER_BYTES:])
  if masked_crc(data) != data_crc:
    raise TFRecordCorruptError(path, record, offset, "tfrecord/data_crc",
                               "data checksum mismatch; the file is corrupt")
  return data


class TFRecordWriter:
  """Appends framed records to a new file. Use as a context manager."""

  def __init__(self, path: str):
    self.path = path
    self._file = open(path, "wb")

  def write(self, data: bytes) -> None:
    self._file.write(frame(data))

  def close(self) -> None:
    self._file.close()

  def __enter__(self) -> TFRecordWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


@dataclasses.dataclass
class RecordIndex:
  """Where each record of one file starts.

  `offsets` [N] int64: byte offset of each record's header; `lengths` [N] int64:
  data bytes of each record. If the file does not end cleanly after record
  N - 1 (truncation, a damaged length), `tail_field`/`tail_message` say why
  and `tail_offset` where the unreadable part starts.
  """
  offsets: np.ndarray
  lengths: np.ndarray
  file_size: int
  mtime_ns: int
  tail_field: str = ""
  tail_message: str = ""
  tail_offset: int = -1
  fingerprint: tuple[int, int] = (0, 0)   # crc32c of the file's first and last 64 KiB

  def __len__(self) -> int:
    return len(self.offsets)

  def tail_error(self, path: str) -> TFRecordCorruptError | None:
    if not self.tail_field:
      return None
    return TFRecordCorruptError(
        path, len(self), self.tail_offset, self.tail_field,
        f"{self.tail_message} (records {len(self)} and later cannot be read)")


def scan_index(path: str) -> RecordIndex:
  """Builds the index of `path` by reading every record header once.

  Checks the length CRCs; data CRCs are checked on every read. A damaged length
  or a truncated end stops the scan: the records before it stay readable and
  the rest is reported through `RecordIndex.tail_error`.
  """
  offsets, lengths = [], []
  tail_field = tail_message = ""
  with open(path, "rb") as f:
    stat = os.fstat(f.fileno())
    size, offset = stat.st_size, 0
    fingerprint = _fingerprint(f.fileno(), size)
    while offset < size:
      header = f.read(_HEADER_BYTES)
      if len(header) < _HEADER_BYTES:
        tail_field, tail_message = "tfrecord/length", (
            f"file ends inside the record header ({len(header)} of {_HEADER_BYTES} bytes); "
            "the file is truncated")
        break
      (length,) = struct.unpack("<Q", header[:8])
      (length_crc,) = struct.unpack("<I", header[8:])
      if masked_crc(header[:8]) != length_crc:
        tail_field, tail_message = "tfrecord/length_crc", (
            "length checksum mismatch; the file is corrupt")
        break
      end = offset + _HEADER_BYTES + length + _FOOTER_BYTES
      if end > size:
        tail_field, tail_message = "tfrecord/length", (
            f"record of {length} bytes runs past the end of the file ({size} bytes); "
            "the file is truncated")
        break
      offsets.append(offset)
      lengths.append(length)
      offset = end
      f.seek(offset)
  return RecordIndex(np.asarray(offsets, np.int64), np.asarray(lengths, np.int64),
                     file_size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                     tail_field=tail_field, tail_message=tail_message,
                     tail_offset=offset if tail_field else -1, fingerprint=fingerprint)


def _fingerprint(fd: int, size: int) -> tuple[int, int]:
  """crc32c of the first and of the last 64 KiB (they overlap in small files)."""
  n = min(size, _FINGERPRINT_BYTES)
  return crc32c.crc32c(os.pread(fd, n, 0)), crc32c.crc32c(os.pread(fd, n, size - n))


def _checksum(index: RecordIndex) -> int:
  """crc32c over everything the index holds, so a damaged or edited cache is not used."""
  parts = [np.asarray([_INDEX_VERSION, index.file_size, index.mtime_ns, index.tail_offset,
                       *index.fingerprint], "<i8").tobytes(),
           np.asarray(index.offsets, "<i8").tobytes(), np.asarray(index.lengths, "<i8").tobytes(),
           f"{index.tail_field}\0{index.tail_message}".encode()]
  crc = 0
  for part in parts:
    crc = crc32c.crc32c(part, crc)
  return crc


def index_path(path: str) -> str:
  return path + _INDEX_SUFFIX


def _save_index(index: RecordIndex, path: str) -> None:
  """Writes the index atomically (readers never see a partial file)."""
  tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
  with open(tmp, "wb") as f:
    np.savez(f, version=np.int64(_INDEX_VERSION),
             stat=np.asarray([index.file_size, index.mtime_ns], np.int64),
             fingerprint=np.asarray(index.fingerprint, np.int64),
             offsets=index.offsets, lengths=index.lengths,
             tail=np.asarray([index.tail_field, index.tail_message]),
             tail_offset=np.int64(index.tail_offset), checksum=np.int64(_checksum(index)))
  os.replace(tmp, path)


def _load_index(path: str) -> RecordIndex | None:
  """The cached index, or None when missing, of another version, unreadable or edited."""
  try:
    with np.load(path, allow_pickle=False) as z:
      if int(z["version"]) != _INDEX_VERSION:
        return None
      size, mtime_ns = (int(v) for v in z["stat"])
      tail_field, tail_message = (str(v) for v in z["tail"])
      index = RecordIndex(z["offsets"], z["lengths"], size, mtime_ns, tail_field, tail_message,
                          int(z["tail_offset"]), tuple(int(v) for v in z["fingerprint"]))
      checksum = int(z["checksum"])
  except FileNotFoundError:
    return None
  except Exception as e:  # a damaged index is rebuilt, whatever numpy raises
    logging.warning("Rebuilding unreadable index %s (%s)", path, e)
    return None
  if checksum != _checksum(index):
    logging.warning("Rebuilding index %s: its checksum does not match its content", path)
    return None
  return index


def load_index(path: str) -> RecordIndex:
  """The index of the TFRecord file `path`, from its cache if still current.

  The cache `{path}.idx` is valid while the file's size, mtime and head/tail
  CRCs are those stored in it (see the module doc); otherwise (or if missing)
  the file is scanned and the cache rewritten. A read-only folder keeps the
  index in memory only. Raises OSError (e.g. IsADirectoryError) for a path
  that is not a readable file.
  """
  index = _load_index(index_path(path))
  if index is not None:
    with open(path, "rb") as f:
      stat = os.fstat(f.fileno())
      current = (stat.st_size, stat.st_mtime_ns) == (index.file_size, index.mtime_ns)
      if current and _fingerprint(f.fileno(), stat.st_size) == index.fingerprint:
        return index
  index = scan_index(path)
  if index.tail_field:
    logging.warning("%s", index.tail_error(path))
  try:
    _save_index(index, index_path(path))
  except OSError as e:
    logging.warning("Cannot cache the index of %s (%s); it is rebuilt on each run.", path, e)
  return index


class TFRecordReader:
  """Random access to the records of one TFRecord file; picklable.

  `read_record(i)` is one positional read (os.pread, thread-safe) and checks
  both CRCs. Iterating yields all records in order and raises at a truncated
  or damaged end.
  """

  def __init__(self, path: str, index: RecordIndex | None = None):
    self.path = path
    self.index = index if index is not None else load_index(path)
    self._fd = None
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.index)

  def _file(self) -> int:
    if self._fd is None:
      with self._lock:
        if self._fd is None:
          self._fd = os.open(self.path, os.O_RDONLY)
    return self._fd

  def read_record(self, i: int) -> bytes:
    """Data of record i (0-based), CRC-checked."""
    if not 0 <= i < len(self.index):
      raise IndexError(f"{self.path}: record {i} out of range [0, {len(self.index)})")
    offset = int(self.index.offsets[i])
    size = _HEADER_BYTES + int(self.index.lengths[i]) + _FOOTER_BYTES
    return unframe(os.pread(self._file(), size, offset), self.path, i, offset)

  def tail_error(self) -> TFRecordCorruptError | None:
    """The error for the unreadable end of the file, if it has one."""
    return self.index.tail_error(self.path)

  def __iter__(self) -> Iterator[bytes]:
    for i in range(len(self)):
      yield self.read_record(i)
    if (error := self.tail_error()) is not None:
      raise error

  def close(self) -> None:
    with self._lock:
      if self._fd is not None:
        os.close(self._fd)
        self._fd = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # interpreter shutdown
      pass

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_fd"] = None     # file descriptors and locks belong to one process
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()
