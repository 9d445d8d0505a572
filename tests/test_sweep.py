"""Tests of ablation grids: multimodal_gru.grid, .sweep and .report."""

import csv
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from multimodal_gru import grid, report, sweep, train
from multimodal_gru.models.model import build_model

# ml_collections' config_flags loads config files with the deprecated load_module().
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = ["configs/demo.py", "configs/demo.py:regression", "configs/dvd.py",
                "configs/affwild2.py"]

# A small model on the demo's feature layout; {data_dir} and {grid} are filled in.
TINY_CONFIG = '''
from multimodal_gru import grid
from multimodal_gru.config_base import get_base_config


def get_config():
  c = get_base_config()
  c.data.dir = {data_dir!r}
  c.data.dims.video, c.data.dims.image, c.data.dims.text = 64, 64, 32
  c.data.max_steps.video, c.data.max_steps.image, c.data.max_steps.text = 16, 32, 8
  c.model.hidden_dim, c.model.mlp_dim, c.model.num_heads = 16, 32, 2
  c.optim.warmup_steps = 5
  c.train.batch_size, c.train.eval_batch_size = 8, 64
  c.train.num_steps, c.train.log_every = {num_steps}, 10
  c.train.eval_every = c.train.checkpoint_every = {num_steps}
  return c


def get_sweep():
  return {grid}
'''


def write_config(tmp_path, points, data_dir="", num_steps=20, name="tiny.py"):
  path = tmp_path / name
  path.write_text(TINY_CONFIG.format(data_dir=str(data_dir), grid=repr(points), num_steps=num_steps))
  return str(path)


def run_sweep(*args):
  """The sweep CLI in a subprocess, as a user runs it."""
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  return subprocess.run([sys.executable, "-m", "multimodal_gru.sweep", *args], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=600)


def sweep_main(capsys, *args):
  """The sweep CLI in this process: (exit status, stdout, stderr)."""
  status = sweep.main(list(args))
  out = capsys.readouterr()
  return status, out.out, out.err


def fake_results(workdir, config, metrics, task="classification"):
  """A results.json as multimodal_gru.main writes it."""
  os.makedirs(workdir, exist_ok=True)
  results = dict(step=config.train.num_steps, task=task,
                 primary_metric=train.PRIMARY_METRIC[task], metrics=metrics,
                 num_parameters=1234, config=json.loads(config.to_json_best_effort()))
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f)


# --- grid ------------------------------------------------------------------------------------


def test_grid_product_zip_chain():
  fusions = grid.sweep("model.fusion", ["concat", "xattn_bidir"])
  seeds = grid.sweep("seed", [0, 1, 2])
  points = grid.product({"train.num_steps": 50}, fusions, seeds)
  assert len(points) == 6
  assert points[0] == {"train.num_steps": 50, "model.fusion": "concat", "seed": 0}
  assert points[-1] == {"train.num_steps": 50, "model.fusion": "xattn_bidir", "seed": 2}
  assert grid.zip(fusions, grid.sweep("model.hidden_dim", [8, 16])) == [
      {"model.fusion": "concat", "model.hidden_dim": 8},
      {"model.fusion": "xattn_bidir", "model.hidden_dim": 16}]
  assert grid.chain(fusions, {"seed": 5}) == fusions + [{"seed": 5}]
  with pytest.raises(ValueError, match="equal length"):
    grid.zip(fusions, seeds)
  with pytest.raises(ValueError, match="'seed' is set by two"):
    grid.product(seeds, {"seed": 1})


