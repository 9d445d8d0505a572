#!/usr/bin/env python3
"""Creates a Cloud TPU VM (pod slice), installs the project on every worker and trains.

  python launch/tpu_pod.py create NAME --zone=us-central2-b --accelerator_type=v4-32 --spot
  python launch/tpu_pod.py setup  NAME --zone=us-central2-b
  python launch/tpu_pod.py stage  NAME --zone=us-central2-b --src=gs://BUCKET/data/dvd --dest=data/dvd
  python launch/tpu_pod.py run    NAME --zone=us-central2-b --config=configs/dvd.py \
      --workdir=gs://BUCKET/runs/dvd --config.data.dir=~/data/dvd --config.train.batch_size=256
  python launch/tpu_pod.py extract NAME --zone=us-central2-b --videos=~/videos \
      --out=/mnt/shared/features --config.video.batch_size=64     # multimodal_gru.extract
  python launch/tpu_pod.py prepare NAME --zone=us-central2-b --dataset=dvd \
      --manual_dir=~/dvd --out=/mnt/shared/dvd                    # multimodal_gru.prepare
  python launch/tpu_pod.py logs   NAME --zone=us-central2-b --dest=./tpu_logs
  python launch/tpu_pod.py delete NAME --zone=us-central2-b

--dry_run prints the commands (copy-pastable) instead of running them.
Only needs Python and, without --dry_run, the gcloud CLI.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAX_TPU = "jax[tpu]==0.10.2"
LIBTPU_FIND_LINKS = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# Remote paths, relative to the home directory of every worker.
REMOTE_TARBALL = "multimodal_gru.tar.gz"
REMOTE_LOG_DIR = "logs"


def _tpu_vm(args, verb: str, *rest: str) -> list[str]:
  """gcloud compute tpus tpu-vm VERB ... with the common flags."""
  cmd = ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, f"--zone={args.zone}"]
  if args.project:
    cmd.append(f"--project={args.project}")
  return cmd


def _queued(args, verb: str, *rest: str) -> list[str]:
  cmd = ["gcloud", "compute", "tpus", "queued-resources", verb, *rest, f"--zone={args.zone}"]
  if args.project:
    cmd.append(f"--project={args.project}")
  return cmd


def _ssh_all(args, remote_command: str) -> list[str]:
  return _tpu_vm(args, "ssh", args.name, "--worker=all", f"--command={remote_command}")


def create_commands(args) -> list[list[str]]:
  if args.queued:
    cmd = _queued(args, "create", args.queued_id or args.name, f"--node-id={args.name}",
                  f"--accelerator-type={args.accelerator_type}",
                  f"--runtime-version={args.version}")
  else:
    cmd = _tpu_vm(args, "create", args.name, f"--accelerator-type={args.accelerator_type}",
                  f"--version={args.version}")
  if args.spot:
    cmd.append("--spot")
  if args.preemptible:
    cmd.append("--preemptible")
  return [cmd]


def setup_remote_script(args) -> str:
  """Unpacks the code; (re)installs the pinned project when pyproject.toml changed."""
  code, venv = shlex.quote(args.remote_dir), shlex.quote(args.venv)
  marker = f"{venv}/.mgru_installed"   # holds the sha256 of the installed pyproject.toml
  pins = f"$(sha256sum < {code}/pyproject.toml)"
  install = " && ".join([
      f"(command -v {args.python} || (sudo apt-get update -q && sudo apt-get install -y -q "
      f"{args.python} {args.python}-venv))",
      f"{args.python} -m venv {venv}",
      f"{venv}/bin/pip install -q --upgrade pip",
      # [gcs]: gcsfs, for a gs:// workdir (summaries, results.json; orbax's metadata)
      f"{venv}/bin/pip install -q -e {code}[gcs] {shlex.quote(JAX_TPU)} -f {LIBTPU_FIND_LINKS}",
      f'echo "{pins}" > {marker}',
  ])
  force = f"rm -f {marker}; " if args.force else ""
  return (f"set -e; {force}rm -rf {code}; mkdir -p {code}; tar -xzf {REMOTE_TARBALL} -C {code}; "
          f'if [ -f {marker} ] && [ "$(cat {marker})" = "{pins}" ]; then '
          f"echo 'already installed ({marker})'; else {install}; fi")


def setup_commands(args, tarball: str) -> list[list[str]]:
  return [
      _tpu_vm(args, "scp", tarball, f"{args.name}:{REMOTE_TARBALL}", "--worker=all"),
      _ssh_all(args, setup_remote_script(args)),
  ]


def stage_commands(args) -> list[list[str]]:
  """Copies the prepared shards to every worker's disk (the reader needs local files)."""
  dest = shlex.quote(args.dest)   # relative to home
  return [_ssh_all(args, f"mkdir -p {dest} && gcloud storage rsync --recursive "
                         f"{shlex.quote(args.src)} {dest}")]


