"""Orbax checkpoints of the train state together with the input iterator position."""

import jax
import orbax.checkpoint as ocp
from absl import logging

from input_pipeline import pipeline


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
  """Restores the newest checkpoint into `state` (same structure and shardings).

  Returns (state, step), or (state, None) when there is no checkpoint; the data
  iterator's position is restored in place.
  """
  step = manager.latest_step()
  if step is None:
    return state, None
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract),
      data_iter=pipeline.iterator_restore_args(data_iter)))
  logging.info("Restored checkpoint of step %d from %s", step, manager.directory)
  return restored["state"], step
