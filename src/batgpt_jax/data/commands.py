"""`batgpt data prepare`: write each source of DataConfig.sources once as prepared data.

  batgpt data prepare --gin_file=gin/smoke.gin --output=data/smoke
  batgpt train --gin_file=gin/smoke.gin --gin_file=data/smoke/sources.gin ...

Source i goes to OUTPUT/i (data/prepared.py); OUTPUT/sources.gin sets DataConfig.sources to
the prepared sources at the same rates, so adding it after the run's own gin files trains on
them. The parser is argparse only, so `--help` loads no JAX.
"""

import os
import time

from batgpt_jax import config


def add_data_command(sub) -> None:
  data = sub.add_parser("data", help="data tools")
  data_sub = data.add_subparsers(dest="data_command", required=True)
  prepare = data_sub.add_parser(
      "prepare", help="tokenize DataConfig.sources once into indexed files (ArrayRecord)")
  config.add_gin_flags(prepare)
  prepare.add_argument("--output", required=True,
                       help="directory: source i is written to OUTPUT/i, plus OUTPUT/sources.gin")
  prepare.set_defaults(run=run)


def sources_gin(sources_and_rates, prepared_dirs: list[str]) -> str:
  lines = ["# Written by `batgpt data prepare`: the run's sources, prepared. Add this file",
           "# after the run's own gin files."]
  entries = ", ".join(f"(@source_{i}/Prepared(), {float(rate)!r})"
                      for i, (_, rate) in enumerate(sources_and_rates))
  lines.append(f"DataConfig.sources = [{entries}]")
  for i, (directory, (source, _)) in enumerate(zip(prepared_dirs, sources_and_rates)):
    lines.append(f"source_{i}/Prepared.path = {os.path.abspath(directory)!r}  # {source!r}")
  return "\n".join(lines) + "\n"


def run(args, gin_text: str) -> int:
  del gin_text
  # pylint: disable=import-outside-toplevel  (TensorFlow and JAX load only when it runs)
  from batgpt_jax import logs
  from batgpt_jax.data import pipeline, prepared
  from batgpt_jax.train import metrics
  configs = config.run_configs()
  data_cfg, seq_len = configs["data_cfg"], configs["cfg"].seq_len
  with logs.native_noise_filtered():
    vocabulary = pipeline.vocabulary_for(data_cfg)
  directories = []
  for i, (source, _) in enumerate(data_cfg.sources):
    directory = os.path.join(args.output, str(i))
    started = time.monotonic()
    with logs.native_noise_filtered():
      meta = prepared.prepare(source, vocabulary, directory, seq_len=seq_len)
    metrics.log_console(
        f"Prepared {source!r} in {directory}: {meta['documents']['train']:,} train and "
        f"{meta['documents']['validation']:,} validation documents, "
        f"{sum(meta['tokens'].values()):,} tokens, in {time.monotonic() - started:.1f} s")
    directories.append(directory)
  path = os.path.join(args.output, "sources.gin")
  with open(path, "w", encoding="utf-8") as f:
    f.write(sources_gin(data_cfg.sources, directories))
  print(f"Wrote {path}. Train on the prepared data with --gin_file={path} after the run's gin "
        "files.")
  return 0
