"""Training and evaluation loop.

Start-up checks, before any expensive work: the workdir is writable, locked
for this run and trained with a compatible config (multimodal_gru/workdir.py),
the batch sizes split over the mesh, and the shards of the train and eval
splits are intact (`pipeline.check_split`; its reports go to results.json
under "data_check"). At a step that both saves and evaluates, the save comes
first, so a failing evaluation loses no training.
"""

import contextlib
import json
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from etils import epath
from flax.training import train_state as train_state_lib

from input_pipeline import pipeline
from multimodal_gru import checkpointing, evaluate, objective, optim, sharding, summary
from multimodal_gru import workdir as workdir_lib
from multimodal_gru.evaluate import robustness
from multimodal_gru.models import augment
from multimodal_gru.models.model import build_model

PRIMARY_METRIC = {"classification": "clip_accuracy", "regression": "step_ccc_mean"}


class NonFiniteLossError(RuntimeError):
  pass


class TrainState(train_state_lib.TrainState):
  pass


def dummy_batch(config, batch_size: int = 2) -> dict[str, np.ndarray]:
  """A zero batch with the pipeline's structure (for initialisation and tracing)."""
  batch = {}
  for m in config.data.modalities:
    t, d = config.data.max_steps[m], config.data.dims[m]
    batch[m] = np.zeros((batch_size, t, d), np.float32)
    batch[f"{m}_mask"] = np.ones((batch_size, t), bool)
  t_image = config.data.max_steps["image"]
  if config.task == "classification":
    batch["label"] = np.zeros((batch_size,), np.int32)
    batch["step_label"] = np.zeros((batch_size, t_image), np.int32)
  else:
    batch["va"] = np.zeros((batch_size, t_image, 2), np.float32)
  batch["step_valid"] = np.ones((batch_size, t_image), bool)
  batch["example_mask"] = np.ones((batch_size,), bool)
  return batch


def create_train_state(config, model, mesh):
  """Initialises parameters and optimizer state directly in their shardings."""
  tx = optim.make_optimizer(config)
  sample = dummy_batch(config)

  def init(rng):
    params = model.init({"params": rng}, sample, train=False)["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx)

  rng = jax.random.key(config.seed)
  shardings = sharding.param_shardings(jax.eval_shape(init, rng), mesh)
  return jax.jit(init, out_shardings=shardings)(rng), shardings


def make_train_step(config, model):
  """(state, batch, rng) -> (state, metrics); the rng is folded with the step."""
  use_mixup = (config.task == "classification" and config.augment.enabled
               and config.augment.mixup_alpha > 0)
  names = model.streams()

  def train_step(state, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    rng_augment, rng_dropout, rng_mixup = jax.random.split(rng, 3)
    clip_targets = step_targets = None
    if use_mixup:
      batch, clip_targets, step_targets = augment.mixup(
          rng_mixup, batch, config.data.num_classes, config.augment.mixup_alpha, names)

    def loss_fn(params):
      outputs = state.apply_fn({"params": params}, batch, train=True,
                               rngs={"dropout": rng_dropout, "augment": rng_augment})
      return objective.compute_losses(outputs, batch, config, clip_targets, step_targets)

    grads, parts = jax.grad(loss_fn, has_aux=True)(state.params)
    parts["grad_norm"] = jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(grads)))
    parts["learning_rate"] = optim.learning_rate_schedule(config)(state.step)
    return state.apply_gradients(grads=grads), parts

  return train_step


def make_eval_step(config, model):
  def eval_step(state, batch):
    outputs = state.apply_fn({"params": state.params}, batch, train=False)
    return evaluate.eval_outputs(config, outputs, batch)
  return eval_step


class _Preemption:
  """Turns SIGTERM (a TPU VM preemption notice) into a flag the loop checks."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    logging.warning("SIGTERM received: saving a checkpoint and exiting.")
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _check_finite(metrics: dict, step: int, manager) -> None:
  if not np.isfinite(metrics["loss"]):
    last = manager.latest_step()
    where = (f"the last good checkpoint (step {last}) is kept in {manager.directory}"
             if last is not None else "no checkpoint was written yet")
    raise NonFiniteLossError(
        f"Non-finite loss ({metrics['loss']}) at step {step}; {where}. Lower "
        "--config.optim.learning_rate or --config.optim.grad_clip_norm, or check the data "
        "(the input pipeline rejects NaN/Inf features), then rerun the same command to resume.")


def _eval_skips(batches) -> dict[str, int]:
  """Bad eval records skipped by this process ({} for a plain iterable of batches)."""
  if isinstance(batches, pipeline.EvalBatches):
    return pipeline.skipped_records(batches)
  return {}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its newest checkpoint; returns results.json's content.

  Process 0 holds the workdir lock (workdir.WorkdirLock) for the whole run.
  """
  workdir_lib.check_writable(workdir, jax.process_index())
  is_chief = jax.process_index() == 0
  with workdir_lib.WorkdirLock(workdir) if is_chief else contextlib.nullcontext():
    return _train_and_evaluate(config, workdir, is_chief)


