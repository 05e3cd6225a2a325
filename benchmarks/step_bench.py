"""`make bench`: the training step's speed, honestly accounted.

  python benchmarks/step_bench.py [--gin_file=gin/models/bench.gin] [--seq_len=512] [--batch=8]
      [--steps=5] [--variants=plain,chunked,chunked_dots] [--modes=both,sample,l2r] [--gin.X=Y ...]

Reports median step time, tokens/s, model TFLOP/s and MFU for each step variant (compared as
ratios within this one run), compile seconds, peak host RSS (of this process, and of a process
that only trains: the step alone), the data pipeline's tokens/s on its
own, and the cost of each direction mode. MFU's denominator is the spec-sheet peak on
accelerators and, on CPU, a float32 matmul measured in this run (before and after, averaged).
FLOPs per token: see batgpt_jax/train/metrics.py (6 x matmul params + causal attention).
Results print as a table and are written as JSON under bench/results/.
"""

import argparse
import dataclasses
import json
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from batgpt_jax import config, logs, xla_flags

xla_flags.apply_defaults()  # the flags `batgpt` runs with (before JAX starts)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results"


def _args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[])
  parser.add_argument("--seq_len", type=int, default=512)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=5, help="measured steps per variant")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--variants", default="plain,chunked,chunked_dots",
                      help="plain: full logits; chunked: TrainConfig.loss_chunk=128 (the fused "
                      "cross-entropy); chunked_dots: that with ModelConfig.remat='dots'")
  parser.add_argument("--modes", default="both,sample,l2r")
  parser.add_argument("--mode_steps", type=int, default=2, help="measured steps per mode")
  parser.add_argument("--pipeline_batches", type=int, default=20)
  parser.add_argument("--step_rss_of", default="", help=argparse.SUPPRESS)  # the child's job
  argv, bindings = config.split_bindings(argv)
  return parser.parse_args(argv), bindings


def _pipeline_speed(data_cfg, vocab, mode, seq_len, batch, n):
  from batgpt_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  cfg = dataclasses.replace(data_cfg, direction_mode=mode)
  with logs.native_noise_filtered():  # the first batch starts the tokenizer ops
    batches = pipeline.train_batches(cfg, vocab, seq_len=seq_len, global_batch=batch)
    first = next(batches)  # fills the shuffle buffer; not counted
  start = time.perf_counter()
  kept = [next(batches) for _ in range(n)]
  seconds = time.perf_counter() - start
  fill = float(np.mean([np.mean(b["segment_ids"] > 0) for b in kept]))
  return {"tokens_per_second": n * batch * seq_len / seconds, "fill": fill}, [first] + kept


def _time_steps(compiled, state, batches, n, warmup, mesh, rules):
  from batgpt_jax import parallel  # pylint: disable=import-outside-toplevel
  times, schedule = [], _schedule()
  for i in range(warmup + n):
    batch = parallel.global_batch(batches[i % len(batches)], mesh, rules)
    start = time.perf_counter()
    state, metrics = compiled(state, batch, {}, schedule)
    jax.block_until_ready(metrics)
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return state, statistics.median(times), float(metrics["loss"])


SCHEDULE_STEPS = 1000  # the optimizer's schedule: the timed steps are early in it


def _schedule() -> dict:
  from batgpt_jax.train import state as train_state  # pylint: disable=import-outside-toplevel
  return train_state.schedule_numbers(train_state.OptimizerConfig(), SCHEDULE_STEPS)


# variant -> (TrainConfig.loss_chunk, ModelConfig.remat or None for the model gin's own)
VARIANTS = {"plain": (0, None), "chunked": (128, None), "chunked_dots": (128, "dots")}


def _variant_step(model_cfg, variant: str, tx, mesh, rules):
  """(fresh train state, jitted train step) of a variant of the gin model."""
  # pylint: disable=import-outside-toplevel
  from batgpt_jax.objectives import pretrain
  from batgpt_jax.train import state as train_state
  from batgpt_jax.train import step as train_step
  chunk, remat = VARIANTS[variant]
  cfg = dataclasses.replace(model_cfg, remat=remat) if remat else model_cfg
  state, shardings = train_state.create_state(cfg, tx, mesh, rules, seed=0)
  train, _ = train_step.jit_steps(pretrain.objective(cfg, chunk), tx, mesh, rules, shardings,
                                  microbatches=1)
  return state, train


