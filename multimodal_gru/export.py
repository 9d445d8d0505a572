r"""Exports a trained run's fusion model as StableHLO (`jax.export`): features in, scores out.

  python -m multimodal_gru.export --workdir=RUN [--out=RUN/export] [--checkpoint=STEP] \
      [--platforms=cpu,cuda,tpu]

Writes to OUT:
  model.jax_exported   `jax.export.Exported.serialize()`: the model with its parameters baked in
                       as constants, the batch dimension symbolic ("batch"), one window of the
                       run's fixed shape per example;
  model.stablehlo.mlir the same program as StableHLO MLIR text (for non-JAX compilers);
  input_spec.json      inputs and outputs (name, shape with "batch", dtype), the task, the
                       window's seconds and rates, the checkpoint step.

Inputs, in this order (see input_spec.json):  for each modality m of the run,
  m [batch, T_m, D_m] float32 features (zero-padded), m_mask [batch, T_m] bool (True = real step).
Outputs: classification: probabilities [batch, K], step_probabilities [batch, T_image, K];
regression: va [batch, 2], step_va [batch, T_image, 2] (valence, arousal in [-1, 1]).

The artifact runs with jax alone, without flax or this package (`load` below is all it takes).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_gru import paths

EXPORTED = "model.jax_exported"
MLIR = "model.stablehlo.mlir"
SPEC = "input_spec.json"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def input_names(config) -> list[str]:
  return [name for m in config.data.modalities for name in (m, f"{m}_mask")]


def input_shapes(config, batch: Any) -> dict[str, jax.ShapeDtypeStruct]:
  """{name: ShapeDtypeStruct}; `batch` an int or a symbolic dimension."""
  shapes = {}
  for m in config.data.modalities:
    t, d = int(config.data.max_steps[m]), int(config.data.dims[m])
    shapes[m] = jax.ShapeDtypeStruct((batch, t, d), jnp.float32)
    shapes[f"{m}_mask"] = jax.ShapeDtypeStruct((batch, t), jnp.bool_)
  return shapes


def scores_fn(config, params) -> Callable[..., dict[str, jax.Array]]:
  """(*inputs in `input_names` order) -> {output name: array}; parameters closed over."""
  from multimodal_gru.models.model import build_model
  model = build_model(config)
  names = input_names(config)

  def scores(*inputs):
    out = model.apply({"params": params}, dict(zip(names, inputs)), train=False)
    if config.task == "classification":
      return {"probabilities": jax.nn.softmax(out["logits"], axis=-1),
              "step_probabilities": jax.nn.softmax(out["step_logits"], axis=-1)}
    return {"va": out["va"], "step_va": out["step_va"]}

  return scores


def export_run(workdir: str, out_dir: str, checkpoint: int | None = None,
               platforms: Sequence[str] = DEFAULT_PLATFORMS) -> dict[str, Any]:
  """Exports the run in `workdir` to `out_dir`; returns the input spec written beside it."""
  from multimodal_gru import predict
  config = predict.load_run_config(workdir)
  params, step = predict.restore_params(workdir, config, step=checkpoint)
  params = jax.device_get(params)   # constants of the exported program, whatever the mesh
  (batch,) = jax.export.symbolic_shape("batch")
  shapes = input_shapes(config, batch)
  names = input_names(config)
  exported = jax.export.export(jax.jit(scores_fn(config, params)), platforms=tuple(platforms))(
      *[shapes[n] for n in names])
  outputs = jax.tree.unflatten(exported.out_tree, exported.out_avals)
  spec = {
      "format": "jax.export serialized (StableHLO), calling convention "
                f"v{exported.calling_convention_version}",
      "jax_version": jax.__version__,
      "platforms": list(exported.platforms),
      "task": config.task,
      "checkpoint_step": step,
      "run": workdir,
      "inputs": [{"name": n, "shape": ["batch", *shapes[n].shape[1:]],
                  "dtype": str(np.dtype(shapes[n].dtype))} for n in names],
      "outputs": [{"name": n, "shape": ["batch", *a.shape[1:]], "dtype": str(a.dtype)}
                  for n, a in outputs.items()],
  }
  if config.task == "classification":
    spec["num_classes"] = int(config.data.num_classes)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, EXPORTED), "wb") as f:
    f.write(exported.serialize())
  with open(os.path.join(out_dir, MLIR), "w") as f:
    f.write(exported.mlir_module())
  with open(os.path.join(out_dir, SPEC), "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
  logging.info("Exported step %d of %s to %s (%s)", step, workdir, out_dir, ", ".join(platforms))
  return spec


def load(out_dir: str) -> Callable[..., dict[str, np.ndarray]]:
  """The exported model as `f(**inputs) -> {output: array}`; needs jax and numpy only.

  The same few lines work outside this package:
    exported = jax.export.deserialize(open(f"{DIR}/model.jax_exported", "rb").read())
    spec = json.load(open(f"{DIR}/input_spec.json"))
    outputs = exported.call(*[inputs[i["name"]] for i in spec["inputs"]])
  """
  with open(os.path.join(out_dir, EXPORTED), "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with open(os.path.join(out_dir, SPEC)) as f:
    spec = json.load(f)

  def call(**inputs):
    return exported.call(*[inputs[i["name"]] for i in spec["inputs"]])

  return call


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Run folder (results.json and checkpoints/).")
  flags.DEFINE_string("out", None, "Output folder; default WORKDIR/export.")
  flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default the newest.")
  flags.DEFINE_list("platforms", list(DEFAULT_PLATFORMS), "Platforms the artifact lowers for.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from multimodal_gru import predict
  workdir = paths.resolve(FLAGS.workdir)
  out = paths.resolve(FLAGS.out or os.path.join(workdir, "export"))
  try:
    spec = export_run(workdir, out, FLAGS.checkpoint, FLAGS.platforms)
  except predict.PredictError as e:
    raise SystemExit(f"error: {e}") from None
  print(f"{out}: {len(spec['inputs'])} inputs, outputs "
        + ", ".join(f"{o['name']} {o['shape']}" for o in spec["outputs"]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
