"""`batgpt convert export|import`: orbax checkpoints <-> Hugging Face directories.

  batgpt convert export --checkpoint=runs/smoke --output=hf/smoke [--layout=qwen2]
      [--dtype=bfloat16] [--max_shard_size=2GB] --gin_file=gin/smoke.gin   (gin: the tokenizer)
  batgpt convert import --hf_dir=hf/smoke --output=runs/imported [--dtype=float32]

A reward checkpoint (one with a reward_head) exports as Qwen2ForSequenceClassification or
LlamaForSequenceClassification and imports back as a reward run (convert/reward.py).
"""

import argparse
import re
import sys

from batgpt_jax import config
from batgpt_jax.convert import safetensors_io

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
  """'2GB' -> 2_000_000_000, '500MiB' -> 524_288_000, '1000' -> 1000 (bytes)."""
  match = _SIZE.match(text)
  unit = (match.group(2) or "").upper() if match else None
  if unit and not unit.endswith("B"):
    unit += "B"
  if not match or unit not in _UNITS:
    raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 2GB, 500MB or 1GiB")
  return int(float(match.group(1)) * _UNITS[unit])


def _vocab_path(args) -> str | None:
  # pylint: disable=import-outside-toplevel
  if args.vocab:
    return args.vocab
  if args.no_tokenizer:
    return None
  from batgpt_jax.data import pipeline
  return pipeline.vocabulary_for(pipeline.DataConfig()).sentencepiece_model_file


def cmd_export(args, gin_text: str) -> int:
  del gin_text
  from batgpt_jax.convert import orbax_to_hf  # pylint: disable=import-outside-toplevel
  result = orbax_to_hf.export(args.checkpoint, args.output, step=args.step,
                              layout_name=args.layout, dtype=args.dtype,
                              max_shard_bytes=args.max_shard_size, sp_model_path=_vocab_path(args),
                              progress=not args.quiet, overwrite=args.overwrite)
  print(f"Wrote step {result.step} as {result.layout} to {result.out_dir}: "
        f"{', '.join(result.files)}")
  return 0


def cmd_import(args, gin_text: str) -> int:
  del gin_text
  # pylint: disable=import-outside-toplevel
  from batgpt_jax.convert import hf_to_orbax
  from batgpt_jax.model.config import ModelConfig
  from batgpt_jax.train import state as train_state
  result = hf_to_orbax.import_hf(args.hf_dir, args.output, layout_name=args.layout,
                                 dtype=args.dtype, base_cfg=ModelConfig(),
                                 opt_cfg=train_state.OptimizerConfig(), progress=not args.quiet)
  print(f"Imported {args.hf_dir} ({result.layout}) as step 0 of {result.run_dir}.\n"
        f"Train or evaluate it with: --gin_file={result.gin_path} "
        f"--gin.TrainConfig.run_dir=\"'{result.run_dir}'\"")
  return 0


def _run_reporting_errors(fn):
  """Bad input (not a checkpoint, wrong tensors, a config with no layout) -> message, exit 2."""
  def run(args, gin_text: str) -> int:
    from batgpt_jax.convert.layout import LayoutError  # pylint: disable=import-outside-toplevel
    try:
      return fn(args, gin_text)
    except (LayoutError, FileNotFoundError, FileExistsError, config.InputError) as err:
      print(f"error: {err}", file=sys.stderr)
      return 2
  return run


def add_convert_command(subparsers) -> None:
  """Adds `batgpt convert export` and `batgpt convert import`."""
  parser = subparsers.add_parser("convert", help="orbax checkpoints <-> Hugging Face",
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="convert_command", required=True)
  layouts = ("qwen2", "llama", "batgpt")
  dtypes = sorted(safetensors_io.DTYPES)

  export = sub.add_parser("export", help="an orbax checkpoint -> a Hugging Face directory")
  config.add_gin_flags(export)
  export.add_argument("--checkpoint", required=True,
                      help="run dir, its checkpoints/ dir, or one step dir")
  export.add_argument("--step", type=int, default=None, help="default: the latest step")
  export.add_argument("--output", required=True, help="the Hugging Face directory to write")
  export.add_argument("--layout", choices=layouts, default=None,
                      help="default: the first of qwen2, llama, batgpt that fits exactly (of "
                           "qwen2, llama for a reward model)")
  export.add_argument("--dtype", choices=dtypes, default=None,
                      help="tensor dtype (default: the checkpoint's param_dtype)")
  export.add_argument("--max_shard_size", type=parse_size, default=parse_size("2GB"),
                      help="split model.safetensors into shards above this size (e.g. 500MB)")
  export.add_argument("--vocab", default=None,
                      help="SentencePiece model to export (default: DataConfig's vocabulary)")
  export.add_argument("--no_tokenizer", action="store_true", help="write no tokenizer files")
  export.add_argument("--overwrite", action="store_true",
                      help="replace the files of an earlier export in --output (default: refuse)")
  export.add_argument("--quiet", action="store_true", help="no progress bar")
  export.set_defaults(run=_run_reporting_errors(cmd_export))

  imp = sub.add_parser("import", help="a Hugging Face directory -> a new run directory")
  config.add_gin_flags(imp)
  imp.add_argument("--hf_dir", required=True, help="config.json + safetensors (llama, qwen2, "
                                                   "batgpt)")
  imp.add_argument("--output", required=True, help="the run directory to create")
  imp.add_argument("--layout", choices=layouts, default=None,
                   help="default: config.json's model_type")
  imp.add_argument("--dtype", choices=dtypes, default=None,
                   help="param_dtype of the run (default: float32, or the exported one)")
  imp.add_argument("--quiet", action="store_true", help="no progress bar")
  imp.set_defaults(run=_run_reporting_errors(cmd_import))
