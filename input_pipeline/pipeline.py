"""From TFRecord shards to host-local batches, with grain.

Training (`create_train_iterator`): an infinite grain iterator. Record indices
0..N-1 of the split are shuffled globally, epoch by epoch, with the seed
`config.data.shuffle_seed + epoch` (grain's `shuffle` followed by `repeat`);
process p of P takes every P-th position of that stream (`[p::P]`), so in
every epoch the processes see disjoint slices whose union is the whole split.
Batches hold `config.train.batch_size // P` examples; partial batches are
never formed (the stream is infinite). With `config.data.worker_count > 0` the
batches are made in that many grain worker processes (spawned; absl flags are
marked parsed if the caller has not parsed them, as grain reads its own);
call `it.close()` when done.

Evaluation (`create_eval_batches`): one pass in file order; process p takes
records p, p + P, ... . Every process yields the same number of batches,
ceil(ceil(N / P) / B_local), padding the last ones with example_mask False, so
that a multi-host evaluation step never waits for a missing batch. Evaluation
reads with `config.data.read_threads` threads and never starts worker
processes (their start-up would be paid at every evaluation).

Every record is CRC-checked, decoded (`record_format.decode`), validated against
the config and padded/cropped (`examples.to_example`). An invalid record raises
`BadRecordError` naming the file, the record number and the field; with
`config.data.skip_bad_records=True` it is skipped and counted instead.

Damaged shards (empty, truncated, a damaged length, a directory or dangling
symlink in a shard's place, fewer records than written; `shard_check`) are
found whenever a split is opened: they raise `BadShardError`, or with
skip_bad_records are left out (their readable records are used) with one
warning per file and process giving the records lost. `check_split` runs the
same check at start-up and returns the report (records lost per file) for
results.json.

Skip counts: the counting stage runs where the records are read (in the grain
worker processes when `config.data.worker_count > 0`) and keeps its counts in
the iterator state. grain ships each worker's state with the elements it
produces, so `skipped_records(it)` read from `it.get_state()` in the main
process covers exactly the batches consumed so far, with or without workers,
and the counts are checkpointed and restored with the iterator. A record is
counted each time it is met (once per epoch). Records lost with a damaged
file's end are not in these counts but in `check_split`'s report, once.

Checkpointing: `iterator_save_args(it)` / `iterator_restore_args(it)` give the
orbax args of grain's `CheckpointHandler` for an `ocp.args.Composite` entry
(key "data_iter"). The handler writes one `process_{i}-of-{n}.json` per JAX
process into the checkpoint, so each process restores its own position.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Iterator

from absl import flags
from absl import logging
import grain
import numpy as np

from input_pipeline import examples
from input_pipeline import record_format
from input_pipeline import shard_check
from input_pipeline import shards
from input_pipeline import source as source_lib
from input_pipeline import tfrecord

_SKIP_HINT = ("Fix or rewrite the data, or set data.skip_bad_records=True to skip (and count) "
              "bad records.")
_COUNTS_KEY = "skipped_records"
_MAX_SKIP_WARNINGS = 20   # per pass over a split (and per worker process)
BadShardError = shard_check.BadShardError
_warned: set[str] = set()   # damaged files already warned about in this process


class BadRecordError(ValueError):
  """A record that cannot be used; names the file, the record and the field.

  `skipping`: the record is being skipped (data.skip_bad_records=True), so the
  message does not suggest setting it.
  """

  def __init__(self, path: str, record: int, field: str, message: str, skipping: bool = False):
    hint = "Skipped (data.skip_bad_records=True)." if skipping else _SKIP_HINT
    super().__init__(f"Bad record {record} in {path}: {message}. {hint}")
    self.path = path
    self.record = record
    self.field = field


@dataclasses.dataclass(frozen=True)
class _Skipped:
  """Stands in for a bad record until the counting stage drops it."""
  field: str


class _RecordToExample:
  """Global record index -> example dict (or `_Skipped`). Thread-safe, picklable."""

  def __init__(self, source: source_lib.TFRecordShardsSource, spec: examples.ExampleSpec,
               skip_bad_records: bool):
    self._source = source
    self._spec = spec
    self._skip_bad_records = skip_bad_records
    self._warnings = 0   # skipped records logged by this copy (per pass, per worker)

  def __call__(self, index: int) -> dict[str, np.ndarray] | _Skipped:
    clip_id = None
    try:
      clip = record_format.decode(self._source[index], self._spec.modalities)
      clip_id = clip.clip_id
      return examples.to_example(clip, self._spec)
    except (tfrecord.TFRecordCorruptError, record_format.RecordError) as e:
      path, record = self._source.locate(index)
      offset = f"byte offset {e.offset}, " if isinstance(e, tfrecord.TFRecordCorruptError) else ""
      clip = f"clip {clip_id!r}, " if clip_id is not None else ""
      error = BadRecordError(path, record, e.field, f"{offset}{clip}field {e.field!r}: {e.message}",
                             skipping=self._skip_bad_records)
      if not self._skip_bad_records:
        raise error from e
      if self._warnings < _MAX_SKIP_WARNINGS:
        self._warnings += 1
        logging.warning("%s", error)
      return _Skipped(e.field)


class _DropSkippedIterDataset(grain.IterDataset):
  """Drops `_Skipped` elements and counts them by field in the iterator state."""

  def __iter__(self) -> _DropSkippedIterator:
    return _DropSkippedIterator(self._parent.__iter__())

  def __str__(self) -> str:
    return "DropSkippedIterDataset"


class _DropSkippedIterator(grain.DatasetIterator):

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)
    self._counts: dict[str, int] = {}

  def __next__(self):
    while True:
      element = next(self._parent)
      if not isinstance(element, _Skipped):
        return element
      self._counts[element.field] = self._counts.get(element.field, 0) + 1

  def get_state(self) -> dict[str, Any]:
    return {"parent": self._parent.get_state(), _COUNTS_KEY: dict(self._counts)}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    self._counts = dict(state[_COUNTS_KEY])


def _sum_counts(state: Any, total: dict[str, int]) -> dict[str, int]:
  if isinstance(state, dict):
    for key, value in state.items():
      if key == _COUNTS_KEY:
        for field, n in value.items():
          total[field] = total.get(field, 0) + int(n)
      else:
        _sum_counts(value, total)
  elif isinstance(state, (list, tuple)):
    for value in state:
      _sum_counts(value, total)
  return total


def skipped_records(iterator: grain.DatasetIterator | EvalBatches) -> dict[str, int]:
  """Bad records skipped so far by this process's iterator: {field: count}."""
  if isinstance(iterator, EvalBatches):
    iterator = iterator.examples
  return _sum_counts(iterator.get_state(), {})


