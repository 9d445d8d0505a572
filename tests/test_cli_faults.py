"""Command lines: relative paths, extraction's exit status, predict's early video check."""

import json
import os
import subprocess
import sys
import time

import pytest

from multimodal_gru import paths
from multimodal_gru.extract import failures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resolve_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert paths.resolve("runs/a") == str(tmp_path / "runs" / "a")
  assert paths.resolve("./x/../y") == str(tmp_path / "y")
  assert paths.resolve("~/data") == str(tmp_path / "home" / "data")
  assert paths.resolve("/abs/path") == "/abs/path"
  for url in ("gs://bucket/runs/a", "s3://b/k", "file:///tmp/x"):
    assert paths.resolve(url) == url
  assert paths.resolve("") == "" and paths.resolve(None) is None


def test_extraction_failures_are_listed_and_set_the_exit_status(tmp_path):
  failed = {"b": "b.mkv: cannot open (Invalid data)", "a": "a.mp4: no video stream"}
  path = failures.write_failures(str(tmp_path / "out"), "eval", failed)
  assert path == str(tmp_path / "out" / "failures_eval.json")
  with open(path) as f:
    assert json.load(f) == failed
  status, message = failures.exit_status(5, failed, path, allow_failures=False)
  assert status == failures.EXIT_SOME_FAILED == 3
  assert "2 of 5 videos failed" in message and path in message and "--allow_failures" in message
  status, message = failures.exit_status(5, failed, path, allow_failures=True)
  assert status == 0 and path in message
  assert failures.exit_status(5, {}, None, allow_failures=False) == (0, "")
  # A rerun where every video succeeds leaves no stale list behind.
  assert failures.write_failures(str(tmp_path / "out"), "eval", {}) is None
  assert not os.path.exists(path)


def _run(args, cwd, timeout=300):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


def test_predict_checks_videos_before_loading_anything(tmp_path):
  os.makedirs(tmp_path / "clips")
  start = time.time()
  # Relative paths, resolved against the working folder; the run folder does not even
  # exist: the video check comes first, so the error is about the video.
  result = _run(["multimodal_gru.predict", "--workdir=no_run", "--video=clips/missing.mp4,clips"],
                cwd=tmp_path)
  assert result.returncode == 2, result.stderr
  assert f"{tmp_path}/clips/missing.mp4: does not exist" in result.stderr
  assert f"{tmp_path}/clips: is a directory" in result.stderr
  assert "Train first" not in result.stderr and "Restored" not in result.stderr
  assert "USAGE" not in result.stderr and "--helpfull" not in result.stderr
  assert time.time() - start < 120
