"""Pretraining benchmark: a gin run to the end, then a JSON summary under bench/results/.

  python benchmarks/pretrain_bench.py [--gin_file=gin/bench_shakespeare.gin] [--gin.X=Y ...]

Reports the final eval loss per direction, the median tokens/s over the logged intervals, and
the model TFLOP/s (FLOPs formula in batgpt_jax/train/metrics.py).
"""

import json
import pathlib
import statistics
import sys
import time

from batgpt_jax import config, logs, xla_flags

xla_flags.apply_defaults()  # the flags `batgpt` runs with (before JAX starts)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results"


def main(argv: list[str]) -> int:
  argv, bindings = config.split_bindings(argv)
  files = [a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")]
  gin_text = config.parse_gin(files or ["gin/bench_shakespeare.gin"], bindings)
  configs = config.run_configs()
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  start = time.time()
  history = loop.train(**configs, gin_text=gin_text)
  train = [h for h in history if h["kind"] == "train" and "perf/tokens_per_second" in h]
  evals = [h for h in history if h["kind"] == "eval"]
  summary = {
      "config": files or ["gin/bench_shakespeare.gin"], "bindings": bindings,
      "steps": configs["cfg"].steps, "wall_seconds": round(time.time() - start, 1),
      "median_tokens_per_second": statistics.median(h["perf/tokens_per_second"] for h in train),
      "median_tflops": statistics.median(h["perf/tflops"] for h in train),
      "eval": [{k: h[k] for k in ("step", "l2r/loss", "r2l/loss", "l2r/perplexity",
                                  "r2l/perplexity")} for h in evals],
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  out = RESULTS / f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}.json"
  out.write_text(json.dumps(summary, indent=2))
  print(json.dumps(summary, indent=2))
  print(f"Wrote {out}")
  return 0


if __name__ == "__main__":
  logs.setup_logging()
  sys.exit(main(sys.argv[1:]))
