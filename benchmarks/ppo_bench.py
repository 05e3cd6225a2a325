"""PPO speed: rollout tokens/s and the time split of an iteration (generate / score / train).

  python benchmarks/ppo_bench.py [--model=bench] [--iterations=4] [--rollout_batch=16]
      [--max_new_tokens=32] [--epochs=1] [--minibatches=2]

The four roles are fresh parameters of one model size (speed does not depend on their values):
the policy and the reference from one step-0 checkpoint, the value and the reward model from
another with a reward head. The prompts are the planted sorting prompts (gin/ppo.gin), replies
sampled at temperature 1 up to --max_new_tokens (a fresh model rarely stops early, so rows run
to the limit). The first iteration compiles and is left out of the means. Prints a table and
writes JSON under bench/results/.
"""

import argparse
import datetime
import json
import pathlib
import platform
import tempfile

import gin
import jax
import numpy as np

from batgpt_jax import checkpoints, config, xla_flags
from batgpt_jax.model import heads
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import loop

xla_flags.apply_defaults()  # the flags `batgpt` runs with (before JAX starts)

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results"
SPLIT = ("time/generate", "time/score", "time/train")


def _roles(model: str, root: pathlib.Path) -> ModelConfig:
  cfg = config.model_size(model)
  checkpoints.write_fresh_run_dir(str(root / "policy"), cfg, seed=0)
  checkpoints.write_fresh_run_dir(str(root / "reward"), cfg, seed=1, head_names=("reward_head",))
  return cfg


def run(args) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    cfg = _roles(args.model, root)
    gin.clear_config()
    gin_text = config.parse_gin([f"models/{args.model}.gin", "ppo.gin"], [
        f"TrainConfig.run_dir = '{root / 'ppo'}'", f"TrainConfig.init_from = '{root / 'policy'}'",
        f"PPOConfig.reward_from = '{root / 'reward'}'", "PPOConfig.normalise_reward = False",
        "PPOConfig.ptx_data = None", "PPOConfig.sft_data = None",
        f"PPOConfig.rollout_batch = {args.rollout_batch}",
        f"PPOConfig.max_new_tokens = {args.max_new_tokens}", f"PPOConfig.epochs = {args.epochs}",
        f"PPOConfig.minibatches = {args.minibatches}", f"TrainConfig.steps = {args.iterations}",
        "TrainConfig.eval_every = 0", "TrainConfig.checkpoint_every = 1000",
        "TrainConfig.async_checkpoint = False", "DataConfig.shards = 4"])
    history = loop.train(**config.run_configs(), gin_text=gin_text)
  timed = [h for h in history if h["kind"] == "train"][1:]
  mean = lambda key: float(np.mean([h[key] for h in timed]))
  out = {"model": args.model, "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(
      heads.abstract_params(cfg)))), "rollout_batch": args.rollout_batch,
         "max_new_tokens": args.max_new_tokens, "epochs": args.epochs,
         "minibatches": args.minibatches, "iterations_timed": len(timed),
         "reply_tokens": mean("reply/length") * args.rollout_batch,
         **{key: mean(key) for key in SPLIT},
         "iteration_seconds": mean("perf/iteration_seconds"),
         "rollout_tokens_per_second": mean("perf/rollout_tokens_per_second"),
         "machine": platform.processor() or platform.machine(),
         "devices": f"{jax.device_count()} x {jax.devices()[0].platform}"}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="bench")
  parser.add_argument("--iterations", type=int, default=4)
  parser.add_argument("--rollout_batch", type=int, default=16)
  parser.add_argument("--max_new_tokens", type=int, default=32)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--minibatches", type=int, default=2)
  args = parser.parse_args()
  result = run(args)
  total = sum(result[k] for k in SPLIT)
  print(f"{result['model']} ({result['params'] / 1e6:.1f}M parameters), {args.rollout_batch} "
        f"prompts x {args.max_new_tokens} new tokens, {args.epochs} x {args.minibatches} "
        f"minibatches, mean of {result['iterations_timed']} iterations")
  for key in SPLIT:
    print(f"  {key[5:]:9s} {result[key]:8.2f} s  {result[key] / total:6.1%}")
  print(f"  iteration {result['iteration_seconds']:8.2f} s; rollout "
        f"{result['rollout_tokens_per_second']:,.0f} tokens/s")
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"ppo-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
  path.write_text(json.dumps(result, indent=2) + "\n")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
