"""Tests of the launch scripts (dry runs) and of multimodal_gru.distributed."""

import hashlib
import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap

import pytest

from multimodal_gru import distributed

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO_ROOT, "launch")


def run(argv, env=None, check=True):
  result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))
  if check:
    assert result.returncode == 0, result.stderr
  return result


def tpu_pod(*args, check=True):
  return run([sys.executable, os.path.join(LAUNCH, "tpu_pod.py"), *args], check=check)


def commands(stdout):
  """Parsed commands of a dry run (comment lines dropped)."""
  return [shlex.split(line) for line in stdout.splitlines() if not line.startswith("#")]


def shell_tokens(command):
  """Tokens of a remote shell command, with ( ) ; | & as separate tokens."""
  lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  return list(lexer)


def contains(tokens, sub):
  return any(tokens[i:i + len(sub)] == sub for i in range(len(tokens) - len(sub) + 1))


def flag(cmd, name):
  """Value of --name=value in cmd (exactly once)."""
  values = [arg.split("=", 1)[1] for arg in cmd if arg.startswith(f"--{name}=")]
  assert len(values) == 1, (name, cmd)
  return values[0]


# --- launch/tpu_pod.py ------------------------------------------------------------


def test_tpu_create_dry_run():
  [cmd] = commands(tpu_pod("create", "pod1", "--zone", "us-central2-b", "--accelerator-type",
                           "v4-32", "--spot", "--project", "proj", "--dry_run").stdout)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "pod1"]
  assert flag(cmd, "zone") == "us-central2-b"
  assert flag(cmd, "accelerator-type") == "v4-32"
  assert flag(cmd, "version") == "tpu-ubuntu2204-base"
  assert flag(cmd, "project") == "proj"
  assert "--spot" in cmd and "--preemptible" not in cmd

  [cmd] = commands(tpu_pod("create", "pod1", "--zone=z", "--accelerator_type=v5litepod-16",
                           "--version=v2-alpha-tpuv5-lite", "--preemptible", "--dry_run").stdout)
  assert flag(cmd, "accelerator-type") == "v5litepod-16"
  assert flag(cmd, "version") == "v2-alpha-tpuv5-lite"
  assert "--preemptible" in cmd and "--spot" not in cmd


def test_tpu_create_queued_dry_run():
  [cmd] = commands(tpu_pod("create", "pod1", "--zone=z", "--accelerator-type=v4-64", "--queued",
                           "--queued_id=req1", "--spot", "--dry_run").stdout)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "req1"]
  assert flag(cmd, "node-id") == "pod1"
  assert flag(cmd, "accelerator-type") == "v4-64"
  assert flag(cmd, "runtime-version") == "tpu-ubuntu2204-base"
  assert "--spot" in cmd
  [cmd] = commands(tpu_pod("delete", "pod1", "--zone=z", "--queued", "--dry_run").stdout)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "pod1"]
  assert "--force" in cmd and "--quiet" in cmd


@pytest.mark.parametrize("args", [
    ["create", "pod1", "--zone=z", "--accelerator-type=v4-8", "--spot", "--preemptible"],
    ["create", "pod1", "--zone=z", "--accelerator-type=v4-8", "--queued", "--preemptible"],
    ["create", "pod1", "--accelerator-type=v4-8"],                        # no zone
    ["run", "pod1", "--zone=z", "--workdir=gs://b/r", "--bogus=1"],       # not a --config.*
    ["setup", "pod1", "--zone=z", "--remote_dir=/"],
    ["setup", "pod1", "--zone=z", "--remote_dir=../x"],
])
def test_tpu_bad_arguments(args):
  result = tpu_pod(*args, "--dry_run", check=False)
  assert result.returncode == 2
  assert "error" in result.stderr and result.stdout == ""


def test_tpu_run_dry_run():
  out = tpu_pod("run", "pod1", "--zone=europe-west4-a", "--config=configs/affwild2.py",
                "--workdir=gs://bucket/run 1", "--config.train.batch_size=256",
                "--config.model.fusion=gated", "--dry_run").stdout
  [cmd] = commands(out)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"]
  assert "--worker=all" in cmd
  assert flag(cmd, "zone") == "europe-west4-a"
  remote_command = flag(cmd, "command")
  assert remote_command.endswith(" 2>&1 | tee ~/logs/worker_$(hostname).log")
  remote = shell_tokens(remote_command)
  assert contains(remote, ["set", "-o", "pipefail", ";"])
  assert contains(remote, [
      "MGRU_DISTRIBUTED=auto", "~/mgru_venv/bin/python", "-m", "multimodal_gru.main",
      "--config=configs/affwild2.py", "--workdir=gs://bucket/run 1",
      "--config.train.batch_size=256", "--config.model.fusion=gated", ")"])
  assert contains(remote, ["(", "cd", "multimodal_gru", "&&"])

  [cmd] = commands(tpu_pod("run", "pod1", "--zone=z", "--workdir=gs://b/r", "--detach",
                           "--dry_run").stdout)
  remote = shell_tokens(flag(cmd, "command"))
  assert remote[-1] == "&" and "nohup" in remote


