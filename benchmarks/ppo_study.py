"""The PPO study: does the policy learn, does the KL term hold it, do the anchors keep what
pretraining and SFT taught, and does the KL penalty contain a reward model that can be hacked?

  python benchmarks/ppo_study.py [--work_dir=runs/ppo_study] [--arms=kl,free,ptx,sft,...]
      [--iterations=40]

Stages (each reused when its run directory already holds a checkpoint), all on the tiny model:
  pretrain  the embedded corpus, both directions, 300 steps
  sft       the planted sorting prompts, each answered once sorted and once with an adjacent
            pair swapped (a 50/50 mix), 400 steps at 3e-3
  gentle    the same data, 1200 steps at 3e-4: an SFT model that kept much of its pretraining
            (`sft` took the held-out pretraining loss from about 2 to 14 nats, and no anchor
            can keep what the SFT model already lost)
  reward    a reward model from the SFT run on the three planted families, 600 steps
  longer    a reward model from the SFT run that prefers the LONGER answer of each sort_length
            pair (a reward model that can be hacked by writing more), 300 steps
Arms (PPO against `reward`, `--iterations` iterations of 128 prompts at temperature 0.7):
  kl           from `sft`, adaptive KL toward 1.5 nats
  free         as kl, the KL coefficient at 0
  sft          as kl, plus gamma_sft = 1 x the SFT loss on the instruction data
  shared       as kl, with the value head on the policy's backbone (PPOConfig.shared_backbone)
  drift, drift_ptx, drift_sft   from `gentle`, the KL coefficient at 0 and the learning rate 5x
               (5e-4): a run that drifts far from its SFT model, without an anchor, with
               gamma_ptx = 1 x the bidirectional loss on the corpus, or with gamma_sft = 1
  longer_free, longer_kl   from `sft` against the `longer` reward model, 24 new tokens, KL 0 or
               adaptive
Every arm evaluates the held-out pretraining and instruction losses (both directions), the
rule share, reward, KL and reply length at iteration 0 (the SFT model) and at the end. The
results (with the must-show checks of docs/ppo.md) go to bench/results/ppo-study-*.json.
"""

import argparse
import datetime
import json
import os
import pathlib
import time

import gin
import numpy as np

from batgpt_jax import checkpoints, config
from batgpt_jax.data import planted
from batgpt_jax.train import loop

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results"
RUN = ["models/tiny.gin", "TrainConfig.async_checkpoint = False", "DataConfig.shards = 4"]
PRETRAIN = RUN + ["pretrain.gin", "DataConfig.vocab_size = 2048", "TrainConfig.steps = 300",
                  "TrainConfig.global_batch = 16", "TrainConfig.seq_len = 128",
                  "TrainConfig.eval_every = 0", "TrainConfig.checkpoint_every = 300",
                  "OptimizerConfig.learning_rate = 3e-3", "OptimizerConfig.warmup_steps = 30"]
SFT = RUN + ["sft.gin", "DataConfig.sources = [(@ChatJsonl(), 1.0)]", "TrainConfig.steps = 400",
             "TrainConfig.global_batch = 16", "TrainConfig.seq_len = 128",
             "TrainConfig.eval_every = 0", "TrainConfig.checkpoint_every = 400",
             "OptimizerConfig.learning_rate = 3e-3", "OptimizerConfig.warmup_steps = 20"]
GENTLE = SFT + ["TrainConfig.steps = 1200", "TrainConfig.checkpoint_every = 1200",
                "OptimizerConfig.learning_rate = 3e-4"]
FAMILIES = ("sort_swap", "sort_length", "sort_digit")
REWARD = RUN + ["reward.gin", "TrainConfig.steps = 600", "TrainConfig.global_batch = 32",
                "TrainConfig.eval_every = 600", "TrainConfig.checkpoint_every = 600",
                "OptimizerConfig.learning_rate = 3e-3", "OptimizerConfig.warmup_steps = 10",
                "DataConfig.sources = [" + ", ".join(
                    f"(@{f}/PlantedPreferences(), 1.0)" for f in FAMILIES) + "]",
                *[f"{f}/PlantedPreferences.family = '{f}'" for f in FAMILIES]]
LONGER = RUN + ["reward.gin", "TrainConfig.steps = 300", "TrainConfig.global_batch = 32",
                "TrainConfig.eval_every = 300", "TrainConfig.checkpoint_every = 300",
                "OptimizerConfig.learning_rate = 3e-3", "OptimizerConfig.warmup_steps = 10",
                "DataConfig.sources = [(@PreferenceJsonl(), 1.0)]"]