# Subcommands that run a module of the project on every worker, with its flags passed through.
MODULES = {"extract": "multimodal_gru.extract", "prepare": "multimodal_gru.prepare"}


def module_remote_command(args, module: str, module_args: list[str]) -> str:
  """Runs `python -m module module_args` on a worker, logged to ~/logs (see `logs`)."""
  python = "~/" + shlex.quote(f"{args.venv}/bin/python")   # the venv is relative to home
  log = f"{REMOTE_LOG_DIR}/worker_$(hostname).log"
  # MGRU_DISTRIBUTED=auto: JAX finds the pod's workers from the TPU metadata.
  train = (f"cd {shlex.quote(args.remote_dir)} && MGRU_DISTRIBUTED=auto {python} "
           f"{shlex.join(['-m', module, *module_args])}")
  if args.detach:
    return (f"mkdir -p {REMOTE_LOG_DIR} && nohup bash -c {shlex.quote(train)} "
            f"> {log} 2>&1 < /dev/null &")
  return f"set -o pipefail; mkdir -p {REMOTE_LOG_DIR} && ({train}) 2>&1 | tee ~/{log}"


def train_remote_command(args) -> str:
  return module_remote_command(args, "multimodal_gru.main", [
      f"--config={args.config}", f"--workdir={args.workdir}", *args.overrides])


def run_commands(args) -> list[list[str]]:
  return [_ssh_all(args, train_remote_command(args))]


def module_commands(args) -> list[list[str]]:
  return [_ssh_all(args, module_remote_command(args, MODULES[args.command], args.overrides))]


def logs_commands(args) -> list[list[str]]:
  return [_tpu_vm(args, "scp", "--recurse", f"{args.name}:{REMOTE_LOG_DIR}", args.dest,
                  "--worker=all")]


def stop_commands(args) -> list[list[str]]:
  return [_tpu_vm(args, "stop", args.name)]


def delete_commands(args) -> list[list[str]]:
  if args.queued:   # --force also deletes the TPU VM the request created
    return [_queued(args, "delete", args.queued_id or args.name, "--force", "--quiet")]
  return [_tpu_vm(args, "delete", args.name, "--quiet")]


def repo_files(root: str) -> list[str]:
  """Tracked and untracked, non-ignored files of the git tree at `root`."""
  out = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], check=True, capture_output=True).stdout
  files = [f for f in out.decode().split("\0") if f]
  return sorted(f for f in files if os.path.isfile(os.path.join(root, f)))


def pack_repo(root: str, tarball: str) -> None:
  with tarfile.open(tarball, "w:gz") as tar:
    for f in repo_files(root):
      tar.add(os.path.join(root, f), arcname=f)


def execute(commands: list[list[str]], dry_run: bool) -> None:
  for cmd in commands:
    if dry_run:
      print(shlex.join(cmd))
      continue
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    try:
      result = subprocess.run(cmd)
    except FileNotFoundError:
      sys.exit(f"error: {cmd[0]!r} not found; install the Google Cloud SDK (or use --dry_run)")
    if result.returncode:
      sys.exit(f"error: exit status {result.returncode} from: {shlex.join(cmd)}")


def _relative_path(path: str) -> str:
  """A non-empty path below the home directory (setup deletes and recreates it)."""
  parts = path.split("/")
  if not path or path.startswith(("/", "~")) or ".." in parts or path.strip("./") == "":
    raise argparse.ArgumentTypeError(f"must be a path relative to home, got {path!r}")
  return path