def test_tpu_setup_dry_run():
  out = tpu_pod("setup", "pod1", "--zone=z", "--dry_run").stdout
  assert out.startswith("# pack the git tree")
  scp, ssh = commands(out)
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert scp[5].endswith("multimodal_gru.tar.gz") and scp[6] == "pod1:multimodal_gru.tar.gz"
  assert "--worker=all" in scp and flag(scp, "zone") == "z"
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"] and "--worker=all" in ssh
  remote = shell_tokens(flag(ssh, "command"))
  assert contains(remote, ["tar", "-xzf", "multimodal_gru.tar.gz", "-C", "multimodal_gru"])
  assert contains(remote, ["python3.11", "-m", "venv", "mgru_venv"])
  assert contains(remote, [
      "mgru_venv/bin/pip", "install", "-q", "-e", "multimodal_gru[gcs]", "jax[tpu]==0.10.2", "-f",
      "https://storage.googleapis.com/jax-releases/libtpu_releases.html"])


def test_tpu_stage_dry_run():
  [cmd] = commands(tpu_pod("stage", "pod1", "--zone=z", "--src=gs://b/data/dvd",
                           "--dest=data/dvd", "--dry_run").stdout)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod1"] and "--worker=all" in cmd
  assert shell_tokens(flag(cmd, "command")) == [
      "mkdir", "-p", "data/dvd", "&&", "gcloud", "storage", "rsync", "--recursive",
      "gs://b/data/dvd", "data/dvd"]
  assert tpu_pod("stage", "pod1", "--zone=z", "--src=gs://b/d", "--dest=/abs",
                 "--dry_run", check=False).returncode != 0


