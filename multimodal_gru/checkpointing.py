"""Orbax checkpoints of the train state together with the input iterator position.

The train state is restored into the shardings of the current mesh, so a
checkpoint resumes on any device count and mesh. grain saves the input position
as one `data_iter/process_{i}-of-{n}.json` per process: with the same process
count each process restores its own; with another count the positions are
recomputed (`reshard_iterator_states`) where that is exact, and otherwise the
restore stops with an error that says what to do. Without a data_iter folder
the state is restored and the input stream starts from its beginning.

Damage: `restore_latest` falls back to the newest readable checkpoint, moves
each unreadable one aside (STEP -> STEP.unreadable, kept for inspection; its
step number is then free to be saved again) and warns in one line with the
path and the reason; with none readable it raises `CheckpointError`. A failed
save (e.g. a full disk) raises `CheckpointSaveError` with the path and errno;
orbax writes into a temporary folder and commits by renaming it, so the
previous checkpoints stay intact.
"""

import contextlib
import gc
import json
import logging as pylogging
import re
import sys
from typing import Any, Sequence

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from input_pipeline import pipeline
from multimodal_gru import workdir as workdir_lib

DATA_ITER = "data_iter"
_ITERATOR_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")
_SKIP_COUNTS = "skipped_records"   # the skip counts in a train iterator state (pipeline.py)


class CheckpointError(RuntimeError):
  """No checkpoint in the folder can be restored; names the folder and the reasons."""


class CheckpointSaveError(RuntimeError):
  """Writing a checkpoint failed; names the path, the errno and what to do."""


class IteratorReshardError(ValueError):
  """The input position cannot carry over to this process count (not damage: no fallback)."""


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints under workdir/checkpoints."""
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(f"{workdir}/checkpoints", options=options,
                               item_names=("state", "data_iter"))


def _first_line(e: BaseException, limit: int = 300) -> str:
  """One line for `e`: its root cause's type and first line (orbax wraps tensorstore's)."""
  while e.__cause__ is not None:
    e = e.__cause__
  lines = str(e).strip().splitlines()
  text = f"{type(e).__name__}: {lines[0] if lines else ''}"
  return text if len(text) <= limit else text[:limit] + "..."


def _os_error(e: BaseException) -> OSError | None:
  """The first OSError in the cause/context chain of `e`, if any."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


