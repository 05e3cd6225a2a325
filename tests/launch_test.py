"""The cluster launchers under launch/: their dry runs, their input checks, and their signal handling.

Every script runs with a PATH that has no gcloud, kubectl, sbatch or srun (they are hidden even when
installed), so a dry run that tried to call one would fail. Where a launcher's generated command
would run on a cluster host, the test runs it here against a stand-in `batgpt` that records its
arguments, so quoting mistakes show up as wrong arguments rather than as string differences.
"""

import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml

from testlib import REPO

LAUNCH = REPO / "launch"
TPU = LAUNCH / "tpu_vm_pod.sh"
GKE = LAUNCH / "gke_jobset.sh"
SLURM = LAUNCH / "slurm_gpu.sbatch"
HIDDEN = {"gcloud", "gsutil", "kubectl", "envsubst", "sbatch", "srun", "scontrol", "scancel"}
GIN_FILES = "gin/pretrain.gin gin/models/1b.gin gin/mesh/tpu_v4_32.gin"

# A stand-in for `batgpt`: writes its arguments as JSON to $ARGS_OUT; with $STOP_FILE set it waits
# for SIGTERM, touches $STOP_FILE once it arrived, and exits $EXIT_CODE (batgpt: 143 after saving).
FAKE_BATGPT = f"""#!{sys.executable}
import json, os, signal, sys, time
with open(os.environ["ARGS_OUT"], "w") as f:
  json.dump(sys.argv[1:], f)
if os.environ.get("STOP_FILE"):
  stop = []
  signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
  open(os.environ["STOP_FILE"] + ".ready", "w").close()
  deadline = time.time() + 20
  while not stop and time.time() < deadline:
    time.sleep(0.01)
  open(os.environ["STOP_FILE"], "w").close()
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory) -> str:
  """A PATH of links to every command on the current PATH except the cluster clients."""
  bin_dir = tmp_path_factory.mktemp("bare_bin")
  for directory in os.environ["PATH"].split(os.pathsep):
    if not os.path.isdir(directory):
      continue
    for entry in os.scandir(directory):
      target = bin_dir / entry.name
      if entry.name in HIDDEN or target.exists() or target.is_symlink():
        continue
      if os.access(entry.path, os.X_OK) and not entry.is_dir():
        target.symlink_to(entry.path)
  return str(bin_dir)


def launch(script: pathlib.Path, *args: str, path: str, cwd=REPO, **env) -> subprocess.CompletedProcess:
  base = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
  return subprocess.run([str(script), *args], cwd=cwd, env={**base, **env}, capture_output=True,
                        text=True, timeout=30, check=False)


def commands(stdout: str) -> list[list[str]]:
  """The `+ ` lines of a dry run, each split as a shell would (which also checks their quoting)."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def remote_command(argv: list[str]) -> str:
  """The --command=... of a `gcloud ... ssh` command line."""
  return next(a for a in argv if a.startswith("--command="))[len("--command="):]


@pytest.mark.parametrize("script", [TPU, GKE, SLURM], ids=lambda p: p.name)
def test_scripts_parse_and_are_executable(script):
  subprocess.run(["bash", "-n", str(script)], check=True)
  assert os.access(script, os.X_OK)
  assert "set -euo pipefail" in script.read_text()


# --- TPU VM pod ---------------------------------------------------------------------------------

TPU_ENV = dict(DRY_RUN="1", TPU_NAME="pod-a", ZONE="us-central2-b", BUCKET="gs://bkt")