def _load_tpu_pod():
  spec = importlib.util.spec_from_file_location("tpu_pod", os.path.join(LAUNCH, "tpu_pod.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_tpu_setup_packs_tree_and_skips_installed_workers(tmp_path):
  tpu_pod_module = _load_tpu_pod()
  home = tmp_path / "home"
  home.mkdir()
  tarball = home / "multimodal_gru.tar.gz"
  tpu_pod_module.pack_repo(REPO_ROOT, str(tarball))
  with tarfile.open(tarball) as tar:
    names = set(tar.getnames())
  assert {"pyproject.toml", "multimodal_gru/sharding.py", "launch/tpu_pod.py"} <= names
  assert not any(n.startswith((".venv/", ".git/")) or "__pycache__" in n for n in names)

  # The remote script on a worker that has these pins installed: unpack only.
  (home / "mgru_venv").mkdir()
  with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
    pins = hashlib.sha256(f.read()).hexdigest() + "  -"
  (home / "mgru_venv" / ".mgru_installed").write_text(pins + "\n")
  (home / "multimodal_gru").mkdir()
  (home / "multimodal_gru" / "stale.py").write_text("")
  args = tpu_pod_module.parse_args(["setup", "pod1", "--zone=z"])
  result = subprocess.run(["bash", "-c", tpu_pod_module.setup_remote_script(args)], cwd=home,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  assert "already installed" in result.stdout
  assert (home / "multimodal_gru" / "multimodal_gru" / "sharding.py").is_file()
  assert not (home / "multimodal_gru" / "stale.py").exists()


def test_tpu_logs_stop_delete_dry_run():
  [cmd] = commands(tpu_pod("logs", "pod1", "--zone=z", "--dest=out", "--dry_run").stdout)
  assert cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert contains(cmd, ["--recurse", "pod1:logs", "out", "--worker=all"])
  [cmd] = commands(tpu_pod("stop", "pod1", "--zone=z", "--dry_run").stdout)
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "stop", "pod1", "--zone=z"]
  [cmd] = commands(tpu_pod("delete", "pod1", "--zone=z", "--dry_run").stdout)
  assert cmd == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod1", "--quiet", "--zone=z"]


def test_tpu_command_failure_exits_nonzero(tmp_path):
  # A gcloud on PATH that fails like the real one: the CLI stops with its status.
  fake_bin = tmp_path / "bin"
  fake_bin.mkdir()
  gcloud = fake_bin / "gcloud"
  gcloud.write_text("#!/bin/sh\necho 'ERROR: (gcloud.compute.tpus.tpu-vm.stop) NOT_FOUND' >&2\n"
                    "exit 1\n")
  gcloud.chmod(0o755)
  result = run([sys.executable, os.path.join(LAUNCH, "tpu_pod.py"), "stop", "pod1", "--zone=z"],
               env=dict(PATH=str(fake_bin)), check=False)
  assert result.returncode == 1
  assert "ERROR: (gcloud.compute.tpus.tpu-vm.stop) NOT_FOUND" in result.stderr
  assert "exit status 1 from: gcloud compute tpus tpu-vm stop pod1" in result.stderr

  result = run([sys.executable, os.path.join(LAUNCH, "tpu_pod.py"), "stop", "pod1", "--zone=z"],
               env=dict(PATH=str(tmp_path / "empty")), check=False)
  assert result.returncode == 1 and "'gcloud' not found" in result.stderr


# --- launch/slurm_gpu.sbatch -------------------------------------------------------


def test_slurm_dry_run():
  sbatch = os.path.join(LAUNCH, "slurm_gpu.sbatch")
  result = run(["bash", sbatch, "--config.train.batch_size=512", "--config.model.fusion=a b"],
               env=dict(DRY_RUN="1", CONFIG="configs/dvd.py", WORKDIR="/shared/run"))
  [cmd] = commands(result.stdout)
  assert cmd[0] == "srun" and "--kill-on-bad-exit=1" in cmd
  assert contains(cmd, ["python", "-m", "multimodal_gru.main", "--config=configs/dvd.py",
                        "--workdir=/shared/run", "--config.train.batch_size=512",
                        "--config.model.fusion=a b"])
  with open(sbatch) as f:
    directives = {line.split()[1].split("=")[0] for line in f if line.startswith("#SBATCH")}
  assert {"--nodes", "--ntasks-per-node", "--gpus-per-task"} <= directives

  result = run(["bash", sbatch], env=dict(DRY_RUN="1", WORKDIR=""), check=False)
  assert result.returncode != 0 and "set WORKDIR" in result.stderr


# --- launch/local_multiprocess.sh --------------------------------------------------

LOCAL = os.path.join(LAUNCH, "local_multiprocess.sh")


def test_local_multiprocess_dry_run():
  result = run(["bash", LOCAL, "3", "configs/demo.py", "/tmp/run", "--config.train.num_steps=5"],
               env=dict(DRY_RUN="1", MGRU_COORDINATOR_PORT="23456", DEVICES_PER_PROCESS="4",
                        XLA_FLAGS=""))
  cmds = commands(result.stdout)
  assert len(cmds) == 3
  for i, cmd in enumerate(cmds):
    assert cmd[0] == "env"
    env = dict(arg.split("=", 1) for arg in cmd[1:] if "=" in arg and not arg.startswith("-"))
    assert env["MGRU_COORDINATOR"] == "localhost:23456"
    assert env["MGRU_NUM_PROCESSES"] == "3" and env["MGRU_PROCESS_ID"] == str(i)
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=4"]
    assert cmd[-6:] == ["python", "-m", "multimodal_gru.main", "--config=configs/demo.py",
                        "--workdir=/tmp/run", "--config.train.num_steps=5"]


@pytest.mark.parametrize("args", [["2", "c"], ["0", "c", "w"], ["two", "c", "w"]])
def test_local_multiprocess_bad_arguments(args):
  result = run(["bash", LOCAL, *args], env=dict(DRY_RUN="1"), check=False)
  assert result.returncode == 2


def test_local_multiprocess_prefixes_output_and_propagates_failure(tmp_path):
  # Stand-in for the trainer: reports its rank; rank 1 fails when FAIL is set.
  trainer = tmp_path / "trainer"
  trainer.write_text(textwrap.dedent("""\
      #!/bin/bash
      echo "rank $MGRU_PROCESS_ID of $MGRU_NUM_PROCESSES at $MGRU_COORDINATOR: $*"
      if [[ -n "${FAIL:-}" && "$MGRU_PROCESS_ID" == 1 ]]; then echo "rank 1 broke" >&2; exit 3; fi
      if [[ -n "${FAIL:-}" ]]; then sleep 60; fi
      """))
  trainer.chmod(0o755)
  result = run(["bash", LOCAL, "2", "cfg.py", "wd"], env=dict(PYTHON=str(trainer)))
  lines = sorted(result.stdout.splitlines())
  port = lines[0].split("localhost:")[1].split(":")[0]
  assert lines == [
      f"[p0] rank 0 of 2 at localhost:{port}: -m multimodal_gru.main --config=cfg.py --workdir=wd",
      f"[p1] rank 1 of 2 at localhost:{port}: -m multimodal_gru.main --config=cfg.py --workdir=wd"]

  result = run(["bash", LOCAL, "3", "cfg.py", "wd"], env=dict(PYTHON=str(trainer), FAIL="1"),
               check=False)
  assert result.returncode == 3
  assert "[p1] rank 1 broke" in result.stdout
  assert "a process failed (exit status 3)" in result.stderr


# --- multimodal_gru.distributed ----------------------------------------------------


@pytest.mark.parametrize("nodelist, hosts", [
    ("node01", ["node01"]),
    ("node[01-04]", ["node01", "node02", "node03", "node04"]),
    ("gpu[9-11],login-1", ["gpu9", "gpu10", "gpu11", "login-1"]),
    ("a[001,007-008]b,c[1-2]", ["a001b", "a007b", "a008b", "c1", "c2"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
])
def test_expand_nodelist(nodelist, hosts):
  assert distributed.expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["node[3-1]", "node[a-b]", "node[1-2"])
def test_expand_nodelist_errors(nodelist):
  with pytest.raises(ValueError):
    distributed.expand_nodelist(nodelist)


SLURM = dict(SLURM_JOB_ID="77", SLURM_NTASKS="16", SLURM_PROCID="5", SLURM_LOCALID="5",
             SLURM_STEP_NODELIST="gpu[07-08]", SLURM_JOB_NODELIST="gpu[07-08]")


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    (dict(SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_JOB_NODELIST="gpu1"), None),
    (dict(TPU_WORKER_HOSTNAMES="t1"), None),                       # single-host TPU VM
    (SLURM, distributed.DistributedArgs("SLURM", "gpu07:12345", 16, 5)),
    (dict(SLURM, MGRU_COORDINATOR_PORT="2222", SLURM_STEP_NODELIST="x3,x1"),
     distributed.DistributedArgs("SLURM", "x3:2222", 16, 5)),
    (dict(SLURM, SLURM_STEP_NUM_TASKS="4"), distributed.DistributedArgs("SLURM", "gpu07:12345", 4, 5)),
    (dict(SLURM, SLURM_STEP_NODELIST=""), distributed.DistributedArgs("SLURM", "gpu07:12345", 16, 5)),
    (dict(SLURM, SLURM_GPUS_PER_TASK="1", CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7"),
     distributed.DistributedArgs("SLURM", "gpu07:12345", 16, 5, (5,))),
    (dict(SLURM, SLURM_GPUS_PER_TASK="1", CUDA_VISIBLE_DEVICES="5"),   # already bound
     distributed.DistributedArgs("SLURM", "gpu07:12345", 16, 5)),
    (dict(SLURM, MGRU_COORDINATOR="h:1", MGRU_NUM_PROCESSES="2", MGRU_PROCESS_ID="1"),
     distributed.DistributedArgs("MGRU_COORDINATOR", "h:1", 2, 1)),
    (dict(MGRU_COORDINATOR="localhost:9", MGRU_NUM_PROCESSES="4", MGRU_PROCESS_ID="0",
          MGRU_LOCAL_DEVICE_IDS="0,1"),
     distributed.DistributedArgs("MGRU_COORDINATOR", "localhost:9", 4, 0, (0, 1))),
    (dict(TPU_WORKER_HOSTNAMES="t1,t2,t3,t4"), distributed.DistributedArgs("TPU pod")),
    (dict(MEGASCALE_NUM_SLICES="2"), distributed.DistributedArgs("TPU pod")),
    (dict(CLOUD_TPU_TASK_ID="3"), distributed.DistributedArgs("TPU pod")),
    (dict(MGRU_DISTRIBUTED="auto"), distributed.DistributedArgs("MGRU_DISTRIBUTED=auto")),
    (dict(SLURM, MGRU_DISTRIBUTED="off"), None),
])
def test_detect(env, expected):
  assert distributed.detect(env) == expected


@pytest.mark.parametrize("env, message", [
    (dict(MGRU_COORDINATOR="h:1", MGRU_PROCESS_ID="0"), "MGRU_NUM_PROCESSES must be set"),
    (dict(MGRU_COORDINATOR="h:1", MGRU_NUM_PROCESSES="2", MGRU_PROCESS_ID="2"), r"not in \[0, 2\)"),
    (dict(MGRU_COORDINATOR="h", MGRU_NUM_PROCESSES="2", MGRU_PROCESS_ID="0"), "host:port"),
    (dict(MGRU_COORDINATOR="h:1", MGRU_NUM_PROCESSES="x", MGRU_PROCESS_ID="0"), "integer"),
    (dict(SLURM_NTASKS="2", SLURM_PROCID="0"), "no SLURM_STEP_NODELIST"),
    (dict(MGRU_DISTRIBUTED="yes"), "'auto' or 'off'"),
])
def test_detect_errors(env, message):
  with pytest.raises(ValueError, match=message):
    distributed.detect(env)


def test_maybe_initialize_single_process_does_nothing():
  distributed.maybe_initialize({})
  import jax   # pylint: disable=g-import-not-at-top
  assert not jax.distributed.is_initialized()


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


_TWO_PROCESS_CHECK = """
import numpy as np
from multimodal_gru import distributed, sharding
distributed.maybe_initialize()
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils

assert jax.process_count() == 2 and jax.device_count() == 4, (jax.process_count(), jax.devices())
process = jax.process_index()
mesh = sharding.make_mesh(dict(data=-1, fsdp=1, model=1))
rows = sharding.global_batch_size_per_process(8, mesh)
local = np.arange(rows, dtype=np.float32) + process * rows      # the rows of this process
batch = sharding.make_global_batch(dict(x=local), mesh)
assert batch["x"].shape == (8,)
total = jax.jit(jnp.sum, out_shardings=sharding.replicated(mesh))(batch["x"])
gathered = multihost_utils.process_allgather(np.array([process, rows]))
print("RESULT", process, rows, float(total), gathered.tolist(), flush=True)
"""


@pytest.mark.multihost
def test_two_processes_on_localhost():
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
             MGRU_COORDINATOR=f"localhost:{port}", MGRU_NUM_PROCESSES="2",
             PYTHONPATH=os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")])))
  procs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCESS_CHECK], cwd=REPO_ROOT,
                            env=dict(env, MGRU_PROCESS_ID=str(i)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outputs = [p.communicate(timeout=90) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, (out, err)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, err[-5000:]
    assert f"RESULT {i} 4 28.0 [[0, 4], [1, 4]]" in out, out


# --- any entry point (extract, prepare) under every launcher ------------------------


def test_launchers_run_extract_and_prepare_modules():
  [cmd] = commands(tpu_pod("extract", "pod1", "--zone=z", "--videos=~/videos",
                           "--out=/mnt/shared/f", "--config.video.batch_size=64",
                           "--dry_run").stdout)
  remote = shell_tokens(flag(cmd, "command"))
  assert contains(remote, ["MGRU_DISTRIBUTED=auto", "~/mgru_venv/bin/python", "-m",
                           "multimodal_gru.extract", "--videos=~/videos", "--out=/mnt/shared/f",
                           "--config.video.batch_size=64", ")"])
  [cmd] = commands(tpu_pod("prepare", "pod1", "--zone=z", "--dataset=dvd", "--out=/m/d",
                           "--detach", "--dry_run").stdout)
  remote = shell_tokens(flag(cmd, "command"))
  assert "nohup" in remote and "multimodal_gru.prepare" in flag(cmd, "command")

  result = run(["bash", os.path.join(LAUNCH, "slurm_gpu.sbatch"), "--videos=/v", "--out=/o"],
               env=dict(DRY_RUN="1", MODULE="multimodal_gru.extract", WORKDIR=""))
  [cmd] = commands(result.stdout)
  assert cmd[-5:] == ["python", "-m", "multimodal_gru.extract", "--videos=/v", "--out=/o"]

  result = run(["bash", LOCAL, "2", "--module=multimodal_gru.prepare", "--dataset=dvd",
                "--out=/o"], env=dict(DRY_RUN="1", MGRU_COORDINATOR_PORT="23456"))
  cmds = commands(result.stdout)
  assert [c[-5:] for c in cmds] == [["python", "-m", "multimodal_gru.prepare", "--dataset=dvd",
                                     "--out=/o"]] * 2
  assert [c for c in cmds[1] if c.startswith("MGRU_PROCESS_ID")] == ["MGRU_PROCESS_ID=1"]
  result = run(["bash", LOCAL, "2", "--module=bad module"], env=dict(DRY_RUN="1"), check=False)
  assert result.returncode == 2 and "Python module name" in result.stderr
