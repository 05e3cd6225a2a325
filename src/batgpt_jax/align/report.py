"""A table of the last held-out eval of each run of an alignment pipeline (make align-smoke).

    python -m batgpt_jax.align.report RUN_DIR [RUN_DIR ...]

reads each run's `metrics.jsonl` (what `batgpt train` writes) and prints, per run, the step of
its last eval and the metrics that say whether the stage worked: loss, reply accuracy (SFT),
pair accuracy and margin (reward, DPO), log-ratio and log-prob trends and KL (DPO), the
normalised reward, KL, reply length and share of replies equal to the reference (PPO).
"""

import argparse
import json
import os
import pathlib

# As in `batgpt` (cli.py): TensorFlow's start-up lines (oneDNN, the CUDA probe, CPU features)
# say nothing to a reader of the table.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from batgpt_jax import logs  # noqa: E402

with logs.native_noise_filtered():
  import tensorflow as tf

# eval/<name> -> column title, in the order printed; a run shows the ones it has.
COLUMNS = (("loss", "loss"), ("reply/accuracy", "reply acc"), ("reward/accuracy", "pair acc"),
           ("reward/margin", "margin"), ("logratio/chosen", "logratio c"),
           ("logratio/rejected", "logratio r"), ("logp/chosen", "logp c"),
           ("logp/rejected", "logp r"), ("kl/sequence", "KL"), ("reward/score", "reward"),
           ("reply/length", "reply len"), ("reply/reference_match", "rule"))


def last_eval(run_dir: str) -> dict:
  """The last record of RUN_DIR/metrics.jsonl that holds eval metrics, keys without 'eval/'."""
  path = f"{run_dir.rstrip('/')}/metrics.jsonl"
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {run_dir} the run_dir of a batgpt train "
                            "run?")
  last = None
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # a line cut by a kill; the run's next start removes it
      if any(key.startswith("eval/") for key in record):
        last = record
  if last is None:
    raise ValueError(f"{path} has no eval record: run with TrainConfig.eval_every > 0.")
  return {"step": last["step"],
          **{k[len("eval/"):]: v for k, v in last.items() if k.startswith("eval/")}}


def table(run_dirs: list[str]) -> str:
  rows = [(pathlib.PurePath(d).name, last_eval(d)) for d in run_dirs]
  shown = [(key, title) for key, title in COLUMNS if any(key in r for _, r in rows)]
  header = ["run", "step"] + [title for _, title in shown]
  lines = [[name, str(r["step"])] + [f"{r[key]:.4f}" if key in r else "-" for key, _ in shown]
           for name, r in rows]
  widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
  fmt = lambda row: "  ".join(cell.rjust(w) if i else cell.ljust(w)
                              for i, (cell, w) in enumerate(zip(row, widths)))
  return "\n".join([fmt(header)] + [fmt(row) for row in lines])


def main(argv=None) -> None:
  """Prints the table; a missing run or a run without evals is one `error:` line, exit 1."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run_dirs", nargs="+", help="run directories, in pipeline order")
  args = parser.parse_args(argv)
  try:
    print(table(args.run_dirs))
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  main()