def test_tpu_all_creates_copies_installs_and_trains(bare_path):
  result = launch(TPU, "all", "--", "--gin.TrainConfig.steps=10", path=bare_path, **TPU_ENV)
  assert result.returncode == 0, result.stderr
  cmds = commands(result.stdout)
  assert len(cmds) == len(result.stdout.splitlines())  # nothing but `+ ` lines
  create, archive, scp, untar, install, train = cmds
  assert create[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and create[5] == "pod-a"
  assert {"--zone=us-central2-b", "--accelerator-type=v4-32",
          "--version=tpu-ubuntu2204-base"} <= set(create)
  assert not any(a.startswith("--project") for a in create)
  assert archive[0] == "git" and "archive" in archive and archive[-1] == "HEAD"
  assert scp[3:5] == ["tpu-vm", "scp"] and "--worker=all" in scp
  for ssh in (untar, install, train):
    assert ssh[3:6] == ["tpu-vm", "ssh", "pod-a"] and "--worker=all" in ssh
  assert "tar -xzf" in remote_command(untar)
  assert "-m venv" in remote_command(install) and 'pip install -q -e ".[tpu]"' in remote_command(install)
  line = remote_command(train)
  assert "batgpt train" in line and "nohup" not in line and not line.rstrip().endswith("&")
  for gin_file in GIN_FILES.split():
    assert f"--gin_file={gin_file}" in line
  assert "gs://bkt/runs/pod-a" in line


def test_tpu_train_command_gives_batgpt_exactly_these_arguments(bare_path, tmp_path):
  """Runs the remote train command here, with HOME pointing at a fake repo and venv."""
  (tmp_path / "batgpt-jax").mkdir()
  venv_bin = tmp_path / "batgpt-venv" / "bin"
  venv_bin.mkdir(parents=True)
  (venv_bin / "batgpt").write_text(FAKE_BATGPT)
  (venv_bin / "batgpt").chmod(0o755)
  result = launch(TPU, "train", "--", "--gin.TrainConfig.steps=10", "--gin.X.name='a b'",
                  path=bare_path, **TPU_ENV, DATA_PATTERN="gs://bkt/data/*.txt", PROJECT="proj")
  assert result.returncode == 0, result.stderr
  (train,) = commands(result.stdout)
  assert "--project=proj" in train
  out = tmp_path / "args.json"
  subprocess.run(["bash", "-c", remote_command(train)], check=True, timeout=20,
                 env={"HOME": str(tmp_path), "PATH": bare_path, "ARGS_OUT": str(out)})
  assert json.loads(out.read_text()) == [
      "train", *[f"--gin_file={f}" for f in GIN_FILES.split()],
      "--gin.TrainConfig.run_dir='gs://bkt/runs/pod-a'",
      "--gin.DataConfig.sources=[(@TextFiles(), 1.0)]",
      "--gin.TextFiles.file_pattern='gs://bkt/data/*.txt'",
      "--gin.TrainConfig.steps=10", "--gin.X.name='a b'"]


def test_tpu_queued_spot_resource(bare_path):
  result = launch(TPU, "create", path=bare_path, **TPU_ENV, QUEUED="1", SPOT="1",
                  ACCELERATOR_TYPE="v5p-128")
  assert result.returncode == 0, result.stderr
  create, wait = commands(result.stdout)
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"]
  assert {"--node-id=pod-a", "--accelerator-type=v5p-128", "--spot",
          "--runtime-version=tpu-ubuntu2204-base"} <= set(create)
  assert wait[3:5] == ["queued-resources", "describe"]
  deleted = commands(launch(TPU, "delete", path=bare_path, **TPU_ENV, QUEUED="1").stdout)
  assert deleted[0][3:5] == ["queued-resources", "delete"] and "--force" in deleted[0]


def test_tpu_repo_url_clones_on_every_worker(bare_path):
  result = launch(TPU, "install", path=bare_path, **TPU_ENV, REPO_URL="https://example.com/b.git")
  clone, install = commands(result.stdout)
  assert "git clone" in remote_command(clone) and "https://example.com/b.git" in remote_command(clone)
  assert "--worker=all" in clone and "--worker=all" in install
  assert not any(c[0] == "git" for c in commands(result.stdout))  # no local archive


def test_tpu_stop_sends_sigterm_on_every_worker(bare_path):
  (stop,) = commands(launch(TPU, "stop", path=bare_path, **TPU_ENV).stdout)
  assert "--worker=all" in stop and "pkill -TERM" in remote_command(stop)


@pytest.mark.parametrize("env, message", [
    (dict(BUCKET=""), "BUCKET"),
    (dict(BUCKET="my-bucket"), "gs://"),
    (dict(TPU_NAME=""), "TPU_NAME"),
    (dict(ZONE=""), "ZONE"),
    (dict(BUCKET="", RUN_DIR="/local/dir"), "gs://"),
])
def test_tpu_rejects_bad_settings(bare_path, env, message):
  result = launch(TPU, "train", path=bare_path, **{**TPU_ENV, **env})
  assert result.returncode != 0 and message in result.stderr
  assert "+ " not in result.stdout


@pytest.mark.parametrize("args", [["bogus"], []])
def test_tpu_unknown_command_prints_usage(bare_path, args):
  result = launch(TPU, *args, path=bare_path, **TPU_ENV)
  assert result.returncode == 2 and "usage:" in result.stderr
  if args:
    assert "bogus" in result.stderr


def test_tpu_without_gcloud_says_so(bare_path):
  result = launch(TPU, "status", path=bare_path, **{**TPU_ENV, "DRY_RUN": "0"})
  assert result.returncode != 0 and "gcloud not found" in result.stderr


# --- GKE JobSet ---------------------------------------------------------------------------------

GKE_ENV = dict(DRY_RUN="1", IMAGE="us-docker.pkg.dev/p/ml/batgpt-jax:v1", BUCKET="gs://bkt",
               JOB_NAME="pre-1b")


def container(jobset: dict) -> dict:
  return jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]