def test_point_name_is_stable_readable_and_path_safe():
  point = {"seed": 0, "augment.enabled": True, "model.fusion": "xattn_bidir",
           "autoencoder.enabled": False}
  name = grid.point_name(point)
  assert name == "fusion=xattn_bidir,augment=on,autoencoder=off,seed=0"
  assert grid.point_name(dict(reversed(list(point.items())))) == name
  assert grid.point_name({}) == "base"
  # Keys that would read the same keep their full path.
  assert grid.point_name({"data.dims.image": 8, "data.max_steps.image": 4}) == (
      "data.dims.image=8,data.max_steps.image=4")
  unsafe = grid.point_name({"data.dir": "../x y/z*", "data.modalities": ("video", "text"),
                            "optim.learning_rate": 3e-4})
  assert re.fullmatch(r"[A-Za-z0-9._+=,-]+", unsafe) and "/" not in unsafe
  assert "modalities=video+text" in unsafe and "learning_rate=0.0003" in unsafe
  long_a = grid.point_name({"data.dir": "a" * 300})
  long_b = grid.point_name({"data.dir": "a" * 299 + "b"})
  assert len(long_a) <= grid.MAX_NAME_LENGTH and long_a != long_b


# --- expansion and validation ---------------------------------------------------------------


def _main_config(command):
  """The config that multimodal_gru.main builds from `command` (its absl flag parsing)."""
  argv = ["main", *[a for a in command if a.startswith("--config")]]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


@pytest.mark.parametrize("config_arg", CONFIG_FILES)
def test_config_file_grids_build(config_arg, tmp_path):
  runs = sweep.expand(config_arg, str(tmp_path))
  names = [r.name for r in runs]
  assert len(set(names)) == len(names) == len(sweep.load_grid(config_arg))
  assert names == [r.name for r in sweep.expand(config_arg, str(tmp_path))]   # deterministic
  for r in runs:
    assert r.workdir == os.path.join(str(tmp_path), r.name)
    command = sweep.train_command(r, config_arg, [])
    # The command line reproduces the validated config exactly.
    assert _main_config(command).to_dict() == r.config.to_dict(), r.name
  # Every fusion of the grid initialises on the config's feature layout (shapes only; the
  # grid's other keys do not change shapes beyond the autoencoder's decoders, kept on here).
  for fusion in sorted({r.config.model.fusion for r in runs}):
    config = next(r.config for r in runs if r.config.model.fusion == fusion)
    config = sweep.apply_overrides(config, {"autoencoder.enabled": True})
    model = build_model(config)
    params = jax.eval_shape(lambda b: model.init({"params": jax.random.key(0)}, b, train=False),
                            train.dummy_batch(config))["params"]
    assert {f"{m}_decoder" for m in model.streams()} <= set(params), fusion


def test_paper_grids_cover_the_ablation():
  for config_arg in ("configs/dvd.py", "configs/affwild2.py"):
    points = sweep.load_grid(config_arg)
    assert {p["model.fusion"] for p in points} == {
        "video_only", "image_only", "text_only", "concat", "gated", "xattn_image", "xattn_bidir"}
    assert {p["augment.enabled"] for p in points} == {p["autoencoder.enabled"] for p in points} == {
        True, False}
    assert {p["seed"] for p in points} == {0, 1, 2}
    assert len(points) == 7 * 2 * 2 * 3
  demo = sweep.load_grid("configs/demo.py")
  assert {"xattn_bidir", "concat", "video_only"} <= {p["model.fusion"] for p in demo}


@pytest.mark.parametrize("bad_point, field, message", [
    ({"model.nope": 1}, "model.nope", "no such field"),
    ({"nope.x": 1}, "nope.x", "no such config section"),
    ({"model.hidden_dim": "big"}, "model.hidden_dim", "expects int, got str"),
    ({"model.hidden_dim": True}, "model.hidden_dim", "expects int, got bool"),
    ({"augment.enabled": 1}, "augment.enabled", "expects bool, got int"),
    ({"model": 3}, "model", "config section"),
    ({"model.fusion": "attention_soup"}, "model.fusion", "unknown fusion 'attention_soup'"),
])
def test_invalid_point_fails_whole_sweep(tmp_path, bad_point, field, message):
  points = [{"model.fusion": "concat"}, {"model.fusion": "concat", **bad_point},
            {"model.fusion": "xattn_bidir"}]
  config = write_config(tmp_path, points)
  root = tmp_path / "root"
  with pytest.raises(sweep.SweepError) as e:
    sweep.expand(config, str(root))
  assert f"point 1 ({grid.point_name(points[1])}): field {field}: " in str(e.value)
  assert message in str(e.value)


