"""Grow benchmark: eval loss against training FLOPs, large-from-scratch vs small-grown-then-trained.

  python benchmarks/grow_bench.py         # about 15-20 minutes on a 2-core CPU
  python benchmarks/grow_bench.py --dry   # a minute or two: proves the pipeline, not the numbers

(a) the large model (gin/grow/bench_large.gin) trained from scratch for --large_steps;
(b) the small model (gin/grow/bench_small.gin) trained for a --small_share of the same FLOPs,
    grown by `batgpt grow` (verified function-preserving), then trained on for the rest.
Both on tinyshakespeare, FLOPs from `metrics.train_flops_per_token`. Reports the compute each
arm needs to reach the same eval loss (the higher of the two final losses) and the share (b) saves,
and writes a JSON summary and a PNG of both curves under bench/results/.
"""

import argparse
import dataclasses
import json
import pathlib
import shutil
import sys
import time

import gin

from batgpt_jax import config, logs
from batgpt_jax.train import metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _configs(gin_file: str) -> dict:
  """The configs of `loop.train` from a gin file, with the gin text the checkpoints record."""
  gin.clear_config()
  gin_text = config.parse_gin([gin_file], [])
  return {**config.run_configs(), "gin_text": gin_text}


def _run(configs: dict, run_dir: pathlib.Path, steps: int, eval_every: int) -> list[dict]:
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  cfg = dataclasses.replace(configs["cfg"], run_dir=str(run_dir), steps=steps,
                            eval_every=eval_every, log_every=max(1, eval_every // 2))
  return loop.train(**{**configs, "cfg": cfg})


def _flops_per_step(configs: dict) -> float:
  cfg = configs["cfg"]
  return cfg.global_batch * cfg.seq_len * metrics.train_flops_per_token(configs["model_cfg"],
                                                                        cfg.seq_len)


def _curve(history: list[dict], flops_per_step: float, offset: float = 0.0) -> list[tuple]:
  return [(offset + h["step"] * flops_per_step, h["loss"]) for h in history if h["kind"] == "eval"]


def flops_to_reach(curve: list[tuple], loss: float) -> float | None:
  """The first FLOPs at which the curve reaches `loss`, interpolated between eval points."""
  for (f0, l0), (f1, l1) in zip([(0.0, float("inf"))] + curve[:-1], curve):
    if l1 <= loss:
      if l0 == float("inf"):
        return f1
      return f0 + (f1 - f0) * (l0 - loss) / (l0 - l1)
  return None


def _plot(scratch: list[tuple], small: list[tuple], grown: list[tuple], path: pathlib.Path,
          title: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4.5))
  ax.plot(*zip(*scratch), "o-", label="large from scratch")
  ax.plot(*zip(*small), "s-", color="tab:orange", label="small")
  ax.plot(*zip(*grown), "s--", color="tab:red", label="small, grown, trained on")
  ax.axvline(grown[0][0], color="gray", lw=0.8, ls=":")
  ax.set_xlabel("training FLOPs")
  ax.set_ylabel("eval loss (both directions)")
  ax.set_title(title, fontsize=9)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--small_gin", default="gin/grow/bench_small.gin")
  parser.add_argument("--large_gin", default="gin/grow/bench_large.gin")
  parser.add_argument("--large_steps", type=int, default=600, help="arm (a): the FLOPs budget")
  parser.add_argument("--small_share", type=float, default=0.4,
                      help="share of the budget arm (b) spends on the small model")
  parser.add_argument("--eval_every", type=int, default=50)
  parser.add_argument("--depth_mode", default="interleave")
  parser.add_argument("--optimizer", default="carry")
  parser.add_argument("--schedule", default="restart")
  parser.add_argument("--noise_snr_db", type=float, default=None)
  parser.add_argument("--run_dir", default="runs/grow_bench", help="wiped at the start")
  parser.add_argument("--dry", action="store_true", help="a few steps, to check the pipeline")
  args = parser.parse_args(argv)
  if args.dry:
    args.large_steps, args.eval_every = 8, 4
  try:
    import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise SystemExit("The plot needs matplotlib: pip install matplotlib (the `bench` extra).")
  from batgpt_jax.grow import command  # pylint: disable=import-outside-toplevel
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel

  run_dir = ROOT / args.run_dir
  shutil.rmtree(run_dir, ignore_errors=True)
  start = time.time()
  large, small = _configs(args.large_gin), _configs(args.small_gin)
  large_step_flops, small_step_flops = _flops_per_step(large), _flops_per_step(small)
  budget = args.large_steps * large_step_flops
  small_steps = max(1, round(args.small_share * budget / small_step_flops))
  grown_steps = max(1, round((budget - small_steps * small_step_flops) / large_step_flops))
  print(f"Budget {budget:.3g} FLOPs: (a) large {args.large_steps} steps; (b) small {small_steps} "
        f"steps + grown {grown_steps} steps")

  timings = {}
  t = time.time()
  scratch = _curve(_run(large, run_dir / "large", args.large_steps, args.eval_every),
                   large_step_flops)
  timings["large_from_scratch_s"] = time.time() - t
  t = time.time()
  small_eval_every = max(1, round(args.eval_every * large_step_flops / small_step_flops))
  small_curve = _curve(_run(small, run_dir / "small", small_steps, small_eval_every),
                       small_step_flops)
  command.grow_checkpoint(str(run_dir / "small"), str(run_dir / "grown"),
                          big_cfg=large["model_cfg"], mesh_cfg=large["mesh_cfg"],
                          opt_cfg=large["opt_cfg"], total_steps=grown_steps,
                          gin_text=large["gin_text"], depth_mode=args.depth_mode,
                          noise_snr_db=args.noise_snr_db, optimizer=args.optimizer,
                          schedule=args.schedule)
  offset = small_steps * small_step_flops
  at_growth = loop.evaluate_checkpoint(**{**large, "cfg": dataclasses.replace(
      large["cfg"], run_dir=str(run_dir / "grown"))})["loss"]
  first_step = 0 if args.schedule == "restart" else small_steps
  grown_history = _run(large, run_dir / "grown", first_step + grown_steps, args.eval_every)
  grown_curve = [(offset, at_growth)] + [
      (offset + (h["step"] - first_step) * large_step_flops, h["loss"])
      for h in grown_history if h["kind"] == "eval"]
  timings["small_grown_s"] = time.time() - t

  target = max(scratch[-1][1], grown_curve[-1][1])  # a loss both arms reach
  scratch_flops = flops_to_reach(scratch, target)
  grown_flops = flops_to_reach(small_curve + grown_curve, target)
  saved = 1.0 - grown_flops / scratch_flops
  summary = {
      "large": large["model_cfg"].to_dict(), "small": small["model_cfg"].to_dict(),
      "budget_flops": budget, "large_steps": args.large_steps, "small_steps": small_steps,
      "grown_steps": grown_steps, "growth": vars(args),
      "final_loss": {"scratch": scratch[-1][1], "grown": grown_curve[-1][1]},
      "loss_at_growth": {"small": small_curve[-1][1], "grown": at_growth},
      "target_loss": target, "flops_to_target": {"scratch": scratch_flops, "grown": grown_flops},
      "compute_saved": saved,
      "curves": {"scratch": scratch, "small": small_curve, "grown": grown_curve},
      "wall_seconds": {**timings, "total": time.time() - start},
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  stamp = time.strftime("%Y%m%d-%H%M%S") + ("-dry" if args.dry else "")
  out = RESULTS / f"grow-{stamp}.json"
  out.write_text(json.dumps(summary, indent=2))
  plot = RESULTS / f"grow-{stamp}.png"
  _plot(scratch, small_curve, grown_curve, plot,
        f"{metrics.train_flops_per_token(large['model_cfg'], large['cfg'].seq_len) / 1e6:.1f} vs "
        f"{metrics.train_flops_per_token(small['model_cfg'], small['cfg'].seq_len) / 1e6:.1f} "
        f"MFLOP/token; grown at {offset / budget:.0%} of the budget")
  print(f"Loss {target:.3f}: large from scratch needs {scratch_flops:.3g} FLOPs, small-grown "
        f"{grown_flops:.3g} FLOPs: {saved:+.1%} compute saved (loss at growth: small "
        f"{small_curve[-1][1]:.4f}, grown {at_growth:.4f}).")
  print(f"Wrote {out} and {plot}")
  return 0


if __name__ == "__main__":
  logs.setup_logging()
  sys.exit(main(sys.argv[1:]))
