"""Multi-process runs on loopback (launch/local_multihost.sh), and where the coordinator comes from.

The end-to-end tests start real JAX processes joined over 127.0.0.1 with fake CPU devices and
compare them with one process of 8 devices (this pytest process): the same losses, checkpoints
that restore on other process counts and meshes, and one agreed stop step after SIGTERM.
"""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from testlib import REPO

from batgpt_jax import checkpoints, config, distributed, parallel
from batgpt_jax.train import faults, loop, metrics, state as train_state

LAUNCHER = REPO / "launch" / "local_multihost.sh"
BINDINGS = ["ModelConfig.vocab_size = 512", "DataConfig.vocab_size = 512",
            "TrainConfig.global_batch = 8", "TrainConfig.seq_len = 64",
            "TrainConfig.log_every = 1", "TrainConfig.eval_every = 0",
            "TrainConfig.checkpoint_every = 3", "OptimizerConfig.warmup_steps = 2",
            # Adam's eps bounds how much reduction-order noise (which differs between process
            # counts) is amplified for near-zero gradients; 1e-6 keeps it under 1e-5.
            "OptimizerConfig.eps = 1e-6"]
GIN_FILES = ["gin/smoke.gin"]


# --- where the coordinator comes from ----------------------------------------------------------

def test_flags_win_over_environment_over_gin():
  cfg = distributed.DistributedConfig(coordinator_address="gin:1", num_processes=4, process_id=3)
  env = {distributed.ENV_ADDRESS: "env:2", distributed.ENV_COUNT: "2", distributed.ENV_ID: "1"}
  flags = {"coordinator_address": "flag:3", "num_processes": 8, "process_id": 5}
  assert distributed.explicit_coordinator(cfg, flags, env) == distributed.Coordinator(
      "flag:3", 8, 5)
  assert distributed.explicit_coordinator(cfg, {}, env) == distributed.Coordinator("env:2", 2, 1)
  assert distributed.explicit_coordinator(cfg, {}, {}) == distributed.Coordinator("gin:1", 4, 3)
  assert distributed.explicit_coordinator(distributed.DistributedConfig(), {}, {}) is None


@pytest.mark.parametrize("flags, message", [
    ({"coordinator_address": "h:1", "num_processes": 2}, "process id missing"),
    ({"coordinator_address": "host", "num_processes": 2, "process_id": 0}, "needs a port"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, r"outside \[0, 2\)"),
])
def test_incomplete_or_wrong_settings_are_clear_errors(flags, message):
  with pytest.raises(ValueError, match=message):
    distributed.explicit_coordinator(distributed.DistributedConfig(), flags, {})
  with pytest.raises(ValueError, match="mode='sometimes'"):
    distributed.DistributedConfig(mode="sometimes")


def test_launchers_are_detected_from_their_environment():
  detect = distributed.detected_launcher
  slurm = {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "16", "SLURM_PROCID": "3"}
  assert detect(slurm, tpu_chips=False) == "SLURM (srun)"
  assert detect(dict(slurm, SLURM_STEP_NUM_TASKS="1"), tpu_chips=False) is None
  assert detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16"}, tpu_chips=False) is None  # no srun
  assert detect({"TPU_WORKER_HOSTNAMES": "w0,w1"}, tpu_chips=False).startswith("TPU pod")
  assert detect({}, tpu_chips=True) == "Cloud TPU VM"
  assert detect({"JAX_PLATFORMS": "cpu"}, tpu_chips=True) is None
  assert detect({}, tpu_chips=False) is None


