"""The `batgpt` command, configured T5X-style by gin files and --gin.X=Y bindings.

  batgpt train --gin_file=gin/smoke.gin --gin.TrainConfig.steps=100
  batgpt eval --gin_file=gin/smoke.gin
  batgpt tokenizer train --gin_file=gin/smoke.gin --output=runs/tok/sp --vocab_size=4096
  batgpt grow --from_checkpoint=runs/small --to_gin=gin/models/big.gin --out=runs/big
  batgpt convert export|import ...
  batgpt generate --gin_file=gin/smoke.gin --prompt="Once upon a time"
  batgpt chat --checkpoint=runs/sft
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from batgpt_jax import config, logs  # noqa: E402  (after the TF logging default)

def join_processes(args) -> None:
  """Starts JAX's multi-process runtime when this is one process of many (before any device use)."""
  from batgpt_jax import distributed  # pylint: disable=import-outside-toplevel
  try:
    distributed.initialize(distributed.DistributedConfig(), distributed.flags_of(args))
  except ValueError as err:
    raise SystemExit(f"error: {err}") from None
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1:  # tell the hosts' interleaved logs apart
    logs.tag_processes(jax.process_index(), jax.process_count())


def cmd_train(args, gin_text: str) -> int:
  from batgpt_jax.train import faults, loop  # pylint: disable=import-outside-toplevel
  join_processes(args)
  from batgpt_jax import checkpoints  # pylint: disable=import-outside-toplevel
  try:
    history = loop.train(**config.run_configs().as_kwargs(), gin_text=gin_text)
  except (checkpoints.CheckpointMismatchError, checkpoints.UnreadableCheckpointError) as err:
    raise SystemExit(f"error: {err}") from None
  if history and history[-1]["kind"] == "preempted":
    return faults.PREEMPTED_EXIT  # saved, but not finished: schedulers should restart it
  return 0


def cmd_eval(args, gin_text: str) -> int:
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  join_processes(args)
  loop.evaluate_checkpoint(**config.run_configs().as_kwargs(), gin_text=gin_text)
  return 0


def cmd_tokenizer_train(args, gin_text: str) -> int:
  del gin_text
  from batgpt_jax.data import pipeline, vocab  # pylint: disable=import-outside-toplevel
  path = vocab.train_tokenizer_from_config(pipeline.DataConfig(), args.output, args.vocab_size,
                                           max_documents=args.max_documents)
  print(f"Wrote {path}. Use it with --gin.DataConfig.vocab_path=\"'{path}'\"")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="batgpt", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  from batgpt_jax import distributed  # pylint: disable=import-outside-toplevel
  train = sub.add_parser("train", help="pretrain (or resume) a model")
  config.add_gin_flags(train)
  distributed.add_flags(train)
  train.set_defaults(run=cmd_train)
  evaluate = sub.add_parser("eval", help="evaluate the latest checkpoint of a run")
  config.add_gin_flags(evaluate)
  distributed.add_flags(evaluate)
  evaluate.set_defaults(run=cmd_eval)
  tokenizer = sub.add_parser("tokenizer", help="tokenizer tools")
  tok_sub = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
  tok_train = tok_sub.add_parser("train", help="train a SentencePiece model on the configured data")
  config.add_gin_flags(tok_train)
  tok_train.add_argument("--output", required=True, help="output prefix: writes PREFIX.model")
  tok_train.add_argument("--vocab_size", type=int, default=32768)
  tok_train.add_argument("--max_documents", type=int, default=200_000)
  tok_train.set_defaults(run=cmd_tokenizer_train)
  # pylint: disable=import-outside-toplevel
  from batgpt_jax.annotate import command as annotate_command
  from batgpt_jax.convert import command as convert_command
  from batgpt_jax.grow import command as grow_command
  from batgpt_jax.sample import chat as chat_command
  from batgpt_jax.sample import generate as generate_command
  grow_command.add_grow_command(sub)
  convert_command.add_convert_command(sub)
  generate_command.add_generate_command(sub)
  chat_command.add_chat_command(sub)
  annotate_command.add_annotate_command(sub)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["annotate"]:  # the web app takes no gin and must not load JAX: its own parser
    from batgpt_jax.annotate import command  # pylint: disable=import-outside-toplevel
    return command.main(argv[1:], prog="batgpt")
  logs.setup_logging()
  argv, bindings = config.split_bindings(list(sys.argv[1:] if argv is None else argv))
  with logs.native_noise_filtered():  # the commands' imports load TensorFlow and JAX
    args = build_parser().parse_args(argv)
    gin_text = config.parse_gin(args.gin_file, bindings)
  return args.run(args, gin_text)


if __name__ == "__main__":
  sys.exit(main())
