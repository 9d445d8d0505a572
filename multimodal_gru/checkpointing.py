"""Orbax checkpoints of the train state together with the input iterator position.

The train state is restored into the shardings of the current mesh, so a
checkpoint resumes on any device count and mesh. grain saves the input position
as one `data_iter/process_{i}-of-{n}.json` per process: with the same process
count each process restores its own; with another count the positions are
recomputed (`reshard_iterator_states`) where that is exact, and otherwise the
restore stops with an error that says what to do. Without a data_iter folder
the state is restored and the input stream starts from its beginning.
"""

import json
import re
from typing import Any, Sequence

import jax
import orbax.checkpoint as ocp
from absl import logging

from input_pipeline import pipeline

DATA_ITER = "data_iter"
_ITERATOR_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json")
_SKIP_COUNTS = "skipped_records"   # the skip counts in a train iterator state (pipeline.py)


def create_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
  """Keeps the newest `keep` checkpoints under workdir/checkpoints."""
  options = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep),
      enable_async_checkpointing=True, create=True)
  return ocp.CheckpointManager(f"{workdir}/checkpoints", options=options,
                               item_names=("state", "data_iter"))


def save(manager: ocp.CheckpointManager, step: int, state, data_iter) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data_iter=pipeline.iterator_save_args(data_iter)), force=True)


def restore_latest(manager: ocp.CheckpointManager, state, data_iter):
  """Restores the newest checkpoint into `state`'s structure and shardings.

  The shardings (mesh, device and process count) may differ from the saved
  ones. Returns (state, step), or (state, None) when there is no checkpoint;
  the data iterator's position is restored in place (see the module doc).
  """
  step = manager.latest_step()
  if step is None:
    return state, None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  iterator_dir = ocp.step.find_step_path(manager.directory, ocp.step.standard_name_format(),
                                         step=step) / DATA_ITER
  saved = _saved_iterator_files(iterator_dir)
  if len(saved) == jax.process_count():
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data_iter=pipeline.iterator_restore_args(data_iter)))
    logging.info("Restored checkpoint of step %d from %s", step, manager.directory)
    return restored["state"], step

  # Another process count: check the input position before the (long) state restore.
  position = _resharded_position(saved, data_iter, iterator_dir) if saved else None
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))
  if position is None:
    logging.warning("%s is missing: the input stream starts from its beginning.", iterator_dir)
  else:
    data_iter.set_state(position)
    data_iter.start_prefetch()
    logging.info("Input position of %d processes carried over to %d.", len(saved),
                 jax.process_count())
  logging.info("Restored checkpoint of step %d from %s", step, manager.directory)
  return restored["state"], step


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


def _resharded_position(saved: list, data_iter, iterator_dir) -> dict[str, Any]:
  """This process's input position continuing the `saved` positions of another process count."""
  states = [json.loads(path.read_text()) for path in saved]
  try:
    return reshard_iterator_states(states, jax.process_index(), jax.process_count(),
                                   data_iter.get_state())
  except ValueError as e:
    raise ValueError(
        f"Cannot resume the input position in {iterator_dir}, written by {len(saved)} "
        f"processes, with {jax.process_count()} processes: {e}. Resume with {len(saved)} "
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
