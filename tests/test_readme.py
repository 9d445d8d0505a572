"""The README as a new user types it: its set-up commands, and relative paths everywhere."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys

import pytest

from multimodal_gru import paths, sweep
from test_sweep import sweep_main, write_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def _readme_commands():
  spec = importlib.util.spec_from_file_location("readme_commands",
                                                os.path.join(REPO, ".ci", "readme_commands.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with open(os.path.join(REPO, "README.md")) as f:
    return module.quick_start_commands(f.read())


def test_ci_runs_the_readme_commands_as_written():
  install_and_demo, tests = _readme_commands()
  words = shlex.split(install_and_demo)
  assert ["python", "-m", "multimodal_gru.main", "--config=configs/demo.py"] == words[-5:-1]
  assert words[-1] == "--workdir=runs/demo"          # relative, as a new user types it
  assert "pytest" in tests and "'.[test]'" in tests
  with open(os.path.join(REPO, ".ci", "run")) as f:
    ci = f.read()
  assert "readme_commands.py README.md" in ci and 'bash -euo pipefail -c "${commands[1]}"' in ci


def test_resolve_paths():
  assert paths.resolve("runs/demo") == os.path.join(os.getcwd(), "runs", "demo")
  assert paths.resolve("~/x") == os.path.join(os.path.expanduser("~"), "x")
  assert paths.resolve("gs://bucket/run") == "gs://bucket/run"
  assert paths.resolve("/abs/dir") == "/abs/dir"


def test_main_with_relative_workdir_checkpoints_and_resumes(tiny_demo_dir, tmp_path):
  """The README's first command crashed at the first checkpoint with a relative --workdir."""
  command = [sys.executable, "-m", "multimodal_gru.main",
             f"--config={os.path.join(REPO, 'configs', 'demo.py')}", "--workdir=runs/demo",
             f"--config.data.dir={os.path.relpath(tiny_demo_dir, tmp_path)}",
             "--config.data.generate_demo=False", "--config.model.hidden_dim=16",
             "--config.model.mlp_dim=32", "--config.model.num_heads=2",
             "--config.train.batch_size=8", "--config.train.eval_batch_size=16",
             "--config.train.log_every=3", "--config.train.eval_every=6",
             "--config.train.checkpoint_every=3", "--config.optim.warmup_steps=2"]
  env = dict(os.environ, PYTHONPATH=REPO)
  for num_steps in (6, 9):   # the rerun resumes from the relative workdir's checkpoint
    done = subprocess.run([*command, f"--config.train.num_steps={num_steps}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
  assert "Restored checkpoint of step 6" in done.stderr
  workdir = tmp_path / "runs" / "demo"
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 9
  assert {"6", "9"} <= set(os.listdir(workdir / "checkpoints"))


def test_sweep_with_relative_root_gives_absolute_workdirs(tmp_path, capsys, monkeypatch):
  config = write_config(tmp_path, [{"seed": 0}, {"seed": 1}])
  monkeypatch.chdir(tmp_path)
  status, out, err = sweep_main(capsys, f"--config={config}", "--workdir=runs/grid", "--dry_run")
  assert status == 0, err
  workdirs = [w.split("=", 1)[1] for line in out.splitlines() for w in shlex.split(line)
              if w.startswith("--workdir=")]
  assert workdirs == [str(tmp_path / "runs" / "grid" / r.name)
                      for r in sweep.expand(config, str(tmp_path / "runs" / "grid"))]