def test_invalid_grid_stops_cli_before_anything_runs(tmp_path, capsys):
  config = write_config(tmp_path, [{"seed": 0}, {"seed": 1, "model.fusion": "nope"}])
  root = tmp_path / "root"
  status, _, err = sweep_main(capsys, f"--config={config}", f"--workdir={root}")
  assert status == 2
  assert "error: point 1 (fusion=nope,seed=1): field model.fusion: unknown fusion" in err
  assert not root.exists()   # nothing ran, nothing was written


def test_sweep_level_errors(tmp_path):
  config = write_config(tmp_path, [{"seed": 0}, {"seed": 0}])
  with pytest.raises(sweep.SweepError, match=r"point 1 \(seed=0\): same name as point 0"):
    sweep.expand(config, str(tmp_path))
  config = write_config(tmp_path, [{"train.num_steps": 5}], name="clash.py")
  with pytest.raises(sweep.SweepError, match="train.num_steps is set both by the grid"):
    sweep.expand(config, str(tmp_path), ["--config.train.num_steps=7"])
  with pytest.raises(sweep.SweepError, match="invalid --config flags"):
    sweep.expand(config, str(tmp_path), ["--config.model.hidden_dim=wide"])
  with pytest.raises(sweep.SweepError, match="no get_sweep"):
    sweep.load_grid(os.path.join(REPO_ROOT, "multimodal_gru", "config_base.py"))


# --- launchers --------------------------------------------------------------------------------


def test_dry_run_and_cluster_launchers(tmp_path, capsys):
  points = [{"model.fusion": f, "seed": s} for f in ("concat", "xattn_bidir") for s in (0, 1)]
  config = write_config(tmp_path, points)
  root = tmp_path / "root"
  runs = sweep.expand(config, str(root))
  fake_results(runs[0].workdir, runs[0].config, {"clip_accuracy": 0.5})
  extra = "--config.optim.learning_rate=0.0005"

  status, out, err = sweep_main(capsys, f"--config={config}", f"--workdir={root}", "--dry_run", extra)
  assert status == 0, err
  lines = out.splitlines()
  assert lines[0] == f"# finished: {runs[0].name}"
  for line, run in zip(lines[1:], runs[1:], strict=True):
    cmd = shlex.split(line)
    assert cmd[1:3] == ["-m", "multimodal_gru.main"] and f"--workdir={run.workdir}" in cmd
    assert _main_config(cmd).to_dict() == sweep.apply_overrides(
        sweep.parse_config(config, [extra]), run.overrides).to_dict()
  assert not (root / "sweep.json").exists()

  status, out, err = sweep_main(capsys, f"--config={config}", f"--workdir={root}",
                                "--launcher=tpu_pod", "--tpu=pod", "--zone=us-central2-b",
                                "--filter=xattn", extra)
  assert status == 0, err
  spec = importlib.util.spec_from_file_location("tpu_pod", os.path.join(REPO_ROOT, "launch",
                                                                        "tpu_pod.py"))
  tpu_pod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tpu_pod)
  parsed = [tpu_pod.parse_args(shlex.split(line)[2:]) for line in out.splitlines()]
  assert [(a.command, a.name, a.zone, a.workdir) for a in parsed] == [
      ("run", "pod", "us-central2-b", r.workdir) for r in runs[2:]]
  assert parsed[0].overrides == [extra, "--config.model.fusion=xattn_bidir", "--config.seed=0"]
  state = json.loads((root / "sweep.json").read_text())
  assert [p["status"] for p in state["points"]] == ["done", "pending", "printed", "printed"]

  status, out, err = sweep_main(capsys, f"--config={config}", f"--workdir={root}",
                                "--launcher=slurm", "--filter=seed=1")
  assert status == 0, err
  for line, run in zip(out.splitlines(), runs[1::2], strict=True):
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words[:2])
    assert env == {"CONFIG": config, "WORKDIR": run.workdir}
    assert words[2] == "sbatch" and words[4] == "launch/slurm_gpu.sbatch"
    srun = subprocess.run(["bash", words[4], *words[5:]], cwd=REPO_ROOT, capture_output=True,
                          text=True, env=dict(os.environ, **env, DRY_RUN="1"), check=True)
    assert f"--workdir={run.workdir}" in shlex.split(srun.stdout)


