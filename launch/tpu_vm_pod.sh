#!/usr/bin/env bash
# Creates a Cloud TPU VM slice, installs batgpt-jax on every worker, and runs `batgpt train` on all
# of them at once (one process per host; `batgpt train` finds the other hosts by itself).
#
#   launch/tpu_vm_pod.sh create|install|train|status|stop|delete|all [-- <extra batgpt train args>]
#   TPU_NAME=my-v4 ZONE=us-central2-b BUCKET=gs://my-bucket launch/tpu_vm_pod.sh all
#   DRY_RUN=1 TPU_NAME=my-v4 ZONE=us-central2-b BUCKET=gs://my-bucket launch/tpu_vm_pod.sh all
#
# Commands:
#   create   the TPU VM (or a queued resource for it, QUEUED=1), waiting until it is ready
#   install  copies the code to every worker (or clones REPO_URL), makes a venv, pip install '.[tpu]'
#   train    runs `batgpt train` on every worker in the foreground, streaming their output; the exit
#            status is gcloud's. Ctrl-C ends the local ssh sessions but not necessarily the remote
#            processes: use `stop`. For long runs, start this inside `tmux` so a closed terminal
#            does not end it.
#   status   the TPU's state and, on every worker, the running `batgpt train` process (if any)
#   stop     SIGTERM to `batgpt train` on every worker: they save a checkpoint at one step and exit
#   delete   deletes the TPU VM (and its queued resource)
#   all      create, install, train
#
# Variables (environment):
#   TPU_NAME          name of the TPU VM (required)
#   ZONE              e.g. us-central2-b (required)
#   PROJECT           GCP project; default: gcloud's configured project
#   ACCELERATOR_TYPE  default v4-32
#   RUNTIME_VERSION   TPU VM image, default tpu-ubuntu2204-base
#   QUEUED            1: create through `queued-resources create` (waits for capacity); default 0
#   QUEUED_RESOURCE   the queued resource's id, default $TPU_NAME
#   SPOT              1: a Spot TPU (cheaper, preemptible); default 0
#   BUCKET            gs://bucket for the run dir (required by train, unless RUN_DIR is set)
#   RUN_NAME          default $TPU_NAME
#   RUN_DIR           default $BUCKET/runs/$RUN_NAME; must be gs://: every host writes its shards there
#   GIN_FILES         space-separated, default "gin/pretrain.gin gin/models/1b.gin gin/mesh/tpu_v4_32.gin"
#   DATA_PATTERN      optional gs:// glob of text files: trains on them through TextFiles
#   REPO_DIR          the code on the workers, default ~/batgpt-jax
#   REPO_URL          if set, `git clone` it on every worker instead of copying `git archive HEAD`
#                     of this checkout (which holds committed files only)
#   REPO_REF          the ref checked out with REPO_URL, default HEAD (the remote's default branch)
#   VENV              the virtualenv on the workers, default ~/batgpt-venv
#   WORKER_PYTHON     default python3.11 (jax needs >= 3.11; installed with apt if missing)
#   DRY_RUN           1: print every command (`+ ` lines) instead of running it; needs no gcloud
#
# Preemption: a Spot or maintenance SIGTERM makes every host save a checkpoint at one agreed step
# and exit. Run the same command again (after `delete` if a Spot TPU was reclaimed): training
# resumes from RUN_DIR.
set -euo pipefail

usage() {
  cat >&2 <<EOF
usage: $0 create|install|train|status|stop|delete|all [-- <extra batgpt train args>]
  e.g. TPU_NAME=my-v4 ZONE=us-central2-b BUCKET=gs://my-bucket $0 all
  DRY_RUN=1 prints the commands instead of running them. Variables: see the header of $0.
EOF
  exit 2
}
die() { echo "error: $*" >&2; exit 1; }