def _train_and_evaluate(config, workdir: str, is_chief: bool) -> dict[str, Any]:
  record_config = workdir_lib.check_config(workdir, config)
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_mesh_batch_sizes(config.train, mesh)
  if config.data.generate_demo:
    from multimodal_gru import demo_data, demo_data_v2
    generators = {"v1": demo_data, "v2": demo_data_v2}
    if config.data.demo_generator not in generators:
      raise ValueError(f"config.data.demo_generator={config.data.demo_generator!r}: one of "
                       f"{sorted(generators)}")
    generators[config.data.demo_generator].ensure_demo_dataset(config.data.dir)
  # Framing of the train shards (a CRC pass would cost an epoch), every record of the eval ones.
  data_check = {"train": pipeline.check_split(config, config.data.train_split),
                "eval": pipeline.check_split(config, config.data.eval_split, full_crc=True)}
  model = build_model(config)
  writer = summary.create_default_writer(workdir, just_logging=not is_chief)

  train_iter = pipeline.create_train_iterator(config)
  state, state_shardings = create_train_state(config, model, mesh)
  param_count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
  logging.info("Model: fusion=%s, %.2fM parameters", config.model.fusion, param_count / 1e6)

  manager = checkpointing.create_manager(workdir, config.train.keep_checkpoints)
  state, restored_step = checkpointing.restore_latest(manager, state, train_iter)
  start_step = int(restored_step or 0)
  if restored_step is None:
    writer.write_hparams(config.to_dict())
  if is_chief and record_config:
    workdir_lib.record_config(workdir, config)

  batch_sharding = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)
  to_global = lambda b: sharding.make_global_batch(b, mesh)
  train_step = jax.jit(make_train_step(config, model),
                       in_shardings=(state_shardings, batch_sharding, replicated),
                       out_shardings=(state_shardings, replicated), donate_argnums=(0,))
  eval_step = jax.jit(make_eval_step(config, model),
                      in_shardings=(state_shardings, batch_sharding), out_shardings=replicated)
  rng = jax.random.key(config.seed + 1)
  eval_skipped: dict[str, int] = {}

  def run_eval(step):
    nonlocal eval_skipped
    t0 = time.time()
    batches = pipeline.create_eval_batches(config)
    metrics = evaluate.evaluate(config, eval_step, state, batches, to_global)
    eval_skipped = _eval_skips(batches)
    logging.info("eval @ step %d (%.1fs): %s", step, time.time() - t0,
                 ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    if eval_skipped:
      logging.warning("Skipped %d bad eval records (data.skip_bad_records=True), the metrics "
                      "cover %d examples: %s", sum(eval_skipped.values()),
                      int(metrics["num_examples"]), eval_skipped)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
    return metrics

  num_steps = config.train.num_steps
  if start_step >= num_steps:
    logging.info("num_steps=0: evaluating the initial (untrained) model." if start_step == 0 else
                 f"Restored step {start_step} >= num_steps={num_steps}: evaluating it.")
  preemption = _Preemption()
  eval_metrics: dict[str, float] = {}
  step = start_step
  last_metrics = None
  t_log, step_log = time.time(), start_step
  try:
    while step < num_steps:
      batch = to_global(next(train_iter))
      state, last_metrics = train_step(state, batch, rng)
      step += 1
      if step == start_step + 1 and step % config.train.log_every:   # keep compilation out of steps/s and ETA
        jax.block_until_ready(last_metrics)
        logging.info("First step (compilation included) took %.1fs", time.time() - t_log)
        t_log, step_log = time.time(), step
      is_last = step == num_steps
      if step % config.train.log_every == 0 or is_last:
        scalars = {k: float(v) for k, v in jax.device_get(last_metrics).items()}
        _check_finite(scalars, step, manager)
        now = time.time()
        steps_per_s = (step - step_log) / max(now - t_log, 1e-9)
        t_log, step_log = now, step
        scalars.update(steps_per_sec=steps_per_s,
                       examples_per_sec=steps_per_s * config.train.batch_size)
        writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
        logging.info("step %d/%d  loss=%.4f  %.2f steps/s  %.0f examples/s  ETA %s",
                     step, num_steps, scalars["loss"], steps_per_s, scalars["examples_per_sec"],
                     _format_eta((num_steps - step) / max(steps_per_s, 1e-9)))
      # Save before evaluating: a failing evaluation (e.g. a bad eval record) loses no training.
      if step % config.train.checkpoint_every == 0 or is_last or preemption.requested:
        _check_finite({"loss": float(last_metrics["loss"])}, step, manager)
        checkpointing.save(manager, step, state, train_iter)
      if preemption.requested:
        checkpointing.wait_until_finished(manager)
        logging.warning("Checkpoint of step %d saved after SIGTERM; rerun the same command to resume.", step)
        return {"step": step, "preempted": True}
      if step % config.train.eval_every == 0 or is_last:
        eval_metrics = run_eval(step)
        t_log = time.time()   # eval time is not training throughput
    if not eval_metrics:   # num_steps=0, or resumed at the final step: evaluate the restored state
      eval_metrics = run_eval(step)
    eval_metrics.update(robustness.evaluate_all(   # {} unless config.eval.robustness
        config, eval_step, state, lambda: pipeline.create_eval_batches(config), to_global,
        writer=writer, step=step))
    checkpointing.wait_until_finished(manager)
  finally:
    checkpointing.wait_until_finished(manager, quiet=True)
    preemption.restore()
    writer.flush()

  # The challenges' protocol on the final model: every frame of every eval video (video_* keys).
  video_metrics = evaluate.video_level_metrics(config, eval_step, state, to_global)
  if video_metrics:
    eval_metrics.update(video_metrics)
    writer.write_scalars(step, {f"eval/{k}": v for k, v in video_metrics.items()})

  skipped = pipeline.skipped_records(train_iter)
  if skipped:
    logging.warning("Skipped bad training records (data.skip_bad_records=True): %s", skipped)
  results = {
      "step": step,
      "skipped_records": {"train": skipped, "eval": eval_skipped},
      "data_check": data_check,
      "task": config.task,
      "primary_metric": PRIMARY_METRIC[config.task],
      "metrics": eval_metrics,
      "num_parameters": param_count,
      "config": json.loads(config.to_json_best_effort()),
  }
  if is_chief:
    (epath.Path(workdir) / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
  writer.close()
  return results
