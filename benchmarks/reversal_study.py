"""The reversal study: does training in both directions lift the "reversal curse"?

  python benchmarks/reversal_study.py          # 4 variants x 2 seeds, ~10 minutes on a 2-core CPU
  python benchmarks/reversal_study.py --dry    # a minute or two: proves the pipeline, not numbers

The tiny model (gin/models/tiny.gin) is trained on synthetic facts (benchmarks/reversal_facts.py:
80 stated one way only, 80 both ways) with the run settings of gin/reversal/study.gin, once per
variant and seed, at equal compute (the same steps, batch and row length):
  l2r        DataConfig.direction_mode='l2r'
  both       'both': every document L2R and token-reversed R2L
  sample     'sample': one direction per document
  both-word  'both' with DataConfig.r2l_unit='word': R2L documents have their words reversed
  sample-word (optional, --variants): 'sample' with words reversed
Each run's last checkpoint answers, by greedy generation through the engine (sample/text.py),
the one-way facts' forward, reverse-posed-L2R and R2L-retrieval questions and the control facts'
reverse questions. Writes bench/results/reversal-<stamp>.json and .png and prints the table:
accuracy in %, mean +- spread over seeds (spread: the population standard deviation; for two
seeds, half their difference).
"""

import argparse
import json
import pathlib
import shutil
import sys
import time

import gin
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import reversal_facts as facts_lib  # noqa: E402  pylint: disable=wrong-import-position

from batgpt_jax import config, logs  # noqa: E402  pylint: disable=wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GIN_FILES = ["models/tiny.gin", "reversal/study.gin"]
VARIANTS = {  # name: (DataConfig.direction_mode, DataConfig.r2l_unit)
    "l2r": ("l2r", "token"),
    "both": ("both", "token"),
    "sample": ("sample", "token"),
    "both-word": ("both", "word"),
    "sample-word": ("sample", "word"),
}
DEFAULT_VARIANTS = ("l2r", "both", "sample", "both-word")
COLUMNS = ("forward", "reverse_l2r", "r2l_retrieval", "control_reverse_l2r")
MAX_NEW_TOKENS = 24  # a name is at most ~14 tokens here, then '.' and EOS


def _configs(bindings: list[str]) -> dict:
  """The configs of `loop.train` from the study's gin files and `bindings`."""
  gin.clear_config()
  gin_text = config.parse_gin(GIN_FILES, bindings)
  return {**config.run_configs(), "gin_text": gin_text}


def _question_sets(fact_set: facts_lib.FactSet) -> dict[str, list[facts_lib.Question]]:
  """The table's columns: the one-way facts' three questions, the control facts' reverse one."""
  by_kind = {}
  for column, facts, kind in (("forward", fact_set.one_way, "forward"),
                              ("reverse_l2r", fact_set.one_way, "reverse_l2r"),
                              ("r2l_retrieval", fact_set.one_way, "r2l_retrieval"),
                              ("control_reverse_l2r", fact_set.control, "reverse_l2r")):
    by_kind[column] = [q for f in facts for q in facts_lib.questions(f) if q.kind == kind]
  return by_kind


def answer(loaded, question_set: list[facts_lib.Question], unit: str) -> list[str]:
  """Greedy answers of a loaded checkpoint (sample/options.Loaded) to questions of one
  direction, in one engine batch."""
  from batgpt_jax.sample import engine, text  # pylint: disable=import-outside-toplevel
  (direction,) = {q.direction for q in question_set}
  sampling = engine.SamplingConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0)
  return text.generate_text(loaded.cfg, loaded.params, loaded.vocabulary,
                            [q.prompt for q in question_set], sampling, direction=direction,
                            unit=unit)


def score_run(loaded, fact_set: facts_lib.FactSet, unit: str) -> dict:
  """{column: accuracy}, plus a few (prompt, output, answer) examples per column."""
  scores, examples = {}, {}
  for column, question_set in _question_sets(fact_set).items():
    outputs = answer(loaded, question_set, unit)
    scores[column] = facts_lib.accuracy(question_set, outputs)
    examples[column] = [(q.prompt, o, q.answer) for q, o in zip(question_set[:3], outputs)]
  return {"accuracy": scores, "examples": examples}


