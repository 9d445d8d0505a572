"""Export: the StableHLO artifact of a trained run equals the in-process model, runs with jax alone."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import tiny_config
from multimodal_gru import export, predict, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module",
                params=["classification", pytest.param("regression", marks=pytest.mark.slow)])
def exported_run(request, tiny_demo_dir, tmp_path_factory):
  """(workdir, export dir, config) of a tiny trained run, exported for the CPU."""
  root = tmp_path_factory.mktemp(f"export_{request.param}")
  config = tiny_config(tiny_demo_dir, request.param)
  workdir = str(root / "run")
  train.train_and_evaluate(config, workdir)
  out = str(root / "export")
  export.export_run(workdir, out, platforms=("cpu",))
  return workdir, out, predict.load_run_config(workdir)


def _inputs(config, batch, seed):
  """Random features with ragged masks, as the pipeline pads them."""
  rng = np.random.default_rng(seed)
  inputs = {}
  for m in config.data.modalities:
    t, d = config.data.max_steps[m], config.data.dims[m]
    lengths = rng.integers(1, t + 1, size=batch)
    mask = np.arange(t)[None] < lengths[:, None]
    inputs[m] = (rng.normal(size=(batch, t, d)) * mask[..., None]).astype(np.float32)
    inputs[f"{m}_mask"] = mask
  return inputs


def test_exported_model_equals_in_process_model(exported_run):
  workdir, out, config = exported_run
  params, step = predict.restore_params(workdir, config)
  in_process = jax.jit(export.scores_fn(config, params))
  run = export.load(out)
  for batch in (1, 5):   # the batch dimension is symbolic: one artifact for every size
    inputs = _inputs(config, batch, seed=batch)
    got = run(**inputs)
    want = in_process(*[inputs[n] for n in export.input_names(config)])
    assert sorted(got) == sorted(want)
    for k in want:
      assert got[k].shape[0] == batch
      np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)
  spec = json.load(open(os.path.join(out, export.SPEC)))
  assert spec["checkpoint_step"] == step == config.train.num_steps
  assert [i["name"] for i in spec["inputs"]] == export.input_names(config)
  assert spec["inputs"][0]["shape"] == ["batch", config.data.max_steps.video, config.data.dims.video]
  t_image = config.data.max_steps.image
  expected = ({"probabilities": ["batch", 2], "step_probabilities": ["batch", t_image, 2]}
              if config.task == "classification" else
              {"step_va": ["batch", t_image, 2], "va": ["batch", 2]})
  assert {o["name"]: o["shape"] for o in spec["outputs"]} == expected
  assert "stablehlo" in open(os.path.join(out, export.MLIR)).read(4096)


LOADER = """
import json, sys
import jax, numpy as np
d = sys.argv[1]
exported = jax.export.deserialize(bytearray(open(f"{d}/model.jax_exported", "rb").read()))
spec = json.load(open(f"{d}/input_spec.json"))
inputs = np.load(sys.argv[2])
outputs = exported.call(*[inputs[i["name"]] for i in spec["inputs"]])
np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in outputs.items()})
assert not [m for m in sys.modules if m.split(".")[0] in ("flax", "multimodal_gru", "optax")]
"""


@pytest.mark.parametrize("exported_run", ["classification"], indirect=True)
def test_loader_needs_jax_only(exported_run, tmp_path):
  workdir, out, config = exported_run
  inputs = _inputs(config, 3, seed=0)
  np.savez(tmp_path / "in.npz", **inputs)
  done = subprocess.run([sys.executable, "-c", LOADER, out, str(tmp_path / "in.npz"),
                         str(tmp_path / "out.npz")], cwd=tmp_path, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  got = np.load(tmp_path / "out.npz")
  want = export.load(out)(**inputs)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.slow   # two more processes that import jax and lower the model (about 25 s)
@pytest.mark.parametrize("exported_run", ["classification"], indirect=True)
def test_command_line_and_missing_run(exported_run, tmp_path):
  workdir = exported_run[0]
  done = subprocess.run([sys.executable, "-m", "multimodal_gru.export", f"--workdir={workdir}",
                         "--out=relative_out", "--platforms=cpu"], cwd=tmp_path,
                        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert os.path.exists(tmp_path / "relative_out" / export.EXPORTED)
  missing = subprocess.run([sys.executable, "-m", "multimodal_gru.export",
                            f"--workdir={tmp_path / 'nothing'}"], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
  assert missing.returncode != 0 and "holds no finished run" in missing.stderr
  assert "Traceback" not in missing.stderr