PPO = RUN + ["ppo.gin", "OptimizerConfig.learning_rate = 1e-4", "ppo_settings.temperature = 0.7",
             "PPOConfig.rollout_batch = 128", "PPOConfig.eval_prompts = 256",
             "PPOConfig.kl_coef = 0.05", "PPOConfig.kl_target = 1.5", "PPOConfig.kl_horizon = 256",
             "TrainConfig.log_every = 10", "sft/DataConfig.sources = [(@ChatJsonl(), 1.0)]"]
FREE = ["PPOConfig.kl_coef = 0.0", "PPOConfig.kl_target = None"]
DRIFT = FREE + ["OptimizerConfig.learning_rate = 5e-4"]
ARMS = {  # name: (SFT stage, reward stage, bindings)
    "kl": ("sft", "reward", []),
    "free": ("sft", "reward", FREE),
    "sft": ("sft", "reward", ["ppo_settings.gamma_sft = 1.0"]),
    "shared": ("sft", "reward", ["PPOConfig.shared_backbone = True"]),
    "drift": ("gentle", "reward", DRIFT),
    "drift_ptx": ("gentle", "reward", DRIFT + ["ppo_settings.gamma_ptx = 1.0"]),
    "drift_sft": ("gentle", "reward", DRIFT + ["ppo_settings.gamma_sft = 1.0"]),
    "longer_free": ("sft", "longer", FREE + ["PPOConfig.max_new_tokens = 24"]),
    "longer_kl": ("sft", "longer", ["PPOConfig.max_new_tokens = 24"]),
}


def _train(run_dir, settings, *extra):
  gin.clear_config()
  files = [s for s in settings if s.endswith(".gin")]
  bindings = [s for s in settings if not s.endswith(".gin")]
  gin_text = config.parse_gin(files, [*bindings, f"TrainConfig.run_dir = '{run_dir}'", *extra])
  return loop.train(**config.run_configs(), gin_text=gin_text)


def _done(run_dir: pathlib.Path) -> bool:
  return (run_dir / "checkpoints").exists() and any(
      p.name.isdigit() for p in (run_dir / "checkpoints").iterdir())


def _write_data(work: pathlib.Path) -> None:
  planted.write_both_answers("sort_swap", work / "sort_sft.jsonl")
  longer = []
  for split in ("train", "validation"):
    for _, r in planted.read_records("sort_length", split):
      if len(r["rejected"]) > len(r["chosen"]):
        r = dict(r, chosen=r["rejected"], rejected=r["chosen"])
      longer.append(r)
  (work / "longer.jsonl").write_text("".join(json.dumps(r) + "\n" for r in longer))


def stages(work: pathlib.Path) -> dict:
  work.mkdir(parents=True, exist_ok=True)
  _write_data(work)
  runs = {name: work / name
          for name in ("base", "pretrain", "sft", "gentle", "reward", "longer")}
  if not _done(runs["base"]):
    checkpoints.write_fresh_run_dir(str(runs["base"]), config.model_size("tiny"))
  plan = [("pretrain", PRETRAIN, [f"TrainConfig.init_from = '{runs['base']}'"]),
          ("sft", SFT, [f"TrainConfig.init_from = '{runs['pretrain']}'",
                        f"ChatJsonl.file_pattern = '{work / 'sort_sft.jsonl'}'"]),
          ("gentle", GENTLE, [f"TrainConfig.init_from = '{runs['pretrain']}'",
                              f"ChatJsonl.file_pattern = '{work / 'sort_sft.jsonl'}'"]),
          ("reward", REWARD, [f"TrainConfig.init_from = '{runs['sft']}'"]),
          ("longer", LONGER, [f"TrainConfig.init_from = '{runs['sft']}'",
                              f"PreferenceJsonl.file_pattern = '{work / 'longer.jsonl'}'"])]
  for name, settings, extra in plan:
    if not _done(runs[name]):
      start = time.perf_counter()
      _train(runs[name], settings, *extra)
      print(f"stage {name}: {time.perf_counter() - start:.0f} s", flush=True)
  return runs