@contextlib.contextmanager
def _save_errors(manager: ocp.CheckpointManager):
  """Turns a failed (possibly asynchronous) save into one CheckpointSaveError."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-exception-caught  # orbax wraps writer errors
    os_error = _os_error(e)
    what = (workdir_lib.describe_os_error(os_error, os_error.filename or str(manager.directory))
            if os_error is not None else f"{manager.directory}: {_first_line(e)}")
    try:
      manager.reload()   # the failed step is not in the folder (never committed)
      last = manager.latest_step()
    except Exception:  # pylint: disable=broad-exception-caught  # the folder itself may be gone
      last = None
    kept = (f"The checkpoint of step {last} in {manager.directory} is intact; rerun the same "
            "command to resume from it" if last is not None else
            "No earlier checkpoint was written; rerun the same command")
    raise CheckpointSaveError(f"Saving a checkpoint failed: {what}. {kept} once that is fixed.") from None


def save(manager: ocp.CheckpointManager, step: int, state, data_iter) -> None:
  """Starts an asynchronous save; raises CheckpointSaveError if this or the previous one failed."""
  with _save_errors(manager):
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=pipeline.iterator_save_args(data_iter)), force=True)


def wait_until_finished(manager: ocp.CheckpointManager, quiet: bool = False) -> None:
  """Waits for the pending save; raises CheckpointSaveError if it failed.

  quiet: log the failure in one line instead (while another error propagates).
  """
  try:
    with _save_errors(manager):
      manager.wait_until_finished()
  except CheckpointSaveError as e:
    if not quiet:
      raise
    logging.error("%s", e)


@contextlib.contextmanager
def _quiet_async_errors():
  """Collects the tracebacks that tensorstore callbacks and abandoned coroutines print.

  When one array of a checkpoint cannot be read, orbax's restore raises while
  the reads of the other arrays are still in flight; they finish on a closed
  event loop and each prints a traceback ("Event loop is closed", "Exception
  ignored in <coroutine>"), hundreds of lines for one bad file.
  """
  hooks = sys.excepthook, sys.unraisablehook
  suppressed = []
  sys.excepthook = lambda *exc: suppressed.append(exc[1])
  sys.unraisablehook = lambda unraisable: suppressed.append(unraisable.exc_value)
  try:
    yield
  finally:
    gc.collect()   # finalises the abandoned coroutines while their output is still collected
    sys.excepthook, sys.unraisablehook = hooks
    drop_abandoned_read_tracebacks()
    if suppressed:
      logging.info("Suppressed %d tracebacks of abandoned checkpoint reads.", len(suppressed))


def drop_abandoned_read_tracebacks() -> None:
  """From now on, drops the tracebacks of orbax coroutines finalised late (up to exit).

  Some abandoned reads stay referenced inside orbax until interpreter exit; only
  coroutines of orbax's own code are dropped, everything else is reported as before.
  """
  previous = sys.unraisablehook
  if getattr(previous, "drops_orbax_coroutines", False):
    return

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is None or "/orbax/" not in code.co_filename:
      previous(unraisable)

  hook.drops_orbax_coroutines = True
  sys.unraisablehook = hook
  asyncio_logger = pylogging.getLogger("asyncio")   # "Task/Future exception was never retrieved"
  if not any(isinstance(f, _DropOrbaxTasks) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(_DropOrbaxTasks())


class _DropOrbaxTasks(pylogging.Filter):
  """Drops asyncio's reports of orbax read tasks abandoned after a failed restore."""

  def filter(self, record):
    message = record.getMessage()
    return not ("exception was never retrieved" in message.split("\n", 1)[0]
                and ("/orbax/" in message or "OCDBT database" in message))


def _step_dir(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  return ocp.step.find_step_path(manager.directory, ocp.step.standard_name_format(), step=step)


def _set_aside(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  """Renames an unreadable STEP folder to STEP.unreadable[.N] so STEP can be saved again."""
  path = _step_dir(manager, step)
  target, n = path.parent / f"{path.name}.unreadable", 0
  while target.exists():
    n += 1
    target = path.parent / f"{path.name}.unreadable.{n}"
  if jax.process_index() == 0:
    path.rename(target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(f"checkpoint {step} set aside")
  return target


def restore_latest(manager: ocp.CheckpointManager, state, data_iter):
  """Restores the newest readable checkpoint into `state`'s structure and shardings.

  The shardings (mesh, device and process count) may differ from the saved
  ones. Returns (state, step), or (state, None) when there is no checkpoint;
  the data iterator's position is restored in place (see the module doc).
  Newer unreadable checkpoints are set aside with a warning; raises
  CheckpointError (and moves nothing) when none is readable.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return state, None
  failures = {}
  with _quiet_async_errors():
    for step in steps:
      try:
        restored = _restore_step(manager, step, state, data_iter)
      except IteratorReshardError:
        raise
      except Exception as e:  # pylint: disable=broad-exception-caught  # any damage: try older
        failures[step] = _first_line(e)
        logging.warning("Checkpoint %s is unreadable (%s); trying an older one.",
                        _step_dir(manager, step), failures[step])
        continue
      for bad in failures:
        logging.warning("Moved unreadable checkpoint %s to %s.", _step_dir(manager, bad),
                        _set_aside(manager, bad).name)
      if failures:
        manager.reload()
      logging.info("Restored checkpoint of step %d from %s", step, manager.directory)
      return restored, step
  reasons = "; ".join(f"step {step}: {reason}" for step, reason in failures.items())
  raise CheckpointError(
      f"No readable checkpoint in {manager.directory}: {reasons}. Fix the storage and rerun, "
      "or move the checkpoints folder away to train from the beginning.")


def _restore_step(manager: ocp.CheckpointManager, step: int, state, data_iter):
  """Restores checkpoint `step`; raises on any damage."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  iterator_dir = _step_dir(manager, step) / DATA_ITER
  saved = _saved_iterator_files(iterator_dir)
  states = [_read_iterator_file(path) for path in saved]
  if len(saved) == jax.process_count():
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data_iter=pipeline.iterator_restore_args(data_iter)))
    return restored["state"]

  # Another process count: check the input position before the (long) state restore.
  position = _resharded_position(states, data_iter, iterator_dir) if saved else None
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))
  if position is None:
    logging.warning("%s is missing: the input stream starts from its beginning.", iterator_dir)
  else:
    data_iter.set_state(position)
    data_iter.start_prefetch()
    logging.info("Input position of %d processes carried over to %d.", len(saved),
                 jax.process_count())
  return restored["state"]