def parse_args(argv: list[str]) -> argparse.Namespace:
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("name", help="TPU VM name (the node id)")
  common.add_argument("--zone", required=True)
  common.add_argument("--project", default=None)
  common.add_argument("--dry_run", "--dry-run", action="store_true",
                      help="print the commands instead of running them")
  queued = argparse.ArgumentParser(add_help=False)
  queued.add_argument("--queued", action="store_true",
                      help="request the TPU as a queued resource (create) / delete that resource")
  queued.add_argument("--queued_id", default=None,
                      help="queued resource id (default: the TPU name)")
  remote = argparse.ArgumentParser(add_help=False)
  remote.add_argument("--remote_dir", default="multimodal_gru", type=_relative_path,
                      help="code directory on the workers, relative to home")
  remote.add_argument("--venv", default="mgru_venv", type=_relative_path,
                      help="venv on the workers, relative to home")

  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("create", parents=[common, queued], help="create the TPU VM")
  p.add_argument("--accelerator_type", "--accelerator-type", required=True, help="e.g. v4-32")
  p.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU software version")
  kind = p.add_mutually_exclusive_group()
  kind.add_argument("--spot", action="store_true")
  kind.add_argument("--preemptible", action="store_true")
  p = sub.add_parser("setup", parents=[common, remote],
                     help="copy the git tree to every worker, install once")
  p.add_argument("--python", default="python3.11", help="Python on the workers")
  p.add_argument("--force", action="store_true", help="reinstall even if already installed")
  p = sub.add_parser("stage", parents=[common], help="copy the data to every worker's disk",
                     epilog="Then train with --config.data.dir=~/DEST.")
  p.add_argument("--src", required=True, help="prepared dataset folder, e.g. gs://BUCKET/data/dvd")
  p.add_argument("--dest", required=True, type=_relative_path,
                 help="folder on every worker, relative to home, e.g. data/dvd")
  p = sub.add_parser("run", parents=[common, remote], help="train on every worker",
                     epilog="Further --config.KEY=VALUE flags are passed to the trainer.")
  p.add_argument("--config", default="configs/dvd.py")
  p.add_argument("--workdir", required=True, help="shared by all workers, e.g. gs://BUCKET/run")
  p.add_argument("--detach", action="store_true",
                 help="run in the background on the workers (collect output with `logs`)")
  for command, module in MODULES.items():
    p = sub.add_parser(command, parents=[common, remote], help=f"{module} on every worker",
                       epilog=f"Every further flag goes to `python -m {module}`; --out must be "
                              "a folder all workers share (e.g. a Filestore or gcsfuse mount).")
    p.add_argument("--detach", action="store_true",
                   help="run in the background on the workers (collect output with `logs`)")
  p = sub.add_parser("logs", parents=[common], help="copy every worker's logs here")
  p.add_argument("--dest", default="tpu_logs")
  sub.add_parser("stop", parents=[common], help="stop the TPU VM")
  sub.add_parser("delete", parents=[common, queued],
                 help="delete the TPU VM (or queued resource)")

  args, unknown = parser.parse_known_args(argv)
  if args.command == "create" and args.queued and args.preemptible:
    parser.error("queued resources take --spot, not --preemptible")
  args.overrides = []
  if unknown and args.command in MODULES:
    args.overrides = unknown
  elif unknown:
    if args.command != "run" or not all(u.startswith("--config.") for u in unknown):
      parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = unknown
  return args


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  if args.command == "setup":
    with tempfile.TemporaryDirectory() as tmp:
      tarball = os.path.join(tmp, REMOTE_TARBALL)
      if args.dry_run:
        print(f"# pack the git tree of {REPO_ROOT} (tracked and untracked, non-ignored files) "
              f"into {tarball}")
      else:
        pack_repo(REPO_ROOT, tarball)
      execute(setup_commands(args, tarball), args.dry_run)
    return
  commands = {"create": create_commands, "stage": stage_commands, "run": run_commands,
              "logs": logs_commands, "stop": stop_commands, "delete": delete_commands,
              **{m: module_commands for m in MODULES}}[args.command](args)
  execute(commands, args.dry_run)


if __name__ == "__main__":
  main(sys.argv[1:])
