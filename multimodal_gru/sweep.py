"""Ablation sweeps: one training run per point of a config file's `get_sweep()` grid.

  python -m multimodal_gru.sweep --config=configs/demo.py --workdir=/tmp/ablation
  python -m multimodal_gru.sweep --config=configs/dvd.py --workdir=ROOT --dry_run \
      --config.data.dir=/data/dvd_features
  python -m multimodal_gru.sweep --config=configs/dvd.py --workdir=gs://B/ablation \
      --launcher=tpu_pod --tpu=mgru-pod --zone=us-central2-b --config.data.dir='~/data/dvd'
      (after `launch/tpu_pod.py stage ... --src=gs://B/dvd --dest=data/dvd`)
  python -m multimodal_gru.report --workdir=/tmp/ablation

Every point trains in ROOT/<name>, name = grid.point_name(point), e.g.
`fusion=xattn_bidir,augment=on,autoencoder=off,seed=0`. Before anything runs,
every point is applied to a copy of the config (ml_collections' type checks)
and its model is built; one bad point stops the whole sweep.

Launchers: `local` trains the points one after another in subprocesses of
`python -m multimodal_gru.main`, each logging to ROOT/<name>/train.log; a
failing point is reported and the sweep goes on (exit status 1 at the end).
Ctrl-C / SIGTERM asks the running point to checkpoint and stops (a second one
kills it). Rerunning skips finished points (ROOT/<name>/results.json exists)
and resumes the others from their checkpoints. `print`, `tpu_pod` and `slurm`
print the commands (for a shell, `launch/tpu_pod.py run` or `sbatch
launch/slurm_gpu.sbatch`). ROOT/sweep.json records the points and their status.

Further --config.KEY=VALUE flags apply to every point (they may not set a key
the grid sets). --filter=REGEX keeps the points whose name matches.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.util
import inspect
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import warnings
from typing import Any, Iterator, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from multimodal_gru import grid, paths
from multimodal_gru import workdir as workdir_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.json"
LOG_FILE = "train.log"
LAUNCHERS = ("local", "print", "tpu_pod", "slurm")


class SweepError(ValueError):
  """A grid that cannot run as declared (raised before anything runs)."""


class OverrideError(ValueError):
  """One override that does not fit the config; names the field."""

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field


@dataclasses.dataclass
class Run:
  index: int                       # position in the grid
  name: str
  overrides: dict[str, Any]
  workdir: str
  config: ml_collections.ConfigDict   # base config with the overrides applied
  status: str = "pending"          # pending | running | done | failed | interrupted | printed
  returncode: int | None = None
  wall_s: float | None = None


# --- loading ------------------------------------------------------------------------


def _split_config_arg(config_arg: str) -> tuple[str, list[str]]:
  path, *arg = config_arg.split(":", 1)
  return path, arg


def load_grid(config_arg: str) -> list[dict[str, Any]]:
  """The points of `get_sweep()` in the config file (called with its `:arg` if it takes one)."""
  path, arg = _split_config_arg(config_arg)
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{abs(hash(path))}", path)
  if spec is None or not os.path.isfile(path):
    raise SweepError(f"config file {path!r} not found")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise SweepError(f"{path} defines no get_sweep(); declare the grid there (see multimodal_gru/grid.py)")
  takes_arg = bool(inspect.signature(module.get_sweep).parameters)
  points = module.get_sweep(*arg) if takes_arg else module.get_sweep()
  out = []
  for i, point in enumerate(points):
    if not isinstance(point, dict) or not all(isinstance(k, str) for k in point):
      raise SweepError(f"point {i} of {path}:get_sweep() is not a dict of field paths: {point!r}")
    out.append({k.removeprefix("config."): v for k, v in point.items()})
  if not out:
    raise SweepError(f"{path}:get_sweep() returned no points")
  return out


def parse_config(config_arg: str, flag_overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config exactly as `multimodal_gru.main` parses `--config=... --config.K=V ...`."""
  argv = ["sweep", f"--config={config_arg}", *flag_overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  try:
    with warnings.catch_warnings():   # config_flags loads the file with the deprecated load_module
      warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
      values(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    raise SweepError(f"invalid --config flags {list(flag_overrides)}: {e!r}") from e
  return values.config


# --- validation -----------------------------------------------------------------------


def apply_overrides(config: ml_collections.ConfigDict, point: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with the point's overrides; OverrideError on unknown fields or bad types."""
  config = copy.deepcopy(config)
  for key, value in point.items():
    *parents, leaf = key.split(".")
    node = config
    for depth, part in enumerate(parents):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise OverrideError(key, f"no such config section {'.'.join(parents[:depth + 1])!r}")
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict):
      raise OverrideError(key, f"{'.'.join(parents)!r} is a value, not a config section")
    if leaf not in node:
      raise OverrideError(key, f"no such field; {'.'.join(parents) or 'config'} has "
                               f"{sorted(node.keys())}")
    old = node[leaf]
    if isinstance(old, ml_collections.ConfigDict):
      raise OverrideError(key, "is a config section; override its fields one by one")
    if old is not None and isinstance(value, bool) != isinstance(old, bool):
      raise OverrideError(key, f"expects {type(old).__name__}, got {type(value).__name__} {value!r}")
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise OverrideError(key, f"expects {type(old).__name__}, got {type(value).__name__} "
                               f"{value!r}") from e
  return config


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises OverrideError for a config that the trainer would reject when building the model."""
  from multimodal_gru.models import fusion
  from multimodal_gru.models.model import build_model
  if config.model.fusion not in fusion.available():
    raise OverrideError("model.fusion", f"unknown fusion {config.model.fusion!r}; "
                                        f"available: {fusion.available()}")
  try:
    build_model(config).streams()
  except ValueError as e:
    raise OverrideError("model", str(e)) from e


def expand(config_arg: str, root: str, flag_overrides: Sequence[str] = ()) -> list[Run]:
  """Validates every point of the config file's grid; one Run per point, in grid order."""
  base = parse_config(config_arg, flag_overrides)
  flag_keys = {f.split("=", 1)[0].removeprefix("--config.") for f in flag_overrides}
  runs, names = [], {}
  for i, point in enumerate(load_grid(config_arg)):
    name = grid.point_name(point)
    where = f"point {i} ({name})"
    if name in names:
      raise SweepError(f"{where}: same name as point {names[name]}; the grid repeats a point")
    names[name] = i
    clash = sorted(flag_keys & set(point))
    if clash:
      raise SweepError(f"{where}: field {clash[0]} is set both by the grid and by --config.{clash[0]}")
    try:
      config = apply_overrides(base, point)
      check_config(config)
    except OverrideError as e:
      raise SweepError(f"{where}: field {e}") from e
    runs.append(Run(i, name, point, _join(root, name), config))
  return runs


# --- commands ---------------------------------------------------------------------------


def flag_value(value: Any) -> str:
  """`value` as `--config.K=...` text that config_flags parses back to `value`."""
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  if isinstance(value, float):
    return repr(value)
  return str(value)


def override_flags(point: dict[str, Any]) -> list[str]:
  return [f"--config.{k}={flag_value(v)}" for k, v in point.items()]


def train_command(run: Run, config_arg: str, flag_overrides: Sequence[str],
                  python: str = "python") -> list[str]:
  return [python, "-m", "multimodal_gru.main", f"--config={config_arg}", f"--workdir={run.workdir}",
          *flag_overrides, *override_flags(run.overrides)]


def launcher_command(launcher: str, run: Run, config_arg: str, flag_overrides: Sequence[str],
                     args: argparse.Namespace) -> str:
  """The shell command that trains `run` with `launcher` (print, tpu_pod, slurm)."""
  overrides = [*flag_overrides, *override_flags(run.overrides)]
  if launcher == "print":
    return shlex.join(train_command(run, config_arg, flag_overrides))
  if launcher == "tpu_pod":
    cmd = ["python", "launch/tpu_pod.py", "run", args.tpu, f"--zone={args.zone}"]
    if args.project:
      cmd.append(f"--project={args.project}")
    return shlex.join([*cmd, f"--config={config_arg}", f"--workdir={run.workdir}", *overrides])
  if launcher == "slurm":
    env = [f"CONFIG={config_arg}", f"WORKDIR={run.workdir}"]
    return shlex.join([*env, "sbatch", f"--job-name=mgru-{run.name}", "launch/slurm_gpu.sbatch",
                       *overrides])
  raise ValueError(f"unknown launcher {launcher!r}")


# --- state ------------------------------------------------------------------------------


def _is_local(path: str) -> bool:
  return "://" not in path


def _join(root: str, name: str) -> str:
  return f"{root.rstrip('/')}/{name}" if not _is_local(root) else os.path.join(root, name)


def read_results(workdir: str) -> dict | None:
  """results.json of a finished run; None if absent, unreadable, or not a local path."""
  if not _is_local(workdir):
    return None
  try:
    with open(os.path.join(workdir, RESULTS_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _metric_text(results: dict | None) -> str:
  if not results:
    return ""
  name = results.get("primary_metric")
  value = results.get("metrics", {}).get(name)
  return f"{name}={value:.4f}" if isinstance(value, (int, float)) else ""


def read_sweep_file(root: str) -> dict | None:
  with contextlib.suppress(OSError, ValueError):
    with open(os.path.join(root, SWEEP_FILE)) as f:
      return json.load(f)
  return None


def write_sweep_file(root: str, config_arg: str, flag_overrides: Sequence[str], launcher: str,
                     runs: list[Run]) -> None:
  """ROOT/sweep.json: every point of the grid, its run name, workdir and status."""
  path = os.path.join(root, SWEEP_FILE)
  points = [dict(index=r.index, name=r.name, overrides=r.overrides, workdir=r.workdir,
                 status=r.status, returncode=r.returncode, wall_s=r.wall_s) for r in runs]
  state = dict(config=config_arg, flag_overrides=list(flag_overrides), launcher=launcher,
               updated=time.strftime("%Y-%m-%dT%H:%M:%S"), points=points)
  os.makedirs(root, exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(state, f, indent=2, default=repr)
  os.replace(path + ".tmp", path)


@contextlib.contextmanager
def _exclusive(root: str) -> Iterator[None]:
  """Holds ROOT/.sweep.lock so that two local sweeps never train the same points."""
  os.makedirs(root, exist_ok=True)
  lock = workdir_lib.WorkdirLock(root, lock_file=".sweep.lock", holder="sweep")
  try:
    lock.acquire()
  except workdir_lib.WorkdirError as e:
    raise SweepError(f"another sweep is running in {root}: {e}") from None
  try:
    yield
  finally:
    lock.release()


# --- local launcher ---------------------------------------------------------------------


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def _last_line(path: str) -> str:
  with contextlib.suppress(OSError):
    with open(path, errors="replace") as f:
      lines = [line.strip() for line in f.readlines()[-200:] if line.strip()]
    return lines[-1][:300] if lines else ""
  return ""


class _StopRequests:
  """SIGINT/SIGTERM while a point trains: the first asks it to checkpoint and exit, the next kills it."""

  def __init__(self):
    self.count = 0
    self.child: subprocess.Popen | None = None
    self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

  def _handle(self, signum, frame):
    self.count += 1
    print(f"\nsweep: {signal.Signals(signum).name}: "
          + ("stopping the running point (it saves a checkpoint)" if self.count == 1
             else "killing the running point"), file=sys.stderr, flush=True)
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signal.SIGTERM if self.count == 1 else signal.SIGKILL)

  def restore(self):
    for s, handler in self._previous.items():
      signal.signal(s, handler)


def child_environment() -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
  return env


def run_local(runs: list[Run], selected: list[Run], save_state, config_arg: str,
              flag_overrides: Sequence[str]) -> int:
  """Trains the selected points one after another; returns the sweep's exit status.

  The trainer's persistent compilation cache (see multimodal_gru/main.py) lets points
  that differ only in their seed, and resumed points, skip compilation.
  """
  env = child_environment()
  width = len(str(len(selected)))
  stop = _StopRequests()
  failed = 0
  try:
    for k, run in enumerate(selected, 1):
      if stop.count:   # a signal between two points
        return 130
      tag = f"[{k:>{width}}/{len(selected)}]"
      results = read_results(run.workdir)
      if results is not None:
        run.status = "done"
        print(f"{tag} skip     {run.name}  finished: {_metric_text(results)}", flush=True)
        continue
      os.makedirs(run.workdir, exist_ok=True)
      log_path = os.path.join(run.workdir, LOG_FILE)
      resuming = os.path.isdir(os.path.join(run.workdir, "checkpoints")) or os.path.exists(log_path)
      print(f"{tag} {'resume' if resuming else 'start':8} {run.name}  (log: {log_path})", flush=True)
      run.status, run.returncode = "running", None
      save_state()
      command = train_command(run, config_arg, flag_overrides, python=sys.executable)
      t0 = time.time()
      with open(log_path, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        log.flush()
        # Own process group: a terminal's Ctrl-C reaches only the sweep, which forwards SIGTERM.
        stop.child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      process_group=0)
        if stop.count:   # the signal came while it started
          stop.child.send_signal(signal.SIGTERM)
        run.returncode = stop.child.wait()
        stop.child = None
      run.wall_s = (run.wall_s or 0.0) + time.time() - t0   # summed over attempts
      results = read_results(run.workdir)
      took = _format_duration(time.time() - t0)
      if run.returncode == 0 and results is not None:
        run.status = "done"
        print(f"{tag} done     {run.name}  {_metric_text(results)}  in {took}", flush=True)
      elif stop.count:
        run.status = "interrupted"
        print(f"{tag} stopped  {run.name}  after {took}; rerun the sweep to resume it", flush=True)
      else:
        run.status = "failed"
        failed += 1
        print(f"{tag} FAILED   {run.name}  exit {run.returncode} after {took}: "
              f"{_last_line(log_path)}  (log: {log_path})", flush=True)
      save_state()
      if stop.count:
        return 130
  finally:
    stop.restore()
    if stop.child is not None and stop.child.poll() is None:   # an exception left it running
      stop.child.kill()
  return 1 if failed else 0


# --- command line -----------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="config file with get_sweep(), e.g. configs/dvd.py")
  parser.add_argument("--workdir", required=True, help="sweep root; point NAME trains in ROOT/NAME")
  parser.add_argument("--launcher", choices=LAUNCHERS, default="local")
  parser.add_argument("--dry_run", "--dry-run", action="store_true",
                      help="validate, then print the commands; run and write nothing")
  parser.add_argument("--filter", default="", help="regex; keep the points whose name matches")
  parser.add_argument("--no_report", action="store_true", help="local: skip the report at the end")
  parser.add_argument("--tpu", default=None, help="tpu_pod: the TPU VM name")
  parser.add_argument("--zone", default=None, help="tpu_pod: its zone")
  parser.add_argument("--project", default=None, help="tpu_pod: the GCP project")
  args, unknown = parser.parse_known_args(argv)
  bad = [u for u in unknown if not re.fullmatch(r"--config\.[\w.]+=.*", u, flags=re.DOTALL)]
  if bad:
    parser.error(f"unrecognized arguments (only --config.KEY=VALUE passes through): {' '.join(bad)}")
  if args.launcher == "tpu_pod" and not (args.tpu and args.zone):
    parser.error("--launcher=tpu_pod needs --tpu=NAME and --zone=ZONE")
  if args.launcher == "local" and not _is_local(args.workdir):
    parser.error(f"--launcher=local needs a local --workdir, got {args.workdir!r}")
  return args, unknown


def main(argv: Sequence[str]) -> int:
  args, flag_overrides = parse_args(argv)
  root = paths.resolve(args.workdir)   # the runs' workdirs are absolute, whatever their cwd
  try:
    runs = expand(args.config, root, flag_overrides)
    pattern = re.compile(args.filter)
  except (SweepError, re.error) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  selected = [r for r in runs if pattern.search(r.name)]
  previous = {p["name"]: p for p in (read_sweep_file(root) or {}).get("points", [])}
  for r in runs:
    r.wall_s = previous.get(r.name, {}).get("wall_s")
    if read_results(r.workdir) is not None:
      r.status = "done"
    elif r.name in previous and previous[r.name]["status"] in ("failed", "interrupted"):
      r.status, r.returncode = previous[r.name]["status"], previous[r.name]["returncode"]
  print(f"sweep: {len(runs)} points in {args.config}"
        + (f", {len(selected)} selected by --filter={args.filter}" if args.filter else "")
        + f", {sum(r.status == 'done' for r in selected)} of them finished; root {root}",
        file=sys.stderr, flush=True)
  if not selected:
    print("error: --filter selects no point", file=sys.stderr)
    return 2

  if args.dry_run or args.launcher != "local":
    launcher = "print" if args.launcher == "local" else args.launcher
    for r in selected:
      if r.status == "done":
        print(f"# finished: {r.name}")
        continue
      print(launcher_command(launcher, r, args.config, flag_overrides, args))
      if not args.dry_run:
        r.status = "printed"
    if not args.dry_run and _is_local(root):
      write_sweep_file(root, args.config, flag_overrides, args.launcher, runs)
    return 0

  save_state = lambda: write_sweep_file(root, args.config, flag_overrides, "local", runs)
  t0 = time.time()
  try:
    with _exclusive(root):
      save_state()
      status = run_local(runs, selected, save_state, args.config, flag_overrides)
  except SweepError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  counts = {s: sum(r.status == s for r in selected) for s in ("done", "failed", "interrupted")}
  print(f"sweep: {counts['done']}/{len(selected)} done, {counts['failed']} failed, "
        f"{counts['interrupted']} interrupted in {_format_duration(time.time() - t0)}; "
        f"state in {os.path.join(root, SWEEP_FILE)}", flush=True)
  if not args.no_report and counts["done"]:
    from multimodal_gru import report
    try:
      print(report.build_report(root).markdown, flush=True)
    except report.ReportError as e:
      print(f"sweep: no report: {e}", file=sys.stderr)
  return status


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
