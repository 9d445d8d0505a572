"""A finished run, ready to evaluate: its config, a checkpoint's parameters and a jitted eval step."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


@dataclasses.dataclass
class RestoredRun:
  config: Any
  params: Any
  step: int
  eval_step: Callable      # (params, batch) -> eval_outputs, replicated
  to_global: Callable      # host batch -> global batch on the mesh


def restore_run(workdir: str, checkpoint: int | None = None, config=None) -> RestoredRun:
  """Checkpoint `checkpoint` (default the newest) of the run in `workdir`, on the current devices.

  `config` defaults to the run's recorded config (results.json).
  """
  from multimodal_gru import evaluate, predict, sharding  # pylint: disable=g-import-not-at-top
  from multimodal_gru.models.model import build_model  # pylint: disable=g-import-not-at-top
  config = config if config is not None else predict.load_run_config(workdir)
  mesh = sharding.make_mesh(config.mesh)
  params, step = predict.restore_params(workdir, config, checkpoint)
  model = build_model(config)
  eval_step = jax.jit(
      lambda p, b: evaluate.eval_outputs(config, model.apply({"params": p}, b, train=False), b),
      out_shardings=sharding.replicated(mesh))
  return RestoredRun(config, params, step, eval_step,
                     lambda b: sharding.make_global_batch(b, mesh))
