"""A run directory guarded end to end through `batgpt train` in subprocesses (each time-limited):
Ctrl-C saves and exits 143, a second job into a run dir in use is refused naming the holder, an
empty step folder is skipped with one line, and metrics.jsonl is cut back to the resumed step."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from testlib import REPO

from batgpt_jax.train import faults, run_lock

# The smoke run's own tokenizer (built once, in the shared cache), tiny sizes.
ARGS = ["--gin_file=gin/smoke.gin", "--gin.TrainConfig.eval_every=0",
        "--gin.TrainConfig.log_every=1", "--gin.TrainConfig.global_batch=4",
        "--gin.TrainConfig.seq_len=32", "--gin.TrainConfig.checkpoint_every=1000"]


def _train(run_dir, *extra, env):
  return subprocess.Popen(
      [sys.executable, "-m", "batgpt_jax.cli", "train", *ARGS,
       f"--gin.TrainConfig.run_dir='{run_dir}'", *extra],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _steps(run_dir) -> list[int]:
  folder = run_dir / "checkpoints"
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def test_ctrl_c_saves_a_second_job_is_refused_and_the_resume_skips_junk(tmp_path):
  env = dict(os.environ,
             PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run_dir = tmp_path / "run"
  first = _train(run_dir, "--gin.TrainConfig.steps=100000", env=env)
  output, deadline = "", time.time() + 240
  try:
    while time.time() < deadline and not re.search(r"step [3-9]/100000", output):
      line = first.stdout.readline()
      assert line or first.poll() is None, output[-3000:]
      output += line

    # A second job into the same run directory: refused at once, naming the holder.
    start = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "batgpt_jax.cli", "train", *ARGS,
         f"--gin.TrainConfig.run_dir='{run_dir}'", "--gin.TrainConfig.steps=5"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 2, second.stderr[-2000:]
    refusal = second.stderr.strip().splitlines()[-1]
    assert refusal.startswith(f"error: {run_dir} is in use by another training job (host ")
    assert f"pid {first.pid}, started " in refusal and "Traceback" not in second.stderr
    assert time.monotonic() - start < 120

    first.send_signal(signal.SIGINT)  # Ctrl-C
    output += first.communicate(timeout=120)[0]
  finally:
    if first.poll() is None:
      first.kill()
  assert first.returncode == faults.PREEMPTED_EXIT, output[-3000:]
  assert "KeyboardInterrupt" not in output and "Traceback" not in output
  saved = int(re.findall(r"Saved step (\d+) after a preemption notice \(SIGTERM\) or Ctrl-C",
                         output)[-1])
  last_logged = int(re.findall(r"step (\d+)/100000", output)[-1])
  assert _steps(run_dir) == [saved] and saved == last_logged  # the current step, nothing lost

  # Junk a killed run could leave: an empty step folder, and metrics past the checkpoint.
  (run_dir / "checkpoints" / str(saved + 50)).mkdir()
  with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write(json.dumps({"step": saved + 1, "train/loss": 99.0}) + "\n" + '{"step": ')
  resumed = _train(run_dir, f"--gin.TrainConfig.steps={saved + 2}", env=env)
  output = resumed.communicate(timeout=240)[0]
  assert resumed.returncode == 0, output[-3000:]
  assert output.count(f"Skipping {run_dir}/checkpoints/{saved + 50}: not a complete checkpoint "
                      "(no state, data, config).") == 1, output[-3000:]
  assert f"Resumed from checkpoint step {saved} " in output
  records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
  steps = [record["step"] for record in records]
  assert steps == list(range(1, saved + 3)), steps  # each step once: the re-run ones replaced
  assert all(record["train/loss"] < 50 for record in records)


def test_a_lock_is_exclusive_and_released_with_its_holder(tmp_path):
  holder = run_lock.RunLock(str(tmp_path)).acquire()
  with pytest.raises(run_lock.RunDirInUseError, match=rf"pid {os.getpid()}, started "):
    run_lock.RunLock(str(tmp_path)).acquire()  # a second open file: flock refuses it too
  holder.release()
  with run_lock.RunLock(str(tmp_path)):
    pass
  # A holder killed with SIGKILL leaves the file, but the kernel has dropped its lock.
  proc = subprocess.run([sys.executable, "-c",
                         "import os, signal, sys; from batgpt_jax.train import run_lock; "
                         f"run_lock.RunLock({str(tmp_path)!r}).acquire(); "
                         "os.kill(os.getpid(), signal.SIGKILL)"],
                        cwd=REPO, timeout=60, check=False)
  assert proc.returncode == -signal.SIGKILL
  assert "pid" in (tmp_path / run_lock.LOCK_NAME).read_text()
  with run_lock.RunLock(str(tmp_path)):
    pass
