#!/usr/bin/env bash
# Runs N training processes on this machine's CPU, joined by jax.distributed:
# a multi-host run in miniature (each process sees K CPU devices).
#
#   launch/local_multiprocess.sh N CONFIG WORKDIR [--config.KEY=VALUE ...]
#   launch/local_multiprocess.sh N --module=MODULE [FLAGS ...]   # any entry point, e.g.
#       --module=multimodal_gru.extract --videos=DIR --out=DIR [--config.KEY=VALUE ...]
#       --module=multimodal_gru.prepare --dataset=dvd --manual_dir=DIR --out=DIR
#
# Environment: DEVICES_PER_PROCESS=K (default 2), MGRU_COORDINATOR_PORT (default:
# a free port), PYTHON (default python), DRY_RUN=1 prints the commands.
# Waits for all processes; if one fails the others are stopped and the script
# exits non-zero. Output lines are prefixed with [pI].
set -euo pipefail

usage="usage: $0 N CONFIG WORKDIR [--config.KEY=VALUE ...] | $0 N --module=MODULE [FLAGS ...]"
if [[ "${2:-}" == --module=* ]]; then
  num_processes="$1" module="${2#--module=}"
  shift 2
  module_args=("$@")
elif (( $# >= 3 )); then
  num_processes="$1" module=multimodal_gru.main
  module_args=("--config=$2" "--workdir=$3" "${@:4}")
else
  echo "$usage" >&2
  exit 2
fi
if ! [[ "$module" =~ ^[A-Za-z_][A-Za-z0-9_.]*$ ]]; then
  echo "error: --module must be a Python module name, got '$module'" >&2
  exit 2
fi
if ! [[ "$num_processes" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: N must be a positive integer, got '$num_processes'" >&2
  exit 2
fi
devices="${DEVICES_PER_PROCESS:-2}"
python="${PYTHON:-python}"
port="${MGRU_COORDINATOR_PORT:-$(python3 -c \
    'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}"

commands=()
for (( i = 0; i < num_processes; i++ )); do
  cmd=(env JAX_PLATFORMS=cpu
       "XLA_FLAGS=${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices"
       "MGRU_COORDINATOR=localhost:$port" "MGRU_NUM_PROCESSES=$num_processes"
       "MGRU_PROCESS_ID=$i"
       "$python" -m "$module" "${module_args[@]}")
  commands+=("$(printf '%q ' "${cmd[@]}")")
done

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%s\n' "${commands[@]}"
  exit 0
fi

set -m   # each process in its own process group, so a failure can stop all of it
pids=()
for (( i = 0; i < num_processes; i++ )); do
  bash -o pipefail -c "${commands[$i]} 2>&1 | while IFS= read -r line; do echo \"[p$i] \$line\"; done" &
  pids+=($!)
done

status=0
for (( done_count = 0; done_count < num_processes; done_count++ )); do
  wait -n || { status=$?; break; }
done
if (( status != 0 )); then
  echo "error: a process failed (exit status $status); stopping the others" >&2
  for pid in "${pids[@]}"; do
    kill -- "-$pid" 2>/dev/null || true
  done
  { wait; } 2>/dev/null || true
fi
exit "$status"
