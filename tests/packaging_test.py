"""The wheel: built from the repo, installed in a fresh venv, it trains from an empty directory."""

import os
import pathlib
import shutil
import subprocess
import sys

from testlib import REPO

from batgpt_jax.train import metrics

_NOT_SHIPPED = (".git", ".venv", "runs", "build", "bench", "__pycache__", "*.egg-info",
                ".pytest_cache")


def _run(cmd, **kwargs):
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, **kwargs)
  assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc


def test_the_wheel_trains_from_an_empty_directory_with_packaged_gin_files(tmp_path):
  source = tmp_path / "source"  # a copy, so that building leaves no build/ in the checkout
  shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*_NOT_SHIPPED), symlinks=True)
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", str(tmp_path / "dist"), str(source)])
  wheel = next((tmp_path / "dist").glob("batgpt_jax-*.whl"))

  # A fresh venv that sees the test venv's dependencies but not its editable batgpt_jax.
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
  site = next(venv.glob("lib/python*/site-packages"))
  deps = [p for p in map(pathlib.Path, sys.path) if p.name == "site-packages" and p.is_dir()]
  (site / "test_dependencies.pth").write_text("\n".join(map(str, deps)) + "\n")
  _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
        "--no-deps", str(wheel)])

  empty = tmp_path / "empty"
  empty.mkdir()
  env = {key: value for key, value in os.environ.items()
         if key not in ("PYTHONPATH", "XLA_FLAGS")}
  where = _run([str(venv / "bin" / "python"), "-c",
                "import batgpt_jax; print(batgpt_jax.__file__)"], cwd=empty, env=env)
  assert where.stdout.strip().startswith(str(venv)), where.stdout  # the wheel, not the checkout
  proc = _run([str(venv / "bin" / "batgpt"), "train", "--gin_file=smoke.gin",
               "--gin.TrainConfig.steps=20", "--gin.TrainConfig.eval_every=10",
               "--gin.TrainConfig.run_dir='run'"], cwd=empty, env=env)
  assert "step 20/20" in proc.stderr
  records = metrics.read_jsonl(str(empty / "run" / "metrics.jsonl"))
  losses = [r["train/loss"] for r in records if "train/loss" in r]
  assert len(losses) == 2 and losses[-1] < losses[0]
  assert (empty / "run" / "checkpoints" / "20").is_dir()