def test_gke_renders_a_jobset(bare_path):
  result = launch(GKE, "--", "--gin.TrainConfig.steps=10", path=bare_path, **GKE_ENV,
                  TPU_ACCELERATOR="tpu-v5p-slice", TPU_TOPOLOGY="4x4x4", NUM_SLICES="2",
                  HOSTS_PER_SLICE="16", CHIPS_PER_HOST="4", MAX_RESTARTS="7", GRACE_SECONDS="900")
  assert result.returncode == 0, result.stderr
  assert "${" not in result.stdout
  assert "+ kubectl apply -f -" in result.stderr
  (jobset,) = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
  assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and jobset["kind"] == "JobSet"
  assert jobset["metadata"]["name"] == "pre-1b"
  assert (jobset["metadata"]["annotations"]["alpha.jobset.sigs.k8s.io/exclusive-topology"]
          == "cloud.google.com/gke-nodepool")
  assert jobset["spec"]["failurePolicy"]["maxRestarts"] == 7
  (replicated,) = jobset["spec"]["replicatedJobs"]
  assert replicated["replicas"] == 2
  job = replicated["template"]["spec"]
  assert job["parallelism"] == job["completions"] == 16
  assert job["completionMode"] == "Indexed" and job["backoffLimit"] == 0
  pod = job["template"]["spec"]
  assert pod["terminationGracePeriodSeconds"] == 900
  assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
  assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
                                 "cloud.google.com/gke-tpu-topology": "4x4x4"}
  box = container(jobset)
  assert box["image"] == GKE_ENV["IMAGE"]
  assert box["resources"]["limits"]["google.com/tpu"] == 4
  assert box["command"] == ["batgpt", "train"]  # it exits 143 after a SIGTERM checkpoint
  assert box["args"] == [*[f"--gin_file={f}" for f in GIN_FILES.split()],
                         "--gin.TrainConfig.run_dir='gs://bkt/runs/pre-1b'",
                         "--gin.TrainConfig.steps=10"]


@pytest.mark.parametrize("env, message", [
    (dict(IMAGE=""), "IMAGE"),
    (dict(BUCKET=""), "BUCKET"),
    (dict(BUCKET="bkt"), "gs://"),
    (dict(TPU_TOPOLOGY="4x4x4"), "HOSTS_PER_SLICE"),
    (dict(NUM_SLICES="0"), "NUM_SLICES"),
    (dict(JOB_NAME="Bad_Name"), "JOB_NAME"),
])
def test_gke_rejects_bad_settings(bare_path, env, message):
  result = launch(GKE, path=bare_path, **{**GKE_ENV, **env})
  assert result.returncode != 0 and message in result.stderr and not result.stdout


def test_gke_delete_and_usage(bare_path):
  result = launch(GKE, "delete", path=bare_path, DRY_RUN="1", JOB_NAME="pre-1b")
  assert result.returncode == 0 and "+ kubectl delete jobset pre-1b" in result.stderr
  bad = launch(GKE, "bogus", path=bare_path, **GKE_ENV)
  assert bad.returncode == 2 and "usage:" in bad.stderr
  missing = launch(GKE, path=bare_path, **{**GKE_ENV, "DRY_RUN": "0"})
  assert missing.returncode != 0 and "kubectl not found" in missing.stderr