def _read_iterator_file(path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"{path} is not a readable input position ({_first_line(e)})") from None


def _saved_iterator_files(iterator_dir) -> list:
  """The checkpoint's per-process iterator files, in process order ([] if none)."""
  if not iterator_dir.exists():
    return []
  found = {}
  for path in iterator_dir.iterdir():
    match = _ITERATOR_FILE.fullmatch(path.name)
    if match:
      found[int(match.group(1))] = (int(match.group(2)), path)
  counts = {count for count, _ in found.values()}
  if len(counts) != 1 or sorted(found) != list(range(counts.pop())):
    raise ValueError(f"{iterator_dir} holds an incomplete set of process files: "
                     f"{sorted(p.name for _, p in found.values())}")
  return [found[i][1] for i in sorted(found)]


def _resharded_position(states: list, data_iter, iterator_dir) -> dict[str, Any]:
  """This process's input position continuing the saved `states` of another process count."""
  try:
    return reshard_iterator_states(states, jax.process_index(), jax.process_count(),
                                   data_iter.get_state())
  except ValueError as e:
    raise IteratorReshardError(
        f"Cannot resume the input position in {iterator_dir}, written by {len(states)} "
        f"processes, with {jax.process_count()} processes: {e}. Resume with {len(states)} "
        "processes (the number of devices per process may differ), or delete that "
        "data_iter folder to restore the model and optimizer state and restart the input "
        "stream from its beginning.") from None


def _in_process_position(state: Any) -> tuple[int, dict[str, int]] | None:
  """(records consumed, skip counts) of an in-process train iterator state, else None."""
  if (isinstance(state, dict) and set(state) == {"parent", _SKIP_COUNTS}
      and isinstance(state["parent"], dict) and set(state["parent"]) == {"next_index"}
      and isinstance(state["parent"]["next_index"], int)):
    return state["parent"]["next_index"], dict(state[_SKIP_COUNTS])
  return None


def reshard_iterator_states(states: Sequence[Any], process_index: int, process_count: int,
                            template: Any) -> dict[str, Any]:
  """Position of process `process_index` of `process_count` that continues `states`.

  `states` are the train iterator positions saved by the N processes of the
  earlier run, `template` the state of a fresh iterator of this run. Process p
  of P reads positions p, p + P, ... of one global record stream
  (input_pipeline/pipeline.py); if all N processes consumed the same number k
  of records, together they consumed exactly the first k * N positions, so each
  new process continues after k * N / P records of its own slice and every
  record is still read once per epoch. Skip counts are carried over in process
  0. Raises ValueError when this is not exact: grain worker processes
  (data.worker_count > 0) interleave per-worker positions, and skipped bad
  records leave the processes at different positions.
  """
  saved = [_in_process_position(s) for s in states]
  if any(s is None for s in saved) or _in_process_position(template) is None:
    raise ValueError("only in-process input iterators (data.worker_count=0, before and now) "
                     "can change the process count")
  consumed = {k for k, _ in saved}
  if len(consumed) != 1:
    raise ValueError(f"the processes stopped at different record counts {sorted(consumed)} "
                     "(bad records were skipped)")
  total = consumed.pop() * len(states)
  if total % process_count:
    raise ValueError(f"{total} records consumed in all are not divisible by {process_count} "
                     "processes")
  counts: dict[str, int] = {}
  if process_index == 0:
    for _, skipped in saved:
      for field, n in skipped.items():
        counts[field] = counts.get(field, 0) + n
  return {"parent": {"next_index": total // process_count}, _SKIP_COUNTS: counts}