def _synthetic_batch(vocab_size: int, batch: int, seq_len: int) -> dict:
  """Random tokens shaped like a training batch: one document a row, half the rows R2L."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, vocab_size, (batch, seq_len + 1)).astype(np.int32)
  weights = np.ones((batch, seq_len), np.float32)
  weights[:, -1] = 0.0
  return {"tokens": tokens[:, :-1], "targets": tokens[:, 1:],
          "positions": np.tile(np.arange(seq_len, dtype=np.int32), (batch, 1)),
          "segment_ids": np.ones((batch, seq_len), np.int32), "loss_weights": weights,
          "directions": (np.arange(batch)[:, None] % 2 * np.ones((1, seq_len))).astype(np.int32)}


def _step_rss(args) -> int:
  """The child of `_step_alone_rss`: two steps on synthetic batches, no data pipeline (no
  TensorFlow), then the process's peak RSS."""
  # pylint: disable=import-outside-toplevel
  from batgpt_jax import parallel
  from batgpt_jax.model.config import ModelConfig
  from batgpt_jax.train import state as train_state
  model_cfg, mesh_cfg = ModelConfig(), parallel.MeshConfig()
  rules = parallel.check_rules(mesh_cfg.axis_rules)
  mesh = parallel.mesh_from_config(mesh_cfg)
  tx = train_state.make_optimizer(train_state.OptimizerConfig(), SCHEDULE_STEPS)
  state, train = _variant_step(model_cfg, args.step_rss_of, tx, mesh, rules)
  host = _synthetic_batch(model_cfg.vocab_size, args.batch, args.seq_len)
  for _ in range(2):
    state, metrics = train(state, parallel.global_batch(host, mesh, rules), {}, _schedule())
  jax.block_until_ready(metrics)
  # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's peak (Linux keeps it
  # across fork and exec), so it would report the benchmark process's own.
  status = pathlib.Path("/proc/self/status").read_text()
  peak_kib = next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:"))
  print(f"STEP_RSS_GIB {peak_kib / 2**20:.3f}")
  return 0


def _step_alone_rss(argv, variant: str) -> float:
  """Peak RSS of a process that only builds the state and trains (what Levanter's figure is)."""
  out = subprocess.run([sys.executable, __file__, f"--step_rss_of={variant}", *argv],
                       capture_output=True, text=True, check=True).stdout
  return float(next(l for l in out.splitlines() if l.startswith("STEP_RSS_GIB")).split()[1])