# --- SLURM --------------------------------------------------------------------------------------


def test_slurm_dry_run_outside_slurm(bare_path):
  result = launch(SLURM, "--gin.TrainConfig.steps=10", path=bare_path, DRY_RUN="1",
                  RUN_DIR="/shared/runs/r1")
  assert result.returncode == 0, result.stderr
  assert "nodes=2" in result.stdout and "16 processes" in result.stdout
  submit, srun = commands(result.stdout)
  assert "sbatch" in submit and submit[-2:] == [str(SLURM), "--gin.TrainConfig.steps=10"]
  assert "RUN_DIR=/shared/runs/r1" in submit
  assert srun[0] == "srun" and {"--nodes=2", "--ntasks-per-node=8", "--kill-on-bad-exit=1"} <= set(srun)
  train = srun[srun.index(".venv/bin/batgpt"):]
  assert train == [".venv/bin/batgpt", "train", "--gin_file=gin/pretrain.gin",
                   "--gin_file=gin/models/1b.gin", "--gin_file=gin/mesh/gpu_8xh100.gin",
                   "--gin.TrainConfig.run_dir='/shared/runs/r1'", "--gin.TrainConfig.steps=10"]


def test_slurm_dry_run_inside_an_allocation_uses_its_size(bare_path, tmp_path):
  result = launch(SLURM, path=bare_path, DRY_RUN="1", SLURM_JOB_ID="42", SLURM_JOB_NUM_NODES="4",
                  SLURM_NTASKS_PER_NODE="8", SLURM_SUBMIT_DIR=str(tmp_path), GIN_FILES="a.gin b.gin")
  assert result.returncode == 0, result.stderr
  (srun,) = commands(result.stdout)
  assert "--nodes=4" in srun and "--gin_file=a.gin" in srun and "--gin_file=b.gin" in srun
  assert f"--gin.TrainConfig.run_dir='{tmp_path}/runs/batgpt'" in srun


def test_slurm_refuses_to_run_outside_slurm(bare_path):
  result = launch(SLURM, path=bare_path)
  assert result.returncode != 0
  assert "SLURM_JOB_ID" in result.stderr and "sbatch" in result.stderr and not result.stdout


