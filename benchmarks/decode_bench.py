"""Decode speed: the on-device engine against the per-token host loop it replaced.

  python benchmarks/decode_bench.py [--models=tiny,bench] [--batches=1,32] [--prompt_len=16]
      [--new_tokens=32] [--repeats=3]

Random parameters (speed does not depend on them), greedy, no stop tokens, so every row writes
exactly --new_tokens tokens and both loops do the same work. tokens/s counts new tokens of the
whole batch over the wall time of the fastest of --repeats calls (after a warm-up call; compile
time is reported apart; the median is in the JSON), prefill included. `host_loop` is a faithful copy of `batgpt generate`'s loop before the engine:
one jitted step per token, each choice brought to the host and fed back. Results print as a
table and are written as JSON under bench/results/.
"""

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import gin
import jax
import numpy as np

from batgpt_jax import config, xla_flags
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import engine, host_loop

xla_flags.apply_defaults()  # the flags `batgpt` runs with (before JAX starts)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results"


# --- the measurement ----------------------------------------------------------------------------

def model_config(name: str) -> ModelConfig:
  gin.clear_config()
  gin.parse_config_files_and_bindings([config.resolve_gin_file(f"models/{name}.gin")], [])
  cfg = ModelConfig()
  gin.clear_config()
  return cfg


def _seconds(fn) -> tuple[float, list]:
  start = time.perf_counter()
  out = fn()
  return time.perf_counter() - start, out


def measure(name: str, cfg: ModelConfig, params, batch: int, args) -> dict:
  """One row: both loops warmed up, then timed in turns (so both see the same machine load)."""
  rng = np.random.default_rng(batch)
  prompts = rng.integers(3, cfg.vocab_size, (batch, args.prompt_len)).tolist()
  sampling = engine.SamplingConfig(max_new_tokens=args.new_tokens, stop_ids=())
  loops = {"engine": lambda: engine.generate_ids(cfg, params, prompts, sampling),
           "host_loop": lambda: host_loop.host_loop_ids(cfg, params, prompts, sampling)}
  first, outputs = {}, {}
  for loop, fn in loops.items():
    first[loop], outputs[loop] = _seconds(fn)
  times = {loop: [] for loop in loops}
  for _ in range(args.repeats):
    for loop, fn in loops.items():
      times[loop].append(_seconds(fn)[0])
  row = {"model": name, "batch": batch, "prompt_len": args.prompt_len,
         "new_tokens": args.new_tokens}
  for loop in loops:
    # the fastest call: on a shared machine the others only add other people's load
    row[f"{loop}_tokens_per_s"] = batch * args.new_tokens / min(times[loop])
    row[f"{loop}_median_tokens_per_s"] = batch * args.new_tokens / statistics.median(times[loop])
    row[f"{loop}_compile_s"] = first[loop] - min(times[loop])
  row["speedup"] = row["engine_tokens_per_s"] / row["host_loop_tokens_per_s"]
  row["same_tokens"] = outputs["engine"] == outputs["host_loop"]
  return row


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default="tiny,bench", help="names under gin/models/")
  parser.add_argument("--batches", default="1,32")
  parser.add_argument("--prompt_len", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
  args = parser.parse_args(argv)
  rows = []
  for name in args.models.split(","):
    cfg = model_config(name)
    params = transformer.init_params(cfg, seed=0)
    for batch in (int(b) for b in args.batches.split(",")):
      rows.append(measure(name, cfg, params, batch, args))
      print(f"# {rows[-1]}", file=sys.stderr, flush=True)
  header = (f"{'model':<6} {'batch':>5} {'engine tok/s':>13} {'host loop tok/s':>16} "
            f"{'speedup':>8} {'compile s (engine/host)':>24} {'same':>5}")
  print(f"decode, {args.prompt_len}-token prompts, {args.new_tokens} new tokens, greedy, "
        f"{jax.devices()[0].platform} x{jax.device_count()}")
  print(header)
  for r in rows:
    compile_s = f"{r['engine_compile_s']:.1f} / {r['host_loop_compile_s']:.1f}"
    print(f"{r['model']:<6} {r['batch']:>5} {r['engine_tokens_per_s']:>13.1f} "
          f"{r['host_loop_tokens_per_s']:>16.1f} {r['speedup']:>7.2f}x {compile_s:>24} "
          f"{str(r['same_tokens']):>5}")
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"decode-{time.strftime('%Y%m%d-%H%M%S')}.json"
  path.write_text(json.dumps({"rows": rows, "args": vars(args), "jax": jax.__version__,
                              "platform": jax.devices()[0].platform,
                              "devices": jax.device_count(), "host": platform.node()},
                             indent=1))
  print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
