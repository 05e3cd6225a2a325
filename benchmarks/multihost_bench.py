"""The cost of several processes: the same run as 1 x 8, 2 x 4 and 4 x 2 (processes x devices).

  python benchmarks/multihost_bench.py [--layouts=1x8,2x4,4x2] [--steps=60] [--gin.X=Y ...]

Each layout runs `batgpt train` through launch/local_multihost.sh on this machine (fake CPU
devices, loopback), from scratch, with the smoke config and no eval. Reported per layout: the
median tokens/s over the logged steps after the first log (compilation excluded), the wall time
of the whole command (start-up, tokenizer, compilation, training, checkpoint), and the final
loss, which must agree across layouts (the same global batches on any process count). The
layouts share this machine's cores, so the ratio measures the multi-process overhead
(cross-process collectives over gloo, one data pipeline per process), not a pod's scaling.
Results print as a table and are written as JSON under bench/results/.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

from batgpt_jax.train import metrics  # noqa: E402  (after the paths; loads TensorFlow)


def _args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--layouts", default="1x8,2x4,4x2", help="PROCESSESxDEVICES, comma-separated")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--gin_file", default="gin/smoke.gin")
  args, extra = parser.parse_known_args(argv)
  return args, extra


def run_layout(processes: int, devices: int, args, extra, work: pathlib.Path) -> dict:
  run_dir = work / f"{processes}x{devices}"
  command = ["bash", str(REPO / "launch" / "local_multihost.sh"), str(processes), str(devices),
             "--", "train", f"--gin_file={args.gin_file}",
             f"--gin.TrainConfig.run_dir='{run_dir}'", f"--gin.TrainConfig.steps={args.steps}",
             "--gin.TrainConfig.eval_every=0", "--gin.TrainConfig.log_every=5", *extra]
  env = dict(os.environ, BATGPT=str(pathlib.Path(sys.executable).parent / "batgpt"))
  start = time.perf_counter()
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
  wall = time.perf_counter() - start
  if done.returncode:
    raise SystemExit(f"{processes}x{devices} failed ({done.returncode}):\n{done.stdout[-3000:]}")
  records = metrics.read_jsonl(str(run_dir / "metrics.jsonl"))
  speeds = [r["train/perf/tokens_per_second"] for r in records[1:]
            if "train/perf/tokens_per_second" in r]
  return {"processes": processes, "devices_per_process": devices,
          "tokens_per_second": statistics.median(speeds), "wall_seconds": wall,
          "final_loss": records[-1]["train/loss"]}


def main(argv=None):
  args, extra = _args(sys.argv[1:] if argv is None else argv)
  layouts = [tuple(int(n) for n in layout.split("x")) for layout in args.layouts.split(",")]
  results = []
  with tempfile.TemporaryDirectory() as work:
    for processes, devices in layouts:
      print(f"running {processes} x {devices} ...", flush=True)
      results.append(run_layout(processes, devices, args, extra, pathlib.Path(work)))
  base = results[0]["tokens_per_second"]
  print(f"\n{'layout':>8} {'tokens/s':>10} {'vs first':>9} {'wall s':>8} {'final loss':>11}")
  for r in results:
    print(f"{r['processes']}x{r['devices_per_process']:<6} {r['tokens_per_second']:>10,.0f} "
          f"{r['tokens_per_second'] / base:>9.2f} {r['wall_seconds']:>8.1f} "
          f"{r['final_loss']:>11.5f}")
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"multihost-{time.strftime('%Y%m%d-%H%M%S')}.json"
  path.write_text(json.dumps({"steps": args.steps, "gin_file": args.gin_file, "extra": extra,
                              "results": results}, indent=2))
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
