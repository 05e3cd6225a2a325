"""A training process killed with SIGKILL resumes from its last complete checkpoint."""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

from testlib import REPO

ARGS = ["--gin_file=gin/smoke.gin", "--gin.ModelConfig.vocab_size=512",
        "--gin.DataConfig.vocab_size=512", "--gin.TrainConfig.eval_every=0",
        "--gin.TrainConfig.log_every=1", "--gin.TrainConfig.global_batch=8",
        "--gin.TrainConfig.seq_len=64"]


def _batgpt(run_dir, *extra, env):
  cmd = [sys.executable, "-m", "batgpt_jax.cli", "train", *ARGS,
         f"--gin.TrainConfig.run_dir='{run_dir}'", *extra]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _complete_steps(checkpoint_dir: pathlib.Path) -> list[int]:
  if not checkpoint_dir.exists():
    return []
  return sorted(int(p.name) for p in checkpoint_dir.iterdir() if p.name.isdigit())


def test_sigkill_mid_training_resumes_from_last_complete_checkpoint(tmp_path):
  env = dict(os.environ, BATGPT_CACHE=str(tmp_path / "cache"),
             PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run_dir = tmp_path / "run"
  proc = _batgpt(run_dir, "--gin.TrainConfig.steps=400", "--gin.TrainConfig.checkpoint_every=2",
                 env=env)
  deadline = time.time() + 240
  try:
    while time.time() < deadline and max(_complete_steps(run_dir / "checkpoints"), default=0) < 6:
      assert proc.poll() is None, proc.stdout.read()
      time.sleep(0.2)
  finally:
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: a save may be half written
    output = proc.communicate()[0]
  steps = _complete_steps(run_dir / "checkpoints")
  assert steps and max(steps) >= 6, output[-2000:]
  last = max(steps)

  resumed = _batgpt(run_dir, f"--gin.TrainConfig.steps={last + 2}",
                    "--gin.TrainConfig.checkpoint_every=2", env=env)
  output = resumed.communicate(timeout=240)[0]
  assert resumed.returncode == 0, output[-3000:]
  match = re.search(r"Resumed from checkpoint step (\d+)", output)
  assert match and int(match.group(1)) == last, output[-3000:]
  assert f"step {last + 1}/{last + 2}" in output
  assert max(_complete_steps(run_dir / "checkpoints")) == last + 2
