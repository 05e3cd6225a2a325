#!/usr/bin/env bash
# Runs `batgpt train` on GKE TPU slices as a JobSet: renders launch/gke/jobset.yaml from the
# variables below and pipes it to `kubectl apply -f -`. One pod per TPU host; `batgpt train` finds
# the other hosts from the environment GKE gives TPU pods.
#
#   launch/gke_jobset.sh [apply|delete|status] [-- <extra batgpt train args>]
#   IMAGE=us-docker.pkg.dev/my-project/ml/batgpt-jax:v1 BUCKET=gs://my-bucket launch/gke_jobset.sh
#   DRY_RUN=1 IMAGE=... BUCKET=gs://my-bucket launch/gke_jobset.sh > jobset.yaml
#
# Commands:
#   apply    (default) renders the JobSet and applies it
#   delete   deletes the JobSet: its pods get SIGTERM, save a checkpoint at one step, and exit
#   status   the JobSet and its pods
#
# Variables (environment):
#   JOB_NAME         JobSet name: lowercase letters, digits, '-', at most 40; default batgpt
#   NAMESPACE        default default
#   IMAGE            container image with batgpt-jax installed ('.[tpu]') (required by apply)
#   WORKDIR          the repository root in the image (relative gin paths resolve there), default /app
#   TPU_ACCELERATOR  node label gke-tpu-accelerator: tpu-v4-podslice (default), tpu-v5p-slice, ...
#   TPU_TOPOLOGY     chips per slice as a topology, default 2x2x4 (v4-32)
#   NUM_SLICES       slices joined over DCN, default 1
#   HOSTS_PER_SLICE  TPU VMs per slice, default 4
#   CHIPS_PER_HOST   TPU chips per VM, default 4
#   BUCKET           gs://bucket for the run dir (required by apply, unless RUN_DIR is set)
#   RUN_NAME         default $JOB_NAME
#   RUN_DIR          default $BUCKET/runs/$RUN_NAME; must be gs://
#   GIN_FILES        space-separated, default "gin/pretrain.gin gin/models/1b.gin gin/mesh/tpu_v4_32.gin"
#   DATA_PATTERN     optional gs:// glob of text files: trains on them through TextFiles
#   MAX_RESTARTS     JobSet restarts after a failure or preemption, default 10
#   GRACE_SECONDS    SIGTERM-to-SIGKILL time for the checkpoint, default 600
#   DRY_RUN          1: print the manifest (stdout) and the kubectl command (stderr, `+ ` lines)
#                    instead of applying; needs no kubectl
set -euo pipefail

usage() {
  cat >&2 <<EOF
usage: $0 [apply|delete|status] [-- <extra batgpt train args>]
  e.g. IMAGE=us-docker.pkg.dev/my-project/ml/batgpt-jax:v1 BUCKET=gs://my-bucket $0
  DRY_RUN=1 prints the manifest and the command instead. Variables: see the header of $0.
EOF
  exit 2
}
die() { echo "error: $*" >&2; exit 1; }
positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'."; }

cmd=apply
if [[ $# -gt 0 && $1 != "--" ]]; then cmd=$1; shift; fi
if [[ ${1:-} == "--" ]]; then shift; fi
case "$cmd" in
  apply|delete|status) ;;
  *) echo "error: unknown command '$cmd'" >&2; usage ;;
esac

DRY_RUN=${DRY_RUN:-0}
JOB_NAME=${JOB_NAME:-batgpt}
NAMESPACE=${NAMESPACE:-default}
[[ $JOB_NAME =~ ^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$ ]] || die "JOB_NAME='$JOB_NAME': use lowercase letters, digits and '-', at most 40 characters (it prefixes every pod's host name)."

# Prints the command (`+ ...`, on stderr so that stdout carries only the manifest); runs it unless DRY_RUN=1.
run() {
  echo "+ $*" >&2
  if [[ $DRY_RUN == 1 ]]; then return 0; fi
  "$@"
}
if [[ $DRY_RUN != 1 ]] && ! command -v kubectl >/dev/null; then
  die "kubectl not found: install it and point it at the cluster (gcloud container clusters get-credentials), or run with DRY_RUN=1."
fi

if [[ $cmd == delete ]]; then
  run kubectl delete jobset "$JOB_NAME" --namespace="$NAMESPACE"
  exit 0
fi
if [[ $cmd == status ]]; then
  run kubectl get jobset "$JOB_NAME" --namespace="$NAMESPACE"
  run kubectl get pods --namespace="$NAMESPACE" -l "jobset.sigs.k8s.io/jobset-name=$JOB_NAME" -o wide
  exit 0
fi

