#!/usr/bin/env bash
# Runs NPROCS `batgpt` processes on this machine, each with DEVICES_PER_PROC fake CPU devices,
# joined over 127.0.0.1: every multi-host code path (distributed start-up, per-host data, sharded
# checkpoints, the agreed preemption step) runs for real, without a pod.
#
#   launch/local_multihost.sh NPROCS DEVICES_PER_PROC -- <batgpt args>
#   launch/local_multihost.sh 2 4 -- train --gin_file=gin/smoke.gin --gin.TrainConfig.steps=20
#
# Variables:
#   BATGPT   the command to run (default: .venv/bin/batgpt if present, else batgpt on PATH)
#   PORT     the coordinator's port on 127.0.0.1 (default: a free one)
#   LOG_DIR  if set, also writes LOG_DIR/process_I.log and LOG_DIR/process_I.pid
#   GRACE_SECONDS  after a process fails, how long the others get to exit before SIGKILL (30)
# Output: every line prefixed with [I], the process that wrote it.
# Exit status: 0 when every process succeeds; otherwise the first failure's, after the other
# processes are stopped (they would otherwise wait for the dead one until the heartbeat timeout).
# SIGTERM or SIGINT to this script is passed to every process: they save at one step and exit.
set -euo pipefail
if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501)); then
  echo "$0 needs bash >= 5.1 (for wait -n -p); this is $BASH_VERSION." >&2
  exit 2
fi

usage() {
  echo "usage: $0 NPROCS DEVICES_PER_PROC -- <batgpt args>" >&2
  echo "  e.g. $0 2 4 -- train --gin_file=gin/smoke.gin --gin.TrainConfig.steps=20" >&2
  exit 2
}

[[ $# -ge 3 && "$3" == "--" ]] || usage
nprocs=$1
devices=$2
shift 3
[[ "$nprocs" =~ ^[1-9][0-9]*$ ]] || { echo "NPROCS must be a positive integer, got '$nprocs'" >&2; usage; }
[[ "$devices" =~ ^[1-9][0-9]*$ ]] || { echo "DEVICES_PER_PROC must be a positive integer, got '$devices'" >&2; usage; }
[[ $# -ge 1 ]] || usage

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${BATGPT:-}" ]]; then
  if [[ -x "$here/.venv/bin/batgpt" ]]; then BATGPT="$here/.venv/bin/batgpt"; else BATGPT=batgpt; fi
fi
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
if [[ -n "${LOG_DIR:-}" ]]; then mkdir -p "$LOG_DIR"; fi

# Keep any other XLA flags, but each process gets exactly DEVICES_PER_PROC CPU devices.
xla_flags=$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')
pids=()
for ((i = 0; i < nprocs; i++)); do
  out="/dev/null"
  if [[ -n "${LOG_DIR:-}" ]]; then out="$LOG_DIR/process_$i.log"; fi
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="$xla_flags --xla_force_host_platform_device_count=$devices" \
  BATGPT_COORDINATOR_ADDRESS="127.0.0.1:$PORT" \
  BATGPT_NUM_PROCESSES="$nprocs" \
  BATGPT_PROCESS_ID="$i" \
    "$BATGPT" "$@" > >(tee "$out" | sed -u "s/^/[$i] /") 2>&1 &
  pids+=($!)
  if [[ -n "${LOG_DIR:-}" ]]; then echo "$!" > "$LOG_DIR/process_$i.pid"; fi
done
echo "Started $nprocs processes x $devices CPU devices (coordinator 127.0.0.1:$PORT): pids ${pids[*]}" >&2

forward() { kill -s "$1" "${pids[@]}" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT

status=0
live=("${pids[@]}")
GRACE_SECONDS=${GRACE_SECONDS:-30}
timer=""  # after a failure: a grace period for the others, then SIGKILL
while ((${#live[@]} > 0)); do
  finished=""
  code=0
  wait -n -p finished "${live[@]}" $timer || code=$?
  if [[ -z "$finished" ]]; then continue; fi  # woken by a trapped signal; keep waiting
  if [[ "$finished" == "$timer" ]]; then
    echo "Killing the processes still running after $GRACE_SECONDS s." >&2
    forward KILL
    timer=""
    continue
  fi
  live=($(printf '%s\n' "${live[@]}" | grep -vx "$finished" || true))
  if ((code != 0 && status == 0)); then
    status=$code
    echo "Process with pid $finished exited with status $code; stopping the others." >&2
    forward TERM
    sleep "$GRACE_SECONDS" > /dev/null 2>&1 &
    timer=$!
  fi
done
if [[ -n "$timer" ]]; then kill "$timer" 2>/dev/null || true; fi
exit "$status"