def test_initialize_passes_the_coordinator_and_timeouts(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  monkeypatch.setattr(distributed, "detected_launcher", lambda: None)
  for name in (distributed.ENV_ADDRESS, distributed.ENV_COUNT, distributed.ENV_ID):
    monkeypatch.delenv(name, raising=False)
  distributed.initialize(distributed.DistributedConfig())  # nothing to join: a single process
  assert calls == []
  monkeypatch.setenv(distributed.ENV_ADDRESS, "127.0.0.1:9999")
  monkeypatch.setenv(distributed.ENV_COUNT, "4")
  monkeypatch.setenv(distributed.ENV_ID, "2")
  distributed.initialize(distributed.DistributedConfig(mode="off"))  # off means off
  assert calls == []
  distributed.initialize(distributed.DistributedConfig(heartbeat_timeout=30))
  assert calls == [(("127.0.0.1:9999", 4, 2), {"initialization_timeout": 300,
                                                "heartbeat_timeout_seconds": 30,
                                                "shutdown_timeout_seconds": 300})]


# --- real processes ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  path = tmp_path_factory.mktemp("cache")
  previous = os.environ.get("BATGPT_CACHE")
  os.environ["BATGPT_CACHE"] = str(path)  # the default tokenizer, built once for every process
  yield path
  if previous is None:
    os.environ.pop("BATGPT_CACHE")
  else:
    os.environ["BATGPT_CACHE"] = previous


def _bindings(run_dir, steps, extra=()):
  return BINDINGS + [f"TrainConfig.run_dir = '{run_dir}'", f"TrainConfig.steps = {steps}",
                     *extra]


def train_here(run_dir, steps, extra=()) -> list[dict]:
  """`batgpt train` in this process: 1 process x 8 devices."""
  gin_text = config.parse_gin(GIN_FILES, _bindings(run_dir, steps, extra))
  return loop.train(**config.run_configs(), gin_text=gin_text)


def start_processes(nprocs, devices, run_dir, steps, extra=(), log_dir=None):
  args = ["train"] + [f"--gin_file={f}" for f in GIN_FILES] + [
      f"--gin.{b.replace(' = ', '=')}" for b in _bindings(run_dir, steps, extra)]
  batgpt = pathlib.Path(sys.executable).parent / "batgpt"
  env = dict(os.environ, BATGPT=str(batgpt), LOG_DIR=str(log_dir or run_dir / "logs"))
  return subprocess.Popen(["bash", str(LAUNCHER), str(nprocs), str(devices), "--", *args],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def run_processes(nprocs, devices, run_dir, steps, extra=()) -> str:
  proc = start_processes(nprocs, devices, run_dir, steps, extra)
  output = proc.communicate(timeout=400)[0]
  assert proc.returncode == 0, output[-4000:]
  return output


def losses(run_dir) -> dict[int, tuple]:
  """Step -> (loss, L2R loss, R2L loss), from the run's metrics.jsonl (a resume appends)."""
  records = metrics.read_jsonl(str(run_dir / "metrics.jsonl"))
  return {r["step"]: (r["train/loss"], r["train/l2r/loss"], r["train/r2l/loss"])
          for r in records if "train/loss" in r}


def assert_same_losses(got: dict, want: dict, steps):
  assert sorted(got) == sorted(steps), (sorted(got), steps)
  for step in steps:
    np.testing.assert_allclose(got[step], want[step], rtol=1e-5, atol=1e-5,
                               err_msg=f"step {step}")


def restored_params(run_dir, step, mesh_shape):
  """The checkpoint's parameters, restored in this process onto a mesh of `mesh_shape`."""
  gin_text = config.parse_gin(GIN_FILES, _bindings(run_dir, 6))
  configs = config.run_configs()
  model_cfg = configs["model_cfg"]
  rules = parallel.check_rules(configs["mesh_cfg"].axis_rules)
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=mesh_shape))
  tx = train_state.make_optimizer(configs["opt_cfg"], 6)
  abstract = train_state.abstract_state(model_cfg, tx)
  shardings = train_state.state_shardings(model_cfg, tx, mesh, rules, abstract)
  mngr = checkpoints.manager(str(run_dir / "checkpoints"), keep=5, async_save=False)
  try:
    assert step in mngr.all_steps()
    restored = checkpoints.restore_latest(mngr, abstract, shardings, model_cfg, gin_text)
  finally:
    mngr.close()
  assert restored.step == step
  return jax.device_get(restored.state["params"])