def _logged_history(run_dir: pathlib.Path) -> list[dict]:
  """A finished run's records, as `loop.train` returned them, from its metrics.jsonl."""
  history = []
  for line in (run_dir / "metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    for kind in ("train", "eval"):
      values = {k[len(kind) + 1:]: v for k, v in record.items() if k.startswith(kind + "/")}
      if values:
        history.append({"step": record["step"], "kind": kind, **values})
  return history


def arm(name: str, runs: dict, work: pathlib.Path, iterations: int) -> dict:
  """One arm's results; a finished run directory is read back, not run again."""
  sft, reward, bindings = ARMS[name]
  run_dir = work / f"ppo_{name}"
  start = time.perf_counter()
  read_back = _done(run_dir)
  if read_back:
    history = _logged_history(run_dir)
  else:
    history = _train(run_dir, PPO, f"TrainConfig.init_from = '{runs[sft]}'",
                     f"PPOConfig.reward_from = '{runs[reward]}'",
                     f"TrainConfig.steps = {iterations}", f"TrainConfig.eval_every = {iterations}",
                     f"TrainConfig.checkpoint_every = {iterations}",
                     f"ChatJsonl.file_pattern = '{work / 'sort_sft.jsonl'}'", *bindings)
  evals = [h for h in history if h["kind"] == "eval"]
  train = [h for h in history if h["kind"] == "train"]
  return {"start": evals[0], "end": evals[-1],
          "seconds": None if read_back else time.perf_counter() - start,
          "train_kl": [h["kl/sequence"] for h in train],
          "train_coef": [h["kl/coef"] for h in train],
          "train_reward": [h["reward/score"] for h in train],
          "train_length": [h["reply/length"] for h in train]}


def rise(result: dict, key: str) -> float:
  return result["end"][key] / result["start"][key] - 1.0


def checks(results: dict) -> dict:
  """The must-shows of the PPO issue, on whichever arms ran."""
  out = {}
  if "kl" in results:
    kl = results["kl"]
    second = np.array(kl["train_kl"][len(kl["train_kl"]) // 2:])
    share = kl["end"]["reply/reference_match"]
    out["rule_share"] = {"start": kl["start"]["reply/reference_match"], "end": share,
                         "met": bool(share >= 0.85)}
    out["kl_second_half"] = {"mean": float(second.mean()), "target": 1.5,
                             "within_50%_share": float(np.mean(np.abs(second / 1.5 - 1) <= 0.5)),
                             "met": bool(abs(second.mean() / 1.5 - 1) <= 0.5)}
    if "free" in results:
      ratio = float(np.mean(results["free"]["train_kl"][-5:]) / np.mean(kl["train_kl"][-5:]))
      out["free_over_controlled_kl"] = {"ratio": ratio, "met": bool(ratio >= 3)}
  anchored = [("kl", "sft", ("sft/loss",)), ("drift", "drift_sft", ("sft/loss",)),
              ("drift", "drift_ptx", ("ptx/l2r/loss", "ptx/r2l/loss"))]
  for base, name, keys in anchored:
    if base in results and name in results:
      for key in keys:
        with_, without = rise(results[name], key), rise(results[base], key)
        # At most 5% with the anchor, and at least twice that (and twice 5%) without it.
        out[f"{name}_vs_{base}: {key} rise"] = {
            "with": with_, "without": without,
            "met": bool(with_ <= 0.05 and without >= 2 * max(with_, 0.05))}
  lengths = {name: results[name]["end"]["reply/length"] / results[name]["start"]["reply/length"]
             for name in ("longer_free", "longer_kl") if name in results}
  if len(lengths) == 2:  # the hack shows without the KL term; with it, within 1.5x
    out["length_ratio"] = {**lengths, "met": bool(lengths["longer_free"] > max(
        1.1, lengths["longer_kl"]) and lengths["longer_kl"] <= 1.5)}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work_dir", type=pathlib.Path, default=pathlib.Path("runs/ppo_study"))
  parser.add_argument("--arms", default=",".join(ARMS))
  parser.add_argument("--iterations", type=int, default=40)
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  started = time.perf_counter()
  runs = stages(args.work_dir)
  results = {}
  for name in args.arms.split(","):
    results[name] = arm(name, runs, args.work_dir, args.iterations)
    r = results[name]
    took = "read back" if r["seconds"] is None else f"{r['seconds']:.0f} s"
    print(f"arm {name}: {took} | rule {r['start']['reply/reference_match']:.1%} -> "
          f"{r['end']['reply/reference_match']:.1%} | KL {r['end']['kl/sequence']:.2f} | length "
          f"{r['start']['reply/length']:.1f} -> {r['end']['reply/length']:.1f} | ptx "
          f"{r['start'].get('ptx/loss', float('nan')):.3f} -> "
          f"{r['end'].get('ptx/loss', float('nan')):.3f} | sft "
          f"{r['start'].get('sft/loss', float('nan')):.3f} -> "
          f"{r['end'].get('sft/loss', float('nan')):.3f}", flush=True)
  summary = {"checks": checks(results), "arms": results, "iterations": args.iterations,
             "seconds": time.perf_counter() - started}
  print(json.dumps(summary["checks"], indent=2))
  RESULTS.mkdir(parents=True, exist_ok=True)
  path = RESULTS / f"ppo-study-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
  path.write_text(json.dumps(summary, indent=2) + "\n")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
