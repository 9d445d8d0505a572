"""Multi-process JAX initialisation, driven by the launch environment.

`maybe_initialize()` must run before any other JAX call. It initialises
jax.distributed exactly when the environment asks for it, in this order:

  MGRU_DISTRIBUTED=off            never (a single process, whatever else is set)
  MGRU_DISTRIBUTED=auto           initialize() with no args: JAX detects the cluster
                                  (launch/tpu_pod.py sets this on TPU VMs)
  MGRU_COORDINATOR=host:port      explicit: with MGRU_NUM_PROCESSES, MGRU_PROCESS_ID and
                                  optionally MGRU_LOCAL_DEVICE_IDS=0,1 (launch/local_multiprocess.sh)
  SLURM, more than one task       coordinator = first host of the step's node list,
                                  port MGRU_COORDINATOR_PORT (default 12345)
  TPU pod (several workers)       initialize() with no args: JAX reads the TPU metadata
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from typing import Mapping

from absl import logging

DEFAULT_COORDINATOR_PORT = 12345


@dataclasses.dataclass(frozen=True)
class DistributedArgs:
  """Arguments for jax.distributed.initialize; None = JAX autodetects."""
  source: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None


def _split_top_level(text: str) -> list[str]:
  """Splits at commas outside brackets: 'a[1,2],b' -> ['a[1,2]', 'b']."""
  parts, depth, start = [], 0, 0
  for i, char in enumerate(text):
    depth += {"[": 1, "]": -1}.get(char, 0)
    if char == "," and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  parts.append(text[start:])
  return [part for part in parts if part]


def _expand_range_list(ranges: str) -> list[str]:
  """'01-03,07' -> ['01', '02', '03', '07'] (keeps zero padding)."""
  out = []
  for item in ranges.split(","):
    first, _, last = item.partition("-")
    if not last:
      out.append(first)
      continue
    if not (first.isdigit() and last.isdigit()) or int(last) < int(first):
      raise ValueError(f"bad SLURM host range {item!r}")
    out.extend(str(n).zfill(len(first)) for n in range(int(first), int(last) + 1))
  return out


def expand_nodelist(nodelist: str) -> list[str]:
  """Expands a SLURM host list without scontrol.

  'gpu[01-03,07],login-1' -> ['gpu01', 'gpu02', 'gpu03', 'gpu07', 'login-1'];
  'r[1-2]n[1-2]' -> ['r1n1', 'r1n2', 'r2n1', 'r2n2'].
  """
  hosts = []
  for pattern in _split_top_level(nodelist.strip()):
    pieces = re.split(r"\[([^\]]*)\]", pattern)   # literal, ranges, literal, ...
    if any(c in piece for piece in pieces[::2] for c in "[]"):
      raise ValueError(f"bad SLURM node list {nodelist!r}")
    choices = [[piece] if i % 2 == 0 else _expand_range_list(piece)
               for i, piece in enumerate(pieces)]
    hosts.extend("".join(combo) for combo in itertools.product(*choices))
  return hosts


def _int_env(environ: Mapping[str, str], key: str) -> int:
  try:
    return int(environ[key])
  except KeyError:
    raise ValueError(f"{key} must be set") from None
  except ValueError:
    raise ValueError(f"{key} must be an integer, got {environ[key]!r}") from None


def _explicit_args(environ: Mapping[str, str]) -> DistributedArgs:
  coordinator = environ["MGRU_COORDINATOR"]
  if not re.fullmatch(r".+:\d+", coordinator):
    raise ValueError(f"MGRU_COORDINATOR must be host:port, got {coordinator!r}")
  num_processes = _int_env(environ, "MGRU_NUM_PROCESSES")
  process_id = _int_env(environ, "MGRU_PROCESS_ID")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"MGRU_PROCESS_ID={process_id} is not in [0, {num_processes})")
  device_ids = environ.get("MGRU_LOCAL_DEVICE_IDS", "").strip()
  local_device_ids = tuple(int(i) for i in device_ids.split(",")) if device_ids else None
  return DistributedArgs("MGRU_COORDINATOR", coordinator, num_processes, process_id,
                         local_device_ids)


def _slurm_args(environ: Mapping[str, str], num_tasks: int) -> DistributedArgs:
  nodelist = (environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
              or environ.get("SLURM_NODELIST"))
  if not nodelist:
    raise ValueError("SLURM_NTASKS > 1 but no SLURM_STEP_NODELIST / SLURM_JOB_NODELIST")
  port = DEFAULT_COORDINATOR_PORT
  if environ.get("MGRU_COORDINATOR_PORT"):
    port = _int_env(environ, "MGRU_COORDINATOR_PORT")
  local_device_ids = None
  # One GPU per task: restrict each process to its GPU unless SLURM already
  # made only that GPU visible.
  visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
  if environ.get("SLURM_GPUS_PER_TASK") == "1" and len(visible) != 1:
    local_device_ids = (_int_env(environ, "SLURM_LOCALID"),)
  return DistributedArgs("SLURM", f"{expand_nodelist(nodelist)[0]}:{port}", num_tasks,
                         _int_env(environ, "SLURM_PROCID"), local_device_ids)


def _is_tpu_pod(environ: Mapping[str, str]) -> bool:
  workers = [w for w in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if w]
  return (len(workers) > 1 or int(environ.get("MEGASCALE_NUM_SLICES") or 1) > 1
          or bool(environ.get("MEGASCALE_COORDINATOR_ADDRESS"))
          or bool(environ.get("CLOUD_TPU_TASK_ID")))


def detect(environ: Mapping[str, str]) -> DistributedArgs | None:
  """What the environment asks for; None = a single process (no initialisation)."""
  mode = environ.get("MGRU_DISTRIBUTED", "").strip().lower()
  if mode in ("off", "0", "false", "none"):
    return None
  if mode == "auto":
    return DistributedArgs("MGRU_DISTRIBUTED=auto")
  if mode:
    raise ValueError(f"MGRU_DISTRIBUTED must be 'auto' or 'off', got {mode!r}")
  if environ.get("MGRU_COORDINATOR"):
    return _explicit_args(environ)
  # Inside srun the step's task count; plain SLURM_NTASKS otherwise.
  num_tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS")
  if num_tasks and int(num_tasks) > 1:
    return _slurm_args(environ, int(num_tasks))
  if _is_tpu_pod(environ):
    return DistributedArgs("TPU pod")
  return None


def maybe_initialize(environ: Mapping[str, str] | None = None) -> None:
  """Calls jax.distributed.initialize() when the launch environment asks for it."""
  args = detect(os.environ if environ is None else environ)
  if args is None:
    logging.info("Single process: jax.distributed not initialized")
    return
  import jax   # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    logging.info("jax.distributed already initialized")
    return
  # Cross-process collectives on CPU (local multi-process runs and tests).
  if jax.config.jax_cpu_collectives_implementation in (None, "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {k: v for k, v in dataclasses.asdict(args).items() if k != "source" and v is not None}
  logging.info("jax.distributed.initialize(%s) from %s", kwargs, args.source)
  jax.distributed.initialize(**kwargs)
  logging.info("Process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