WORKDIR=${WORKDIR:-/app}
TPU_ACCELERATOR=${TPU_ACCELERATOR:-tpu-v4-podslice}
TPU_TOPOLOGY=${TPU_TOPOLOGY:-2x2x4}
NUM_SLICES=${NUM_SLICES:-1}
HOSTS_PER_SLICE=${HOSTS_PER_SLICE:-4}
CHIPS_PER_HOST=${CHIPS_PER_HOST:-4}
RUN_NAME=${RUN_NAME:-$JOB_NAME}
GIN_FILES=${GIN_FILES:-gin/pretrain.gin gin/models/1b.gin gin/mesh/tpu_v4_32.gin}
MAX_RESTARTS=${MAX_RESTARTS:-10}
GRACE_SECONDS=${GRACE_SECONDS:-600}

[[ -n ${IMAGE:-} ]] || die "IMAGE is not set: the container image with batgpt-jax installed, e.g. IMAGE=us-docker.pkg.dev/my-project/ml/batgpt-jax:v1."
if [[ -n ${BUCKET:-} && $BUCKET != gs://* ]]; then
  die "BUCKET='$BUCKET' must start with gs:// (every TPU host writes checkpoints to it)."
fi
if [[ -z ${RUN_DIR:-} ]]; then
  [[ -n ${BUCKET:-} ]] || die "BUCKET is not set: give BUCKET=gs://your-bucket (the run dir is \$BUCKET/runs/\$RUN_NAME), or RUN_DIR=gs://..."
  RUN_DIR="${BUCKET%/}/runs/$RUN_NAME"
fi
[[ $RUN_DIR == gs://* ]] || die "RUN_DIR='$RUN_DIR' must start with gs://: each pod's disk would hold only its own shards."
for value in "$RUN_DIR" "${DATA_PATTERN:-}" "$IMAGE" "$WORKDIR" "$NAMESPACE" "$TPU_ACCELERATOR"; do
  [[ $value != *[\'\"[:space:]\\]* ]] || die "'$value': quotes, backslashes and spaces are not allowed here."
done
for name in NUM_SLICES HOSTS_PER_SLICE CHIPS_PER_HOST MAX_RESTARTS GRACE_SECONDS; do
  positive "$name" "${!name}"
done
# The topology counts the chips of one slice: it must match hosts x chips per host.
[[ $TPU_TOPOLOGY =~ ^[1-9][0-9]*(x[1-9][0-9]*)+$ ]] || die "TPU_TOPOLOGY='$TPU_TOPOLOGY': expected e.g. 2x2x4 or 4x4."
chips=$(( ${TPU_TOPOLOGY//x/*} ))
(( chips == HOSTS_PER_SLICE * CHIPS_PER_HOST )) || die "TPU_TOPOLOGY=$TPU_TOPOLOGY has $chips chips, but HOSTS_PER_SLICE x CHIPS_PER_HOST = $HOSTS_PER_SLICE x $CHIPS_PER_HOST = $((HOSTS_PER_SLICE * CHIPS_PER_HOST))."

export JOB_NAME NAMESPACE IMAGE WORKDIR TPU_ACCELERATOR TPU_TOPOLOGY NUM_SLICES HOSTS_PER_SLICE \
  CHIPS_PER_HOST RUN_DIR GIN_FILES MAX_RESTARTS GRACE_SECONDS DATA_PATTERN="${DATA_PATTERN:-}"
template="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/gke/jobset.yaml"

# string.Template: every placeholder must be given (a missing one is an error, not a blank).
render() {
  python3 - "$template" "$@" <<'PY'
import json, os, string, sys

template, extra = sys.argv[1], sys.argv[2:]
env = os.environ
args = [f"--gin_file={path}" for path in env["GIN_FILES"].split()]
args.append(f"--gin.TrainConfig.run_dir='{env['RUN_DIR']}'")
if env["DATA_PATTERN"]:
  args += ["--gin.DataConfig.sources=[(@TextFiles(), 1.0)]",
           f"--gin.TextFiles.file_pattern='{env['DATA_PATTERN']}'"]
args += extra
names = ("JOB_NAME NAMESPACE IMAGE WORKDIR TPU_ACCELERATOR TPU_TOPOLOGY NUM_SLICES HOSTS_PER_SLICE "
         "CHIPS_PER_HOST RUN_DIR MAX_RESTARTS GRACE_SECONDS").split()
values = {name: env[name] for name in names}
values["GIN_ARGS"] = json.dumps(args)  # a JSON list is a YAML flow sequence
with open(template, encoding="utf-8") as f:
  text = string.Template(f.read()).substitute(values)
if "${" in text:
  sys.exit("error: the rendered manifest still holds a ${...} placeholder")
sys.stdout.write(text)
PY
}

manifest=$(render "$@")
if [[ $DRY_RUN == 1 ]]; then
  printf '%s\n' "$manifest"
  echo "+ kubectl apply -f -" >&2
  exit 0
fi
run kubectl apply -f - <<< "$manifest"
echo "Follow it with: $0 status   and   kubectl logs -f -n $NAMESPACE -l jobset.sigs.k8s.io/jobset-name=$JOB_NAME --max-log-requests=$((NUM_SLICES * HOSTS_PER_SLICE))" >&2