# --- local runs -------------------------------------------------------------------------------


def test_failing_point_is_reported_and_sweep_goes_on(tmp_path, capsys):
  """A point whose data are missing fails; the sweep still handles the next one, exits 1."""
  points = [{"model.fusion": "concat", "data.dir": str(tmp_path / "no_data")},
            {"model.fusion": "concat", "data.dir": str(tmp_path / "data")}]
  config = write_config(tmp_path, points)
  root = tmp_path / "root"
  runs = sweep.expand(config, str(root))
  fake_results(runs[1].workdir, runs[1].config, {"clip_accuracy": 0.75})
  status, out, err = sweep_main(capsys, f"--config={config}", f"--workdir={root}")
  assert status == 1, out + err
  lines = out.splitlines()
  failed = next(line for line in lines if "FAILED" in line)
  assert runs[0].name in failed and "no_data' does not exist" in failed and "exit 1" in failed
  assert any(line.startswith("[2/2] skip") and "clip_accuracy=0.7500" in line for line in lines)
  state = json.loads((root / "sweep.json").read_text())
  assert [(p["status"], p["returncode"]) for p in state["points"]] == [("failed", 1), ("done", None)]
  log = (root / runs[0].name / "train.log").read_text()
  assert "does not exist. Prepare a dataset" in log and "Traceback" not in log   # one clear line
  assert (root / "report.md").exists()   # the finished point is reported


# --- report -----------------------------------------------------------------------------------


def test_report_groups_seeds_and_marks_best(tmp_path, capsys):
  points = [{"model.fusion": f, "augment.enabled": a, "seed": s}
            for f in ("concat", "xattn_bidir") for a in (True, False) for s in (0, 1, 2)]
  config = write_config(tmp_path, points)
  root = tmp_path / "root"
  runs = sweep.expand(config, str(root))
  rng = np.random.default_rng(0)
  values = {}
  for r in runs[:-1]:   # the last point has not finished
    acc, loss = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.0, 1.0))
    values.setdefault(grid.point_name({k: v for k, v in r.overrides.items() if k != "seed"}),
                      []).append((acc, loss))
    fake_results(r.workdir, r.config, {"clip_accuracy": acc, "clip_loss": loss, "num_examples": 9.})
  sweep.write_sweep_file(str(root), config, [], "local", runs)

  result = report.build_report(str(root))
  assert result.primary_metric == "clip_accuracy" and result.metrics == ["clip_accuracy", "clip_loss"]
  means = {name: np.mean(v, axis=0) for name, v in values.items()}
  stds = {name: np.std(v, axis=0, ddof=1) for name, v in values.items()}
  assert [v.name for v in result.variants] == sorted(means, key=lambda n: -means[n][0])
  assert [len(v.runs) for v in result.variants if "xattn_bidir,augment=off" in v.name] == [2]

  rows = {line.split("|")[1].strip(" `"): line for line in result.markdown.splitlines()
          if line.startswith("| `")}
  best_acc = max(means, key=lambda n: means[n][0])
  best_loss = min(means, key=lambda n: means[n][1])   # lower is better for losses
  for name in means:
    cells = [c.strip() for c in rows[name].split("|")[3:5]]
    for cell, mean, std, best in zip(cells, means[name], stds[name], (best_acc, best_loss)):
      text = f"{mean:.4f} ± {std:.4f}"
      assert cell == (f"**{text}**" if name == best else text)
  assert "num_examples" not in result.markdown
  assert f"pending (1): `{runs[-1].name}`" in result.markdown

  with open(result.paths["csv"]) as f:
    table = {row["variant"]: row for row in csv.DictReader(f)}
  for name in means:
    assert float(table[name]["clip_accuracy_mean"]) == pytest.approx(means[name][0], rel=1e-5)
    assert float(table[name]["clip_loss_std"]) == pytest.approx(stds[name][1], rel=1e-5)
  assert set(table[best_acc]) >= {"model.fusion", "augment.enabled", "num_seeds", "seeds"}

  import matplotlib.image
  image = matplotlib.image.imread(result.paths["png"])
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  assert (root / "report.md").read_text() == result.markdown

  assert report.main([f"--workdir={root}", f"--out={tmp_path / 'docs' / 'ablation'}"]) == 0
  printed = capsys.readouterr().out
  assert "](ablation.png)" in printed and all(row in printed for row in rows.values())
  assert (tmp_path / "docs" / "ablation.png").exists() and (tmp_path / "docs" / "ablation.csv").exists()