def _process_index_and_count(process_index: int | None,
                             process_count: int | None) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top  # not needed in grain workers
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return process_index, process_count


def _local_batch_size(global_batch_size: int, process_count: int, name: str) -> int:
  if global_batch_size < process_count or global_batch_size % process_count:
    raise ValueError(f"config.train.{name}={global_batch_size} must be a positive multiple "
                     f"of the process count {process_count}")
  return global_batch_size // process_count


def _scan_split(config, split: str, full_crc: bool) -> shard_check.SplitScan:
  """The shard check of `split`; raises `BadShardError`, or warns when skipping."""
  paths = shards.split_files(config.data.dir, split)
  scan = shard_check.scan(paths, shards.read_manifest(config.data.dir, split),
                          full_crc=full_crc)
  if scan.damage and not config.data.skip_bad_records:
    raise BadShardError(split, config.data.dir, scan.damage, len(paths))
  for damage in scan.damage:
    if damage.path not in _warned:
      _warned.add(damage.path)
      logging.warning("Damaged shard in split %r; only its readable records are used "
                      "(data.skip_bad_records=True): %s", split, damage)
  return scan


def _open_split(config, split: str) -> source_lib.TFRecordShardsSource:
  scan = _scan_split(config, split, full_crc=False)
  source = source_lib.TFRecordShardsSource([r.path for r in scan.readers], scan.readers)
  if len(source) == 0:
    raise shards.DataNotFoundError(f"Split {split!r} in {config.data.dir!r} has no records. "
                                   f"{shards.HOW_TO_GET_DATA}")
  return source


def num_examples(config, split: str) -> int:
  """Records of `split` with intact framing (before any content validation)."""
  return len(_open_split(config, split))


def check_split(config, split: str, *, full_crc: bool = False) -> dict[str, Any]:
  """The start-up check of `split`'s shards; returns the report for results.json.

  Finds empty, truncated, missing (dangling symlink), non-file and unreadable
  shards, damaged record lengths and shards with fewer records than written
  (`shard_check`), through the offset index of every shard. With `full_crc`
  it also reads every record and checks its data CRC. The trainer checks the
  train split with framing only (full_crc=False: a CRC pass over a large split
  costs as much as an epoch of reading) and the eval split with full_crc=True.

  Without config.data.skip_bad_records any damage raises one `BadShardError`
  naming every damaged file and what to do. With it, each damaged file gets one
  warning with its records lost, and the report says what is lost:

    {"split": "eval", "shards": 4, "full_crc": True,
     "records": 1000,                 # readable records, the ones used
     "records_lost": 24,              # sum over "files"
     "estimated": False,              # True if any count below is an estimate
     "files": {path: {"field": "tfrecord/length", "reason": "...",
                      "records_lost": 24, "estimated": False}}}   # damaged files only

  Counts are exact where the split's writer recorded them (`shards.write_split`
  writes {split}.shards.json); otherwise estimated (see `shard_check`).
  """
  scan = _scan_split(config, split, full_crc)
  if scan.records == 0:
    raise shards.DataNotFoundError(f"Split {split!r} in {config.data.dir!r} has no readable "
                                   f"records. {shards.HOW_TO_GET_DATA}")
  files = {d.path: d.to_json() for d in scan.damage}
  return {"split": split, "shards": scan.num_shards, "full_crc": bool(full_crc),
          "records": scan.records, "records_lost": scan.records_lost,
          "estimated": any(d.estimated for d in scan.damage), "files": files}