# Quotes one word for a POSIX shell, plainly where that is safe, so printed commands stay readable.
q() {
  local s=$1
  if [[ $s =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then printf '%s' "$s"
  elif [[ $s != *[\"\$\`\\!]* ]]; then printf '"%s"' "$s"
  else printf "'%s'" "${s//\'/\'\\\'\'}"
  fi
}
# A path on the workers: a leading ~/ becomes "$HOME/", expanded there, not here.
rpath() {
  # shellcheck disable=SC2088,SC2016  # ~ and $HOME are literal here: they expand on the worker
  if [[ $1 == "~/"* ]]; then printf '"$HOME/%s"' "${1#\~/}"; else q "$1"; fi
}
# Prints the command (`+ ...`); runs it unless DRY_RUN=1 (then on stdout, else on stderr).
run() {
  local line="+" word
  for word in "$@"; do line+=" $(q "$word")"; done
  if [[ $DRY_RUN == 1 ]]; then echo "$line"; return 0; fi
  echo "$line" >&2
  "$@"
}

cmd=${1:-}
shift || true
if [[ ${1:-} == "--" ]]; then shift; fi
extra=("$@")
case "$cmd" in
  create|install|train|status|stop|delete|all) ;;
  *) [[ -n $cmd ]] && echo "error: unknown command '$cmd'" >&2; usage ;;
esac

DRY_RUN=${DRY_RUN:-0}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
QUEUED=${QUEUED:-0}
SPOT=${SPOT:-0}
GIN_FILES=${GIN_FILES:-gin/pretrain.gin gin/models/1b.gin gin/mesh/tpu_v4_32.gin}
REPO_DIR=${REPO_DIR:-"~/batgpt-jax"}
REPO_REF=${REPO_REF:-HEAD}
VENV=${VENV:-"~/batgpt-venv"}
WORKER_PYTHON=${WORKER_PYTHON:-python3.11}

[[ -n ${TPU_NAME:-} ]] || die "TPU_NAME is not set: the name of the TPU VM, e.g. TPU_NAME=batgpt-v4-32."
[[ -n ${ZONE:-} ]] || die "ZONE is not set: the TPU's zone, e.g. ZONE=us-central2-b."
QUEUED_RESOURCE=${QUEUED_RESOURCE:-$TPU_NAME}
RUN_NAME=${RUN_NAME:-$TPU_NAME}
if [[ -n ${BUCKET:-} && $BUCKET != gs://* ]]; then
  die "BUCKET='$BUCKET' must start with gs:// (every TPU host writes checkpoints to it)."
fi
BUCKET=${BUCKET:-}
BUCKET=${BUCKET%/}
if [[ $cmd == train || $cmd == all ]]; then
  if [[ -z ${RUN_DIR:-} ]]; then
    [[ -n $BUCKET ]] || die "BUCKET is not set: give BUCKET=gs://your-bucket (the run dir is \$BUCKET/runs/\$RUN_NAME), or RUN_DIR=gs://..."
    RUN_DIR="$BUCKET/runs/$RUN_NAME"
  fi
  [[ $RUN_DIR == gs://* ]] || die "RUN_DIR='$RUN_DIR' must start with gs://: each host's local disk would hold only its own shards."
  [[ $RUN_DIR != *[\'\"[:space:]]* ]] || die "RUN_DIR must not contain quotes or spaces."
  [[ -z ${DATA_PATTERN:-} || $DATA_PATTERN != *[\'\"]* ]] || die "DATA_PATTERN must not contain quotes."
fi
[[ $QUEUED == 0 || $QUEUED == 1 ]] || die "QUEUED must be 0 or 1, got '$QUEUED'."
if [[ $DRY_RUN != 1 ]] && ! command -v gcloud >/dev/null; then
  die "gcloud not found: install the Google Cloud CLI, or run with DRY_RUN=1 to print the commands."
fi

gflags=(--zone="$ZONE")
if [[ -n ${PROJECT:-} ]]; then gflags+=(--project="$PROJECT"); fi
on_all_workers() {  # runs a shell command line on every worker of the slice
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gflags[@]}" --worker=all --command="$1"
}

cmd_create() {
  local spot=()
  if [[ $SPOT == 1 ]]; then spot=(--spot); fi
  if [[ $QUEUED == 0 ]]; then
    # `tpu-vm create` returns once the VM is ready. An existing TPU is reused (re-running `all`).
    if [[ $DRY_RUN != 1 ]] && gcloud compute tpus tpu-vm describe "$TPU_NAME" "${gflags[@]}" >/dev/null 2>&1; then
      echo "TPU $TPU_NAME exists; not creating it." >&2
      return 0
    fi
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${gflags[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" ${spot[@]+"${spot[@]}"}
    return 0
  fi
  run gcloud compute tpus queued-resources create "$QUEUED_RESOURCE" "${gflags[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" ${spot[@]+"${spot[@]}"}
  # A queued resource is granted when capacity frees up: poll until its node is ACTIVE.
  local describe=(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" "${gflags[@]}"
                  --format="value(state.state)")
  if [[ $DRY_RUN == 1 ]]; then run "${describe[@]}"; return 0; fi
  local state
  while true; do
    state=$("${describe[@]}")
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED|SUSPENDING) die "queued resource $QUEUED_RESOURCE is $state; see \`gcloud compute tpus queued-resources describe $QUEUED_RESOURCE --zone=$ZONE\`." ;;
    esac
    echo "queued resource $QUEUED_RESOURCE: $state; checking again in 60 s" >&2
    sleep 60
  done
}

push_code() {
  local repo
  repo=$(rpath "$REPO_DIR")
  if [[ -n ${REPO_URL:-} ]]; then
    on_all_workers "set -e; [ -d $repo/.git ] || git clone -q $(q "$REPO_URL") $repo; git -C $repo fetch -q origin $(q "$REPO_REF"); git -C $repo checkout -q --detach FETCH_HEAD"
    return 0
  fi
  # The committed tree only: uncommitted changes are not shipped (commit them, or use REPO_URL).
  local here archive tmp
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  if [[ $DRY_RUN == 1 ]]; then
    archive="${TMPDIR:-/tmp}/batgpt-jax.XXXXXX/batgpt-jax.tar.gz"
  else
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064  # expand $tmp now: it is a local variable
    trap "rm -rf '$tmp'" EXIT
    archive="$tmp/batgpt-jax.tar.gz"
    if [[ -n $(git -C "$here" status --porcelain --untracked-files=no) ]]; then
      echo "warning: uncommitted changes in $here are not copied (git archive HEAD)." >&2
    fi
  fi
  run git -C "$here" archive --format=tar.gz --output="$archive" HEAD
  run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:batgpt-jax.tar.gz" "${gflags[@]}" --worker=all
  on_all_workers "set -e; mkdir -p $repo; tar -xzf \"\$HOME/batgpt-jax.tar.gz\" -C $repo; rm \"\$HOME/batgpt-jax.tar.gz\""
}

cmd_install() {
  push_code
  local repo venv py
  repo=$(rpath "$REPO_DIR"); venv=$(rpath "$VENV"); py=$(q "$WORKER_PYTHON")
  # Ubuntu 22.04's python3 is 3.10; jax needs >= 3.11, so install WORKER_PYTHON and its venv module.
  on_all_workers "set -e; $py -c \"import ensurepip\" 2>/dev/null || { sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $py $py-venv; }; [ -x $venv/bin/python ] || $py -m venv $venv; $venv/bin/pip install -q --upgrade pip; cd $repo && $venv/bin/pip install -q -e \".[tpu]\""
}

cmd_train() {
  local args=() gin_files f word line
  read -ra gin_files <<< "$GIN_FILES"
  for f in "${gin_files[@]}"; do args+=("--gin_file=$f"); done
  args+=("--gin.TrainConfig.run_dir='$RUN_DIR'")
  if [[ -n ${DATA_PATTERN:-} ]]; then
    args+=("--gin.DataConfig.sources=[(@TextFiles(), 1.0)]" "--gin.TextFiles.file_pattern='$DATA_PATTERN'")
  fi
  args+=(${extra[@]+"${extra[@]}"})
  line="cd $(rpath "$REPO_DIR") && exec $(rpath "$VENV")/bin/batgpt train"
  for word in "${args[@]}"; do line+=" $(q "$word")"; done
  # Foreground: every worker's output streams here and gcloud's exit status is the run's.
  on_all_workers "$line"
}

# The [b] keeps the pattern from matching the remote shell that runs pkill/pgrep itself.
cmd_status() {
  if [[ $QUEUED == 1 ]]; then
    run gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE" "${gflags[@]}"
  fi
  run gcloud compute tpus tpu-vm describe "$TPU_NAME" "${gflags[@]}" --format="value(state,health,acceleratorType)"
  on_all_workers "pgrep -af \"[b]in/batgpt train\" || echo \"\$(hostname): no batgpt train running\""
}

cmd_stop() {
  on_all_workers "pkill -TERM -f \"[b]in/batgpt train\" && echo \"\$(hostname): sent SIGTERM\" || echo \"\$(hostname): no batgpt train running\""
}

cmd_delete() {
  if [[ $QUEUED == 1 ]]; then
    run gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE" "${gflags[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${gflags[@]}" --quiet
  fi
}

case "$cmd" in
  all) cmd_create; cmd_install; cmd_train ;;
  *) "cmd_$cmd" ;;
esac