def _train_and_score(variant: str, seed: int, steps: int, run_root: pathlib.Path) -> dict:
  from batgpt_jax.data import tasks  # pylint: disable=import-outside-toplevel
  from batgpt_jax.sample import options  # pylint: disable=import-outside-toplevel
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  mode, unit = VARIANTS[variant]
  facts_file = run_root / f"facts-s{seed}.txt"
  run_dir = run_root / f"{variant}-s{seed}"
  bindings = [f"TextFiles.file_pattern = '{facts_file}'", f"DataConfig.direction_mode = '{mode}'",
              f"DataConfig.r2l_unit = '{unit}'", f"DataConfig.seed = {seed}",
              f"TrainConfig.seed = {seed}", f"TrainConfig.steps = {steps}",
              f"TrainConfig.run_dir = '{run_dir}'"]
  if steps < 400:  # --dry and short runs: evaluate once, at the end
    bindings.append(f"TrainConfig.eval_every = {steps}")
  configs = _configs(bindings)
  fact_set = facts_lib.make_facts(seed)
  if not facts_file.exists():
    lines = facts_lib.training_lines(fact_set, seed, tasks.validation_split())
    facts_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
  started = time.time()
  history = loop.train(**configs)
  if history and history[-1]["kind"] == "preempted":
    raise SystemExit(f"The run {run_dir} was preempted at step {history[-1]['step']}; its "
                     "numbers would not be comparable. Run the study again.")
  train_s = time.time() - started
  loaded = options.load(str(run_dir))
  scored = score_run(loaded, fact_set, unit)
  evals = [h for h in history if h["kind"] == "eval"]
  trains = [h for h in history if h["kind"] == "train"]
  return {"variant": variant, "seed": seed, "direction_mode": mode, "r2l_unit": unit,
          "steps": steps, "train_loss": trains[-1]["loss"] if trains else None,
          "eval_loss": evals[-1]["loss"] if evals else None, "train_s": train_s,
          "score_s": time.time() - started - train_s, **scored}


def summarize(runs: list[dict]) -> dict:
  """{variant: {column: {'mean', 'spread', 'values'}}} in %, spread = std over seeds."""
  out = {}
  for run in runs:
    out.setdefault(run["variant"], {c: [] for c in COLUMNS})
    for column in COLUMNS:
      out[run["variant"]][column].append(100.0 * run["accuracy"][column])
  return {variant: {c: {"mean": float(np.mean(v)), "spread": float(np.std(v)), "values": v}
                    for c, v in columns.items()} for variant, columns in out.items()}


def table(summary: dict) -> str:
  rows = [f"{'variant':<12}" + "".join(f"{c:>22}" for c in COLUMNS)]
  for variant, columns in summary.items():
    rows.append(f"{variant:<12}" + "".join(
        f"{columns[c]['mean']:>15.1f} ± {columns[c]['spread']:<4.1f}" for c in COLUMNS))
  return "\n".join(rows)


def _plot(summary: dict, path: pathlib.Path, title: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(8, 4.5))
  width = 0.8 / len(summary)
  x = np.arange(len(COLUMNS))
  for k, (variant, columns) in enumerate(summary.items()):
    ax.bar(x + (k - (len(summary) - 1) / 2) * width, [columns[c]["mean"] for c in COLUMNS],
           width, yerr=[columns[c]["spread"] for c in COLUMNS], capsize=3, label=variant)
  ax.set_xticks(x, ["forward\n(A→B, L2R)", "reverse posed L2R\n(B→A)",
                    "R2L retrieval\n(…B ⇒ A, backwards)", "control: reverse L2R\n(stated both ways)"])
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 105)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (facts and training)")
  parser.add_argument("--steps", type=int, default=800, help="training steps of every run")
  parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                      help=f"comma-separated, of {sorted(VARIANTS)}")
  parser.add_argument("--out", default=None,
                      help="the results JSON (default bench/results/reversal-<stamp>.json); "
                           "the PNG goes beside it")
  parser.add_argument("--run_dir", default="runs/reversal_study", help="wiped at the start")
  parser.add_argument("--dry", action="store_true", help="a few steps, one seed: the pipeline")
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  variants = args.variants.split(",")
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown:
    parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
  if args.dry:
    seeds, args.steps = seeds[:1], 10
  try:
    import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    raise SystemExit("The plot needs matplotlib: pip install matplotlib (the `bench` extra).")
  run_root = ROOT / args.run_dir
  shutil.rmtree(run_root, ignore_errors=True)
  run_root.mkdir(parents=True)
  started = time.time()
  runs = []
  for seed in seeds:
    for variant in variants:
      runs.append(_train_and_score(variant, seed, args.steps, run_root))
      print(f"{variant} seed {seed}: " + ", ".join(
          f"{c} {100 * runs[-1]['accuracy'][c]:.1f}%" for c in COLUMNS), flush=True)
  summary = summarize(runs)
  stamp = time.strftime("%Y%m%d-%H%M%S") + ("-dry" if args.dry else "")
  out = pathlib.Path(args.out) if args.out else RESULTS / f"reversal-{stamp}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  wall = time.time() - started
  out.write_text(json.dumps({"gin_files": GIN_FILES, "seeds": seeds, "steps": args.steps,
                             "variants": {v: VARIANTS[v] for v in variants},
                             "summary": summary, "runs": runs, "wall_seconds": wall},
                            indent=2, ensure_ascii=False))
  plot = out.with_suffix(".png")
  _plot(summary, plot, f"tiny model, {args.steps} steps each, seeds {seeds}: 80 one-way facts, "
                       "80 control facts (mean ± std over seeds)")
  print(table(summary))
  print(f"Wall time {wall:.0f} s. Wrote {out} and {plot}")
  return 0


if __name__ == "__main__":
  logs.setup_logging()
  sys.exit(main(sys.argv[1:]))