def main(argv) -> int:
  args, bindings = _args(argv)
  files = args.gin_file or ["gin/models/bench.gin"]
  if args.step_rss_of:  # gin alone: the registry of configurables would import TensorFlow
    # pylint: disable=import-outside-toplevel,unused-import
    import gin
    from batgpt_jax import parallel
    from batgpt_jax.objectives import pretrain
    from batgpt_jax.train import state as train_state
    from batgpt_jax.train import step as train_step
    gin.add_config_file_search_path(str(config.GIN_DIR))
    gin.parse_config_files_and_bindings(
        [config.resolve_gin_file(f) for f in ["gin/mesh/cpu.gin", *files]], bindings)
    return _step_rss(args)
  config.parse_gin(["gin/mesh/cpu.gin", *files], bindings)
  from batgpt_jax import parallel  # pylint: disable=import-outside-toplevel
  from batgpt_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from batgpt_jax.model.config import ModelConfig, describe  # pylint: disable=import-outside-toplevel
  from batgpt_jax.train import metrics, state as train_state  # pylint: disable=import-outside-toplevel

  model_cfg, data_cfg, mesh_cfg = ModelConfig(), pipeline.DataConfig(), parallel.MeshConfig()
  rules = parallel.check_rules(mesh_cfg.axis_rules)
  mesh = parallel.mesh_from_config(mesh_cfg)
  device = jax.devices()[0]
  peak = metrics.spec_peak_flops(device)
  peak_before = None if peak else metrics.measure_matmul_peak()
  tokens = args.batch * args.seq_len
  flops_per_token = metrics.train_flops_per_token(model_cfg, args.seq_len)
  print(f"{describe(model_cfg)}\n{device.platform} x {jax.device_count()} ({device.device_kind}),"
        f" batch {args.batch} x {args.seq_len} = {tokens} tokens/step, "
        f"{flops_per_token * tokens / 1e12:.3f} TFLOP/step", flush=True)

  vocab = pipeline.vocabulary_for(data_cfg)
  pipe, mode_batches = {}, {}
  for mode in args.modes.split(","):
    pipe[mode], mode_batches[mode] = _pipeline_speed(data_cfg, vocab, mode, args.seq_len,
                                                     args.batch, args.pipeline_batches)

  tx = train_state.make_optimizer(train_state.OptimizerConfig(), SCHEDULE_STEPS)
  main_batches = mode_batches[args.modes.split(",")[0]]
  variants = {}
  for variant in args.variants.split(","):
    state, train = _variant_step(model_cfg, variant, tx, mesh, rules)
    start = time.perf_counter()
    compiled = train.lower(state, parallel.global_batch(main_batches[0], mesh, rules), {},
                           _schedule()).compile()
    compile_seconds = time.perf_counter() - start
    state, step_time, loss = _time_steps(compiled, state, main_batches, args.steps, args.warmup,
                                         mesh, rules)
    variants[variant] = {"compile_seconds": compile_seconds, "step_seconds": step_time,
                         "tokens_per_second": tokens / step_time, "loss": loss,
                         "tflops": tokens * flops_per_token / step_time / 1e12}
    if variant == args.variants.split(",")[0]:
      modes = {}
      for mode, batches in mode_batches.items():
        state, mode_time, _ = _time_steps(compiled, state, batches, args.mode_steps, 0, mesh,
                                          rules)
        modes[mode] = {"step_seconds": mode_time, "fill": pipe[mode]["fill"],
                       "real_tokens_per_second": tokens * pipe[mode]["fill"] / mode_time}
    del state, compiled

  peak_after = None if peak else metrics.measure_matmul_peak()
  for variant, v in variants.items():
    v["step_alone_rss_gib"] = _step_alone_rss(argv, variant)
  peak = peak or (peak_before + peak_after) / 2
  for v in variants.values():
    v["mfu"] = v["tflops"] * 1e12 / peak
  result = {
      "model": describe(model_cfg), "device": f"{device.platform}:{device.device_kind}",
      "devices": jax.device_count(), "host": platform.node(), "seq_len": args.seq_len,
      "batch": args.batch, "flops_per_token": flops_per_token,
      "peak_flops": peak, "peak_measured": [peak_before, peak_after],
      "variants": variants, "modes": modes, "pipeline": pipe,
      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
  }
  _print_table(result)
  RESULTS.mkdir(parents=True, exist_ok=True)
  out = RESULTS / f"step-{time.strftime('%Y%m%d-%H%M%S')}.json"
  out.write_text(json.dumps(result, indent=2))
  print(f"Wrote {out}")
  return 0


def _print_table(r):
  measured = "measured float32 matmul" if r["peak_measured"][0] else "spec sheet"
  print(f"\npeak {r['peak_flops'] / 1e9:,.0f} GFLOP/s ({measured}); peak RSS "
        f"{r['peak_rss_gib']:.2f} GiB")
  print(f"{'variant':<10}{'compile s':>10}{'step s':>9}{'tokens/s':>10}{'TFLOP/s':>9}"
        f"{'MFU':>7}{'vs first':>10}{'step RSS':>10}")
  first = next(iter(r["variants"].values()))["step_seconds"]
  for name, v in r["variants"].items():
    print(f"{name:<10}{v['compile_seconds']:>10.1f}{v['step_seconds']:>9.2f}"
          f"{v['tokens_per_second']:>10,.0f}{v['tflops']:>9.3f}{v['mfu']:>7.1%}"
          f"{first / v['step_seconds']:>9.2f}x{v['step_alone_rss_gib']:>7.2f} GiB")
  print("(step RSS: the peak of a process that only trains, on synthetic batches)")
  print(f"\n{'mode':<8}{'pipeline tok/s':>15}{'fill':>7}{'step s':>8}{'real tok/s':>11}")
  for mode, m in r["modes"].items():
    print(f"{mode:<8}{r['pipeline'][mode]['tokens_per_second']:>15,.0f}{m['fill']:>7.1%}"
          f"{m['step_seconds']:>8.2f}{m['real_tokens_per_second']:>11,.0f}")


if __name__ == "__main__":
  logs.setup_logging()
  sys.exit(main(sys.argv[1:]))