def test_slurm_time_limit_signal_checkpoints_then_requeues(bare_path, tmp_path):
  """USR1 (the --signal lead time) reaches batgpt as SIGTERM; once it has exited, the job requeues."""
  fake_bin = tmp_path / "bin"
  fake_bin.mkdir()
  # srun stand-in: drops its own options and becomes the task (so signals reach batgpt directly).
  (fake_bin / "srun").write_text('#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\nexec "$@"\n')
  (fake_bin / "scontrol").write_text(f'#!/bin/bash\necho "$*" > {tmp_path}/scontrol\n')
  venv_bin = tmp_path / "venv" / "bin"
  venv_bin.mkdir(parents=True)
  (venv_bin / "batgpt").write_text(FAKE_BATGPT)
  for exe in (fake_bin / "srun", fake_bin / "scontrol", venv_bin / "batgpt"):
    exe.chmod(0o755)
  stop_file = tmp_path / "stopped"
  env = {"PATH": f"{fake_bin}:{bare_path}", "HOME": str(tmp_path), "SLURM_JOB_ID": "42",
         "SLURM_JOB_NUM_NODES": "1", "SLURM_SUBMIT_DIR": str(tmp_path),
         "VENV": str(tmp_path / "venv"), "ARGS_OUT": str(tmp_path / "args.json"),
         "STOP_FILE": str(stop_file)}
  proc = subprocess.Popen([str(SLURM)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 20
  while not pathlib.Path(f"{stop_file}.ready").exists() and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGUSR1)
  _, err = proc.communicate(timeout=20)
  assert proc.returncode == 0, err
  assert stop_file.exists()
  assert (tmp_path / "scontrol").read_text().split() == ["requeue", "42"]
  assert (tmp_path / "runs" / "batgpt").is_dir()
  assert json.loads((tmp_path / "args.json").read_text())[-1] == (
      f"--gin.TrainConfig.run_dir='{tmp_path}/runs/batgpt'")


@pytest.mark.parametrize("script", [TPU, GKE, SLURM], ids=lambda p: p.name)
def test_readme_documents_every_variable(script):
  header = script.read_text().split("\nset -euo pipefail", 1)[0]
  block = header.split("# Variables", 1)[1]
  names = {line.split()[1] for line in block.splitlines()
           if len(line.split()) > 1 and line.split()[1].isupper() and line.startswith("#   ")}
  assert {"DRY_RUN", "GIN_FILES"} <= names
  readme = (LAUNCH / "README.md").read_text()
  assert not [name for name in names if f"`{name}`" not in readme]


LOCAL = LAUNCH / "local_multihost.sh"
FAKE_HOST = """#!/bin/bash
echo "id=$BATGPT_PROCESS_ID of $BATGPT_NUM_PROCESSES at $BATGPT_COORDINATOR_ADDRESS $XLA_FLAGS args=$*"
if [ "$BATGPT_PROCESS_ID" = "$FAIL_ID" ]; then  # fail once the others are ready for SIGTERM
  for i in $(seq 100); do
    [ "$(ls "$READY_DIR" | wc -l)" = $((BATGPT_NUM_PROCESSES - 1)) ] && exit 3; sleep 0.1
  done
  exit 5
fi
sleep 60 &
trap "echo got-term; kill $!; exit 0" TERM
touch "$READY_DIR/$BATGPT_PROCESS_ID"
wait
"""


def test_local_multihost_sets_up_each_process_and_a_failure_stops_the_others(tmp_path):
  fake = tmp_path / "batgpt"
  fake.write_text(FAKE_HOST)
  fake.chmod(0o755)
  (tmp_path / "ready").mkdir()
  env = dict(os.environ, BATGPT=str(fake), FAIL_ID="1", LOG_DIR=str(tmp_path / "logs"),
             READY_DIR=str(tmp_path / "ready"),
             XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_other=1")
  start = time.time()
  done = subprocess.run(["bash", str(LOCAL), "3", "2", "--", "train", "--gin.X=1"], env=env,
                        capture_output=True, text=True, timeout=60, check=False)
  assert done.returncode == 3, done.stdout + done.stderr
  assert time.time() - start < 30  # the survivors were stopped, not left to time out
  lines = done.stdout.splitlines()
  for i in range(3):
    started = next(line for line in lines if line.startswith(f"[{i}] id="))
    assert f"id={i} of 3 at 127.0.0.1:" in started and "args=train --gin.X=1" in started
    assert "--xla_other=1" in started and started.endswith("device_count=2 args=train --gin.X=1")
    assert (tmp_path / "logs" / f"process_{i}.pid").read_text().strip().isdigit()
  assert "[0] got-term" in lines and "[2] got-term" in lines
  assert "exited with status 3; stopping the others" in done.stderr


def test_local_multihost_kills_a_process_that_ignores_sigterm(tmp_path):
  fake = tmp_path / "batgpt"
  ready = tmp_path / "ready"  # process 1 fails only once process 0 ignores SIGTERM
  fake.write_text(f"""#!/bin/bash
if [ "$BATGPT_PROCESS_ID" = 1 ]; then
  for i in $(seq 100); do [ -e {ready} ] && exit 4; sleep 0.1; done; exit 5
fi
exec {sys.executable} -c "import pathlib, signal, time; signal.signal(signal.SIGTERM, \\
signal.SIG_IGN); pathlib.Path('{ready}').touch(); time.sleep(60)"
""")
  fake.chmod(0o755)
  env = dict(os.environ, BATGPT=str(fake), GRACE_SECONDS="1")
  done = subprocess.run(["bash", str(LOCAL), "2", "1", "--", "train"], env=env,
                        capture_output=True, text=True, timeout=30, check=False)
  assert done.returncode == 4 and "Killing the processes still running after 1 s" in done.stderr


@pytest.mark.parametrize("argv", [["2", "4", "train"], ["0", "4", "--", "train"],
                                  ["2", "four", "--", "train"], ["2", "4", "--"]])
def test_local_multihost_rejects_bad_arguments(argv):
  done = subprocess.run(["bash", str(LOCAL), *argv], capture_output=True, text=True, timeout=30,
                        check=False)
  assert done.returncode == 2 and "usage: " in done.stderr