def _read_options(config, batch_size: int) -> grain.ReadOptions:
  threads = int(config.data.read_threads)
  return grain.ReadOptions(num_threads=threads,
                           prefetch_buffer_size=max(2 * batch_size, 4 * threads, 1))


def _with_workers(ds: grain.IterDataset, config) -> grain.IterDataset:
  if config.data.worker_count <= 0:
    return ds
  if not flags.FLAGS.is_parsed():   # grain reads its absl flags; defaults are fine here
    flags.FLAGS.mark_as_parsed()
  return ds.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=int(config.data.worker_count),
      per_worker_buffer_size=int(config.data.worker_buffer_size)))


def _examples(config, index_stream: grain.MapDataset,
              source: source_lib.TFRecordShardsSource, batch_size: int) -> grain.IterDataset:
  spec = examples.ExampleSpec.from_config(config)
  ds = index_stream.map(_RecordToExample(source, spec, bool(config.data.skip_bad_records)))
  return _DropSkippedIterDataset(ds.to_iter_dataset(_read_options(config, batch_size)))


def create_train_iterator(config, *, process_index: int | None = None,
                          process_count: int | None = None) -> grain.DatasetIterator:
  """Infinite iterator of host-local training batches (see the module doc).

  Each batch is a dict of numpy arrays with leading dim
  config.train.batch_size // process_count (the batch contract of
  `input_pipeline.examples`). Supports get_state()/set_state().
  """
  process_index, process_count = _process_index_and_count(process_index, process_count)
  batch_size = _local_batch_size(config.train.batch_size, process_count, "batch_size")
  split = config.data.train_split
  source = _open_split(config, split)
  indices = (grain.MapDataset.range(len(source))
             .shuffle(seed=int(config.data.shuffle_seed))
             .repeat())[process_index::process_count]
  ds = _examples(config, indices, source, batch_size)
  ds = ds.batch(batch_size, drop_remainder=True)
  logging.info("Train input: %s, %d records in %d files, process %d/%d, batch %d",
               split, len(source), len(source.paths), process_index, process_count, batch_size)
  return iter(_with_workers(ds, config))


class EvalBatches(Iterator[dict[str, np.ndarray]]):
  """One pass of padded eval batches; `len()` is the number of batches."""

  def __init__(self, examples_iter: grain.DatasetIterator, spec: examples.ExampleSpec,
               batch_size: int, num_batches: int):
    self.examples = examples_iter
    self._spec = spec
    self._batch_size = batch_size
    self._num_batches = num_batches
    self._emitted = 0

  def __len__(self) -> int:
    return self._num_batches

  def __next__(self) -> dict[str, np.ndarray]:
    if self._emitted == self._num_batches:
      if next(self.examples, None) is not None:
        raise AssertionError("eval examples left after the last batch")
      raise StopIteration
    rows = list(itertools.islice(self.examples, self._batch_size))
    rows += [self._spec.empty_example()] * (self._batch_size - len(rows))
    self._emitted += 1
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def create_eval_batches(config, *, split: str | None = None, process_index: int | None = None,
                        process_count: int | None = None) -> EvalBatches:
  """One deterministic pass over `split` (default config.data.eval_split).

  Batches of config.train.eval_batch_size // process_count examples; the last
  ones are padded with example_mask False (see the module doc).
  """
  process_index, process_count = _process_index_and_count(process_index, process_count)
  batch_size = _local_batch_size(config.train.eval_batch_size, process_count,
                                 "eval_batch_size")
  split = split or config.data.eval_split
  source = _open_split(config, split)
  num_batches = math.ceil(math.ceil(len(source) / process_count) / batch_size)
  indices = grain.MapDataset.range(len(source))[process_index::process_count]
  ds = _examples(config, indices, source, batch_size)   # threads only: no worker start-up per pass
  return EvalBatches(iter(ds), examples.ExampleSpec.from_config(config), batch_size,
                     num_batches)


def iterator_save_args(iterator: grain.DatasetIterator):
  """orbax args saving `iterator`'s position: Composite(..., data_iter=<this>)."""
  return grain.checkpoint.CheckpointSave(iterator)


def iterator_restore_args(iterator: grain.DatasetIterator):
  """orbax args restoring the position saved by `iterator_save_args` into `iterator`."""
  return grain.checkpoint.CheckpointRestore(iterator)