def test_report_without_runs_fails(tmp_path):
  with pytest.raises(report.ReportError, match="no results.json"):
    report.build_report(str(tmp_path))


# --- end to end -------------------------------------------------------------------------------


def _wait_for(predicate, timeout_s, what):
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    if predicate():
      return
    time.sleep(0.5)
  raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sweep_end_to_end_interrupt_resume_report(tmp_path, tiny_demo_dir):
  points = [{"model.fusion": "concat", "seed": 0}, {"model.fusion": "concat", "seed": 1},
            {"model.fusion": "xattn_bidir", "seed": 0}]
  config = write_config(tmp_path, points, data_dir=tiny_demo_dir, num_steps=200)
  root = tmp_path / "root"
  runs = sweep.expand(config, str(root))
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  with open(tmp_path / "sweep1.out", "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "multimodal_gru.sweep", f"--config={config}",
                             f"--workdir={root}"], cwd=REPO_ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT, text=True)
    try:
      second_log = root / runs[1].name / "train.log"
      # Stop the sweep while the second point trains (after step 10 of 200).
      _wait_for(lambda: second_log.exists() and "step 10/200" in second_log.read_text(), 500,
                "the second point to train")
      proc.send_signal(signal.SIGTERM)
      assert proc.wait(timeout=120) == 130
    finally:
      proc.kill()
  first = (tmp_path / "sweep1.out").read_text()
  assert f"done     {runs[0].name}" in first and f"stopped  {runs[1].name}" in first, first
  state = json.loads((root / "sweep.json").read_text())
  assert [p["status"] for p in state["points"]] == ["done", "interrupted", "pending"]
  assert (root / runs[0].name / "results.json").exists()
  assert not (root / runs[1].name / "results.json").exists()
  assert "Checkpoint of step" in second_log.read_text()   # it checkpointed on SIGTERM

  first_results = (root / runs[0].name / "results.json").read_text()
  out = run_sweep(f"--config={config}", f"--workdir={root}")
  assert out.returncode == 0, out.stdout + out.stderr
  assert f"skip     {runs[0].name}" in out.stdout and f"resume   {runs[1].name}" in out.stdout
  assert f"start    {runs[2].name}" in out.stdout
  assert "Restored checkpoint of step" in second_log.read_text()
  assert (root / runs[0].name / "results.json").read_text() == first_results   # not retrained
  state = json.loads((root / "sweep.json").read_text())
  assert [p["status"] for p in state["points"]] == ["done"] * 3

  table = [line for line in out.stdout.splitlines() if line.startswith("| `")]
  assert [line.split("|")[1].strip(" `") for line in table] in (
      ["fusion=concat", "fusion=xattn_bidir"], ["fusion=xattn_bidir", "fusion=concat"])
  assert [line.split("|")[2].strip() for line in table if "concat" in line] == ["2"]
  assert (root / "report.png").stat().st_size > 1000
