"""The workdir of a training run: a write check, an exclusive lock, the recorded config.

`check_writable(workdir)` creates the workdir and writes and removes a probe
file, so that a full disk, a read-only file system or a file in the way stops
the run before any work, with the path, the errno and what to do.

`WorkdirLock(workdir)` holds an exclusive `fcntl.flock` on WORKDIR/.lock for
the life of the run; a second trainer on the same workdir stops at once and
names the holder (pid, host, start time) read from the lock file. The kernel
drops the lock when its process ends, even on SIGKILL, so a stale lock file
never blocks a rerun. Only process 0 of a multi-process run takes it (all
processes share the workdir). A remote workdir (`gs://...`) cannot be locked
from here: the lock is skipped with a log line, and on TPU pods what keeps two
trainers apart is that one launcher (launch/tpu_pod.py, multimodal_gru/sweep.py)
owns each workdir.

`check_config(workdir, config)` compares the config with WORKDIR/config.json,
recorded by `record_config` at the first start: a rerun that changes the model
or the data (anything but the fields in `HARMLESS_FIELDS`) stops with the
differing fields. `--config.train.allow_config_change=True` resumes anyway and
records the new config.
"""

from __future__ import annotations

import datetime
import errno as errno_lib
import fcntl
import json
import os
import socket
from typing import Any

from absl import logging
from etils import epath

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"

# Fields that may change between the runs of one workdir: loop lengths and
# intervals, evaluation batching, input-reading parallelism, the device mesh
# (checkpoints restore on any mesh), the bad-record policy (its error
# message suggests rerunning with skip_bad_records=True) and the extra
# evaluations (config.eval: robustness). A trailing "." is a prefix.
HARMLESS_FIELDS = (
    "train.num_steps", "train.eval_every", "train.log_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.eval_batch_size", "train.allow_config_change",
    "data.read_threads", "data.worker_count", "data.worker_buffer_size",
    "data.skip_bad_records", "data.generate_demo", "mesh.", "eval.",
)


class WorkdirError(RuntimeError):
  """The workdir cannot be used (not writable, locked, or trained with another config)."""


def is_local(path: str) -> bool:
  return "://" not in str(path)


def describe_os_error(e: OSError, path: str | None = None) -> str:
  """'PATH: No space left on device (errno 28, ENOSPC); free space ...' for an OSError."""
  path = path or e.filename or "?"
  code = errno_lib.errorcode.get(e.errno, "?") if e.errno is not None else "no errno"
  what = {
      errno_lib.ENOSPC: "free disk space (or lower --config.train.keep_checkpoints) or use "
                        "another --workdir",
      errno_lib.EDQUOT: "free space in your quota or use another --workdir",
      errno_lib.EROFS: "the file system is read-only: use a writable --workdir",
      errno_lib.EACCES: "no permission: fix the permissions or use another --workdir",
      errno_lib.EPERM: "no permission: fix the permissions or use another --workdir",
      errno_lib.ENOTDIR: "a file is in the way of a folder on that path: move it or use "
                         "another --workdir",
      errno_lib.EEXIST: "a file is in the way of a folder on that path: move it or use "
                        "another --workdir",
  }.get(e.errno, "fix the file system problem or use another --workdir")
  return f"{path}: {e.strerror or e} (errno {e.errno}, {code}); {what}"


def check_writable(workdir: str, process_index: int = 0) -> None:
  """Creates `workdir` and writes + removes a probe file; raises WorkdirError if that fails."""
  path = epath.Path(workdir)
  probe = path / f".write_probe.{process_index}"
  target = workdir
  try:
    path.mkdir(parents=True, exist_ok=True)
    target = str(probe)
    if is_local(workdir):
      # os.write reports ENOSPC / EIO / EDQUOT of the file system the workdir is on.
      fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      try:
        os.write(fd, b"multimodal_gru write check\n")
        os.fsync(fd)
      finally:
        os.close(fd)
    else:
      probe.write_text("multimodal_gru write check\n")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"The workdir is not writable: {describe_os_error(e, target)}.") from None


class WorkdirLock:
  """An exclusive lock on WORKDIR/.lock for the life of a run (see the module doc).

  Use as a context manager; `acquire()` raises WorkdirError naming the holder
  when another trainer has the lock. A no-op for remote workdirs.
  """

  def __init__(self, workdir: str, lock_file: str = LOCK_FILE, holder: str = "trainer"):
    """`lock_file` in `workdir`; `holder` names who holds it in the error ("trainer", "sweep")."""
    self.workdir = str(workdir)
    self.path = os.path.join(self.workdir, lock_file)
    self._what = holder
    self._fd = None

  def acquire(self) -> None:
    if not is_local(self.workdir):
      logging.info("%s is not a local path: no workdir lock (one launcher per workdir, "
                   "launch/tpu_pod.py or the sweep, keeps trainers apart there).", self.workdir)
      return
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirError(
          f"Another {self._what} is using {self.workdir}: {self._holder()} (from {self.path}). "
          "Wait for it to finish or stop it, or give this run another --workdir.") from None
    holder = dict(pid=os.getpid(), host=socket.gethostname(),
                  started=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    self._fd = fd

  def _holder(self) -> str:
    try:
      with open(self.path) as f:
        h = json.load(f)
      return f"pid {h['pid']} on host {h['host']}, started {h['started']}"
    except (OSError, ValueError, KeyError, TypeError):
      return "a process that has not written its pid yet"

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _config_fields(config) -> dict[str, Any]:
  """{"model.hidden_dim": 16, ...}: JSON values (tuples become lists)."""
  return _flatten(json.loads(config.to_json_best_effort()))


def _harmless(field: str) -> bool:
  return any(field == h or (h.endswith(".") and field.startswith(h)) for h in HARMLESS_FIELDS)


def config_diff(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
  """'field: recorded -> now' for every non-harmless field that differs (flat dicts).

  Fields on one side only (added to or removed from the code since the workdir
  was recorded) are not compared: a code update alone never blocks a resume.
  """
  return [f"{k}: {json.dumps(recorded[k])} -> {json.dumps(now[k])}"
          for k in sorted(set(recorded) & set(now))
          if not _harmless(k) and recorded[k] != now[k]]


def check_config(workdir: str, config) -> bool:
  """Compares `config` with WORKDIR/config.json; True if it must be (re)recorded.

  Raises WorkdirError listing the differing fields unless
  config.train.allow_config_change, which logs them instead.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return True
  try:
    recorded = _flatten(json.loads(path.read_text()))
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path} is unreadable ({e}); delete it to record the current config "
                       "at the next start.") from None
  diff = config_diff(recorded, _config_fields(config))
  if not diff:
    return False
  listing = "\n  ".join(diff)
  if config.train.get("allow_config_change", False):
    logging.warning("Config changed from %s (train.allow_config_change=True):\n  %s",
                    path, listing)
    return True
  raise WorkdirError(
      f"{workdir} was trained with another config ({path}); these fields differ "
      f"(recorded -> now):\n  {listing}\nUse a new --workdir for a new experiment, or pass "
      "--config.train.allow_config_change=True to resume with the changed config on purpose.")


def record_config(workdir: str, config) -> None:
  """Writes WORKDIR/config.json (atomically for local paths)."""
  path = epath.Path(workdir) / CONFIG_FILE
  text = json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)
  if is_local(workdir):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  else:
    path.write_text(text)
