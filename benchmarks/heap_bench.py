"""What TensorFlow's pinned mmap threshold costs a training step (batgpt_jax/heap.py).

  python benchmarks/heap_bench.py [--steps=300] [--core=0]

Runs the same instruction-tuning job twice, each in a fresh process on one core, one after the
other: `settled` as `batgpt` runs it (the thresholds set back after TensorFlow's one-time
setting), and `tensorflow_pin` with glibc's mmap threshold pinned at 128 KiB again after that,
as TensorFlow leaves it. The job is the PPO learning test's SFT stage (the tiny model, 16 x 128
rows of planted sorting answers, tests/align/ppo_learning_test.py). Reports the median step
time, the minor page faults and system CPU over the training, the peak RSS, and the final loss
(which must be the same: only where buffers live differs). Results print as a table and are
written as JSON under bench/results/.
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results"
SETTINGS = ("settled", "tensorflow_pin")


def _sft_job(steps: int, pinned: bool) -> dict:
  """The child: one SFT run from fresh parameters; its figures as a dict."""
  # pylint: disable=import-outside-toplevel
  import ctypes

  import gin

  from batgpt_jax import checkpoints, config, heap, xla_flags
  from batgpt_jax.data import planted
  from batgpt_jax.train import loop

  xla_flags.apply_defaults()
  if pinned:  # after `batgpt_jax.data` settled the thresholds: TensorFlow's 128 KiB again
    ctypes.CDLL("libc.so.6").mallopt(heap.M_MMAP_THRESHOLD, 128 * 1024)
  root = pathlib.Path(tempfile.mkdtemp(prefix="heap-bench-"))
  checkpoints.write_fresh_run_dir(str(root / "base"), config.model_size("tiny"))
  planted.write_both_answers("sort_swap", root / "sort.jsonl")
  bindings = ["TrainConfig.async_checkpoint = False", "DataConfig.shards = 4",
              "DataConfig.sources = [(@ChatJsonl(), 1.0)]", f"TrainConfig.steps = {steps}",
              "TrainConfig.global_batch = 16", "TrainConfig.seq_len = 128",
              "TrainConfig.eval_every = 0", "TrainConfig.log_every = 25",
              f"TrainConfig.checkpoint_every = {steps}", "OptimizerConfig.learning_rate = 3e-3",
              "OptimizerConfig.warmup_steps = 20", f"TrainConfig.run_dir = '{root / 'sft'}'",
              f"TrainConfig.init_from = '{root / 'base'}'",
              f"ChatJsonl.file_pattern = '{root / 'sort.jsonl'}'"]
  gin.clear_config()
  gin_text = config.parse_gin(["models/tiny.gin", "sft.gin"], bindings)
  before = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  try:
    history = loop.train(**config.run_configs(), gin_text=gin_text)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  seconds = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_SELF)
  train = [h for h in history if h["kind"] == "train"]
  return {"steps": steps, "seconds": seconds,
          "step_seconds": statistics.median(h["perf/step_seconds"] for h in train),
          "minor_faults": after.ru_minflt - before.ru_minflt,
          "system_seconds": after.ru_stime - before.ru_stime,
          "peak_rss_gib": after.ru_maxrss / 2**20, "final_loss": train[-1]["loss"]}


def main(argv) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--core", type=int, default=0, help="the core both runs are pinned to")
  parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(_sft_job(args.steps, pinned=args.child == "tensorflow_pin")))
    return 0
  results = {}
  for setting in SETTINGS:
    print(f"{setting}: {args.steps} SFT steps on core {args.core} ...", flush=True)
    proc = subprocess.run(["taskset", "-c", str(args.core), sys.executable, __file__,
                           f"--steps={args.steps}", f"--child={setting}"],
                          capture_output=True, text=True, env=dict(os.environ), check=False)
    if proc.returncode:
      sys.stderr.write(proc.stderr[-4000:])
      return proc.returncode
    results[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
  print(f"\n{'setting':<16}{'step s':>8}{'run s':>8}{'minor faults':>14}{'sys s':>8}"
        f"{'peak RSS':>10}{'final loss':>12}")
  for setting, r in results.items():
    print(f"{setting:<16}{r['step_seconds']:>8.3f}{r['seconds']:>8.1f}{r['minor_faults']:>14,}"
          f"{r['system_seconds']:>8.1f}{r['peak_rss_gib']:>7.2f} GiB{r['final_loss']:>12.6f}")
  pinned, settled = results["tensorflow_pin"], results["settled"]
  print(f"settled is {pinned['step_seconds'] / settled['step_seconds']:.2f}x as fast a step")
  RESULTS.mkdir(parents=True, exist_ok=True)
  out = RESULTS / f"heap-{time.strftime('%Y%m%d-%H%M%S')}.json"
  out.write_text(json.dumps(results, indent=2))
  print(f"Wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
