"""Growth study: eval loss against training FLOPs at one budget, grown runs against scratch.

  python benchmarks/grow_bench.py         # about 25-30 minutes on a 2-core CPU
  python benchmarks/grow_bench.py --dry   # a few minutes: proves the pipeline, not the numbers

The budget is --large_steps steps of the large model (gin/grow/bench_large.gin). Four arms spend
it, all on tinyshakespeare, FLOPs from `metrics.train_flops_per_token`:
  scratch   the large model from scratch, one warmup-cosine schedule over the budget;
  small     the small model (gin/grow/bench_small.gin) alone for the whole budget;
  restart   the small model for a --small_share of the budget on its own schedule (annealed to
            its end), grown by `batgpt grow --schedule=restart`, then the large model on a fresh
            schedule (warmup to the peak again) for the rest;
  rescale   the small arm's own first --small_share (one budget-long schedule, stopped there),
            grown by `batgpt grow --schedule=rescale`, then the large model from the same
            fraction of its budget-long schedule to its end: the learning rate goes on from where
            the small model left it.
Every growth is verified function-preserving. Reports each arm's final loss and the compute it
needs to reach the scratch arm's final loss (compute saved = 1 - that / scratch's), writes a
JSON summary and a PNG of the curves under bench/results/ (--doc_plot copies the PNG).
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


def _run(configs: dict, run_dir: pathlib.Path, steps: int, eval_every: int,
         schedule_steps: int = 0) -> list[dict]:
  """Trains (or resumes) `run_dir` to `steps`; the gin text it records holds the steps and the
  schedule length, as a command line's --gin flags would (`--schedule=rescale` reads them)."""
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  cfg = dataclasses.replace(configs["cfg"], run_dir=str(run_dir), steps=steps,
                            eval_every=eval_every, log_every=max(1, eval_every // 2))
  opt_cfg = dataclasses.replace(configs["opt_cfg"], schedule_steps=schedule_steps)
  gin_text = (configs["gin_text"] + f"\nTrainConfig.steps = {steps}\n"
              f"OptimizerConfig.schedule_steps = {schedule_steps}\n")
  history = loop.train(**{**configs, "cfg": cfg, "opt_cfg": opt_cfg, "gin_text": gin_text})
  if history and history[-1]["kind"] == "preempted":
    raise SystemExit(f"{run_dir} was preempted at step {history[-1]['step']}; the study needs "
                     "every run complete. Run it again (it starts afresh).")
  return history


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


ARMS = {"scratch": ("o-", "tab:blue", "large from scratch"),
        "small": ("s-", "tab:orange", "small alone"),
        "restart": ("^--", "tab:gray", "small, grown, schedule restarted"),
        "rescale": ("v-", "tab:red", "small, grown, schedule rescaled")}


def _plot(curves: dict, growth_flops: float, target: float, path: pathlib.Path,
          title: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7.5, 4.8))
  for name, (style, color, label) in ARMS.items():
    ax.plot(*zip(*curves[name]), style, color=color, label=label, ms=3.5)
  ax.axvline(growth_flops, color="gray", lw=0.8, ls=":")
  ax.axhline(target, color="tab:blue", lw=0.6, ls=":")
  ax.set_xlabel("training FLOPs")
  ax.set_ylabel("eval loss (both directions)")
  ax.set_title(title, fontsize=9)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _grown_curve(history: list[dict], first_step: int, offset: float, at_growth: float,
                 step_flops: float) -> list[tuple]:
  return [(offset, at_growth)] + [(offset + (h["step"] - first_step) * step_flops, h["loss"])
                                  for h in history if h["kind"] == "eval"]


def compute_saved(curve: list[tuple], target: float, scratch_flops: float) -> float | None:
  """1 - FLOPs(curve reaches target) / scratch's FLOPs; None when it never gets there."""
  flops = flops_to_reach(curve, target)
  return None if flops is None else 1.0 - flops / scratch_flops


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--small_gin", default="gin/grow/bench_small.gin")
  parser.add_argument("--large_gin", default="gin/grow/bench_large.gin")
  parser.add_argument("--large_steps", type=int, default=600, help="the FLOPs budget")
  parser.add_argument("--small_share", type=float, default=0.4,
                      help="share of the budget the grown arms spend on the small model")
  parser.add_argument("--eval_every", type=int, default=50, help="in large steps")
  parser.add_argument("--depth_mode", default="interleave")
  parser.add_argument("--optimizer", default="carry")
  parser.add_argument("--noise_snr_db", type=float, default=None)
  parser.add_argument("--run_dir", default="runs/grow_bench", help="wiped at the start")
  parser.add_argument("--doc_plot", default=None, help="also copy the plot here")
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
  small_budget_steps = max(2, round(budget / small_step_flops))
  small_steps = max(1, round(args.small_share * small_budget_steps))
  offset = small_steps * small_step_flops
  grown_steps = max(1, round((budget - offset) / large_step_flops))
  small_eval_every = max(1, round(args.eval_every * large_step_flops / small_step_flops))
  print(f"Budget {budget:.3g} FLOPs: large {args.large_steps} steps, or small "
        f"{small_budget_steps}; the grown arms: small {small_steps} steps + large {grown_steps}")

  timings, curves, at_growth, first_steps = {}, {}, {}, {}

  def grow(source, name, schedule, total_steps):
    result = command.grow_checkpoint(
        str(source), str(run_dir / name), big_cfg=large["model_cfg"], mesh_cfg=large["mesh_cfg"],
        opt_cfg=large["opt_cfg"], total_steps=total_steps, gin_text=large["gin_text"],
        depth_mode=args.depth_mode, noise_snr_db=args.noise_snr_db, optimizer=args.optimizer,
        schedule=schedule)
    at_growth[name] = loop.evaluate_checkpoint(**{**large, "cfg": dataclasses.replace(
        large["cfg"], run_dir=str(run_dir / name))})["loss"]
    first_steps[name] = result.step
    return result.step

  t = time.time()
  curves["scratch"] = _curve(_run(large, run_dir / "scratch", args.large_steps, args.eval_every),
                             large_step_flops)
  timings["scratch"] = time.time() - t

  # small alone, on one budget-long schedule; its state at the grown arms' share is kept.
  t = time.time()
  history = _run(small, run_dir / "small", small_steps, small_eval_every, small_budget_steps)
  shutil.copytree(run_dir / "small", run_dir / "small_at_share",
                  ignore=shutil.ignore_patterns("train.lock", "tensorboard"))
  history += _run(small, run_dir / "small", small_budget_steps, small_eval_every,
                  small_budget_steps)
  curves["small"] = _curve(history, small_step_flops)
  timings["small"] = time.time() - t

  t = time.time()
  small_restart = _curve(_run(small, run_dir / "small_restart", small_steps, small_eval_every),
                         small_step_flops)
  first = grow(run_dir / "small_restart", "restart", "restart", grown_steps)
  history = _run(large, run_dir / "restart", first + grown_steps, args.eval_every)
  curves["restart"] = small_restart + _grown_curve(history, first, offset, at_growth["restart"],
                                                   large_step_flops)
  timings["restart"] = time.time() - t

  t = time.time()
  first = grow(run_dir / "small_at_share", "rescale", "rescale", args.large_steps)
  history = _run(large, run_dir / "rescale", args.large_steps, args.eval_every)
  curves["rescale"] = ([c for c in curves["small"] if c[0] <= offset] +
                       _grown_curve(history, first, offset, at_growth["rescale"],
                                    large_step_flops))
  timings["rescale"] = time.time() - t

  target = curves["scratch"][-1][1]  # the loss scratch ends at
  scratch_flops = flops_to_reach(curves["scratch"], target)
  saved = {name: compute_saved(curves[name], target, scratch_flops) for name in ARMS}
  summary = {
      "large": large["model_cfg"].to_dict(), "small": small["model_cfg"].to_dict(),
      "budget_flops": budget, "large_steps": args.large_steps,
      "small_budget_steps": small_budget_steps, "small_steps": small_steps,
      "grown_steps": grown_steps, "grown_first_step": first_steps, "settings": vars(args),
      "final_loss": {name: curves[name][-1][1] for name in ARMS},
      "loss_at_growth": {"small_restart": small_restart[-1][1],
                         "small_at_share": [c for c in curves["small"] if c[0] <= offset][-1][1],
                         **{f"grown_{k}": v for k, v in at_growth.items()}},
      "target_loss": target, "compute_saved": saved, "curves": curves,
      "wall_seconds": {**timings, "total": time.time() - start},
  }
  RESULTS.mkdir(parents=True, exist_ok=True)
  stamp = time.strftime("%Y%m%d-%H%M%S") + ("-dry" if args.dry else "")
  out = RESULTS / f"grow-{stamp}.json"
  out.write_text(json.dumps(summary, indent=2))
  plot = RESULTS / f"grow-{stamp}.png"
  _plot(curves, offset, target, plot,
        f"{metrics.train_flops_per_token(large['model_cfg'], large['cfg'].seq_len) / 1e6:.1f} vs "
        f"{metrics.train_flops_per_token(small['model_cfg'], small['cfg'].seq_len) / 1e6:.1f} "
        f"MFLOP/token; grown at {offset / budget:.0%} of the budget")
  if args.doc_plot:
    shutil.copyfile(plot, args.doc_plot)
  print(f"Scratch ends at loss {target:.4f}. Compute saved to reach it:")
  for name in ARMS:
    figure = "not reached" if saved[name] is None else f"{saved[name]:+.1%}"
    print(f"  {name:<8} final loss {curves[name][-1][1]:.4f}  {figure}")
  print(f"Wrote {out} and {plot}")
  return 0


if __name__ == "__main__":
  logs.setup_logging()
  sys.exit(main(sys.argv[1:]))