@pytest.fixture(scope="module")
def one_process(cache, tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("one_process")
  train_here(run_dir, 6)
  return run_dir


@pytest.fixture(scope="module")
def two_processes(cache, tmp_path_factory):
  run_dir = tmp_path_factory.mktemp("two_processes")
  output = run_processes(2, 4, run_dir, 6)
  return run_dir, output


def test_two_processes_train_exactly_like_one(one_process, two_processes):
  run_dir, output = two_processes
  assert "[0] " in output and "[1] " in output  # both processes ran and logged
  assert "Process 1 of 2: 4 local of 8 devices" in output
  assert_same_losses(losses(run_dir), losses(one_process), range(1, 7))


def test_their_checkpoint_restores_in_one_process_on_any_mesh(one_process, two_processes):
  run_dir, _ = two_processes
  data_parallel = restored_params(run_dir, 6, (8, 1, 1))
  sharded = restored_params(run_dir, 6, (2, 2, 2))
  for a, b in zip(jax.tree.leaves(data_parallel), jax.tree.leaves(sharded)):
    np.testing.assert_array_equal(a, b)  # the same numbers, however they are laid out
  reference = restored_params(one_process, 6, (8, 1, 1))
  for a, b in zip(jax.tree.leaves(data_parallel), jax.tree.leaves(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_run_moves_from_two_to_one_to_four_processes(one_process, two_processes, tmp_path,
                                                       monkeypatch):
  """2 x 4 (steps 1-3) -> 1 x 8 (step 4) -> 4 x 2 over a two-level mesh (steps 5-6)."""
  source, _ = two_processes
  (tmp_path / "checkpoints").mkdir()
  shutil.copytree(source / "checkpoints" / "3", tmp_path / "checkpoints" / "3")
  # Stop the one-process leg after step 4 as a preemption would (the schedule still spans 6).
  monkeypatch.setattr(faults.StopAgreement, "reached", lambda self, step: step == 4)
  history = train_here(tmp_path, 6)
  assert [h["step"] for h in history if h["kind"] == "train"] == [4]
  assert history[-1] == {"step": 4, "kind": "preempted"}
  output = run_processes(4, 2, tmp_path, 6, ["MeshConfig.shape = (1, 2, 1)",
                                             "MeshConfig.dcn_shape = (4, 1, 1)"])
  assert "Resumed from checkpoint step 4" in output
  assert "no input state" not in output  # each host read its shards' packer state
  assert_same_losses(losses(tmp_path), losses(one_process), range(4, 7))


def _wait_for(pattern, path, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    text = path.read_text() if path.exists() else ""
    if re.search(pattern, text):
      return
    assert proc.poll() is None, proc.communicate()[0][-4000:]
    time.sleep(0.1)
  raise AssertionError(f"{pattern!r} never appeared in {path}")


def test_sigterm_to_one_process_stops_both_at_one_step_and_the_restart_resumes(cache, tmp_path):
  steps = 24
  reference = tmp_path / "reference"
  train_here(reference, steps)
  run_dir = tmp_path / "run"
  proc = start_processes(2, 4, run_dir, steps)
  logs = run_dir / "logs"
  _wait_for(rf"step 3/{steps}", logs / "process_0.log", proc)
  os.kill(int((logs / "process_1.pid").read_text()), signal.SIGTERM)  # one host only
  output = proc.communicate(timeout=300)[0]
  assert proc.returncode == faults.PREEMPTED_EXIT, output[-4000:]  # saved, but not finished
  saved = [re.findall(r"Saved step (\d+) after a preemption notice",
                      (logs / f"process_{i}.log").read_text()) for i in range(2)]
  assert len(saved[0]) == 1 and saved[0] == saved[1], saved  # both hosts, the same step
  stop = int(saved[0][0])
  assert 3 <= stop < steps
  mngr = checkpoints.manager(str(run_dir / "checkpoints"), keep=5)
  assert max(mngr.all_steps()) == stop
  mngr.close()

  output = run_processes(2, 4, run_dir, steps)
  assert f"Resumed from checkpoint step {stop}" in output
  assert_same_losses(losses(run_dir), losses(reference), range(1, steps + 1))
