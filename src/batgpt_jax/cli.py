"""The `batgpt` command, configured T5X-style by gin files and --gin.X=Y bindings.

  batgpt train --gin_file=gin/smoke.gin --gin.TrainConfig.steps=100
  batgpt eval --gin_file=gin/smoke.gin
  batgpt tokenizer train --gin_file=gin/smoke.gin --output=runs/tok/sp --vocab_size=4096
  batgpt data prepare --gin_file=gin/smoke.gin --output=data/smoke
  batgpt grow --from_checkpoint=runs/small --to_gin=gin/models/big.gin --out=runs/big
  batgpt convert export|import ...
  batgpt generate --gin_file=gin/smoke.gin --prompt="Once upon a time"
  batgpt chat --checkpoint=runs/sft
  batgpt reward score --checkpoint=runs/reward --input=pairs.jsonl --output=scored.jsonl
  batgpt label --checkpoint=runs/sft --input=pairs.jsonl --output=ai_labels.jsonl
"""

import argparse
import gc
import importlib
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from batgpt_jax import xla_flags  # noqa: E402

xla_flags.apply_defaults()  # before JAX starts its backend

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
    history = loop.train(**config.run_configs(), gin_text=gin_text)
  except (checkpoints.CheckpointMismatchError, checkpoints.UnreadableCheckpointError) as err:
    raise SystemExit(f"error: {err}") from None
  except checkpoints.CheckpointWriteError as err:
    print(f"error: {err}", file=sys.stderr, flush=True)
    # The failed save leaves orbax threads (not daemons) waiting for signals of its commit
    # until their timeout, so a normal exit would hang joining them (checkpoints.wait).
    # Nothing is lost by ending now: every step listed is complete, and an unfinished one is
    # never listed.
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access
  if history and history[-1]["kind"] == "preempted":
    return faults.PREEMPTED_EXIT  # saved, but not finished: schedulers should restart it
  return 0


def cmd_eval(args, gin_text: str) -> int:
  join_processes(args)
  if args.task in ("multiple_choice", "generation", "win_rate"):
    # pylint: disable=import-outside-toplevel
    import importlib
    from batgpt_jax.sample import options
    task = importlib.import_module(f"batgpt_jax.evaluate.{args.task}")
    return options.report_errors(task.run)(args, gin_text)
  if args.task == "instructions":
    # pylint: disable=import-outside-toplevel
    from batgpt_jax.evaluate import instruction_eval
    from batgpt_jax.sample import options
    return options.report_errors(lambda a, _: instruction_eval.run(a, options.load_from_flags(a)))(
        args, gin_text)
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  loop.evaluate_checkpoint(**config.run_configs(), gin_text=gin_text)
  return 0


def cmd_tokenizer_train(args, gin_text: str) -> int:
  del gin_text
  from batgpt_jax.data import pipeline, vocab  # pylint: disable=import-outside-toplevel
  path = vocab.train_tokenizer_from_config(pipeline.DataConfig(), args.output, args.vocab_size,
                                           max_documents=args.max_documents)
  print(f"Wrote {path}. Use it with --gin.DataConfig.vocab_path=\"'{path}'\"")
  return 0


def add_train_command(sub) -> None:
  from batgpt_jax import distributed  # pylint: disable=import-outside-toplevel
  train = sub.add_parser("train", help="pretrain (or resume) a model")
  config.add_gin_flags(train)
  distributed.add_flags(train)
  train.set_defaults(run=cmd_train)


def add_eval_command(sub) -> None:
  from batgpt_jax import distributed  # pylint: disable=import-outside-toplevel
  evaluate = sub.add_parser("eval", help="evaluate the latest checkpoint of a run")
  config.add_gin_flags(evaluate)
  distributed.add_flags(evaluate)
  evaluate.add_argument("--task", choices=("perplexity", "instructions", "multiple_choice",
                                            "generation", "win_rate"),
                        default="perplexity",
                        help="perplexity: per-direction loss on the held-out split of "
                             "DataConfig (TrainConfig.run_dir); instructions: exact match per "
                             "family on the default instruction set (--checkpoint); "
                             "multiple_choice: C-Eval/CMMLU-layout accuracy "
                             "(MultipleChoiceConfig, --checkpoint); generation: exact match and "
                             "contains on a prompt set (GenerationConfig, --checkpoint); "
                             "win_rate: --checkpoint's replies against --baseline's, judged by "
                             "--judge in both orders (WinRateConfig)")
  from batgpt_jax.sample import commands  # pylint: disable=import-outside-toplevel
  commands.add_model_flags(evaluate)
  evaluate.add_argument("--max_new_tokens", type=int, default=None,
                        help="instructions (default 32), generation, win_rate (default "
                             "GenerationConfig.max_new_tokens): reply limit")
  evaluate.add_argument("--show", type=int, default=2,
                        help="instructions: replies printed per family; generation: in all")
  # pylint: disable-next=import-outside-toplevel
  from batgpt_jax.evaluate import generation, multiple_choice, win_rate
  multiple_choice.add_flags(evaluate)
  generation.add_flags(evaluate)
  win_rate.add_flags(evaluate)
  evaluate.set_defaults(run=cmd_eval)


def add_tokenizer_command(sub) -> None:
  tokenizer = sub.add_parser("tokenizer", help="tokenizer tools")
  tok_sub = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
  tok_train = tok_sub.add_parser("train", help="train a SentencePiece model on the configured data")
  config.add_gin_flags(tok_train)
  tok_train.add_argument("--output", required=True, help="output prefix: writes PREFIX.model")
  tok_train.add_argument("--vocab_size", type=int, default=32768)
  tok_train.add_argument("--max_documents", type=int, default=200_000)
  tok_train.set_defaults(run=cmd_tokenizer_train)


# Every command: its name, its line in `batgpt --help`, and the function adding its parser.
# Only the command being run has its module imported (generate, chat and grow import JAX at
# their top), so that `batgpt --help` and `batgpt train --help` answer without JAX or TensorFlow.
COMMANDS = (
    ("train", "pretrain (or resume) a model", "batgpt_jax.cli:add_train_command"),
    ("eval", "evaluate the latest checkpoint of a run", "batgpt_jax.cli:add_eval_command"),
    ("tokenizer", "tokenizer tools", "batgpt_jax.cli:add_tokenizer_command"),
    ("data", "data tools: prepare sources once into indexed files (constant-time resume)",
     "batgpt_jax.data.commands:add_data_command"),
    ("grow", "grow a trained checkpoint into a larger model, verified function-preserving",
     "batgpt_jax.grow.parser:add_grow_command"),
    ("convert", "orbax checkpoints <-> Hugging Face",
     "batgpt_jax.convert.command:add_convert_command"),
    ("generate", "sample text from a checkpoint (on-device decoding; l2r or r2l)",
     "batgpt_jax.sample.commands:add_generate_command"),
    ("chat", "chat with a checkpoint (history, /reset, /system; streamed replies)",
     "batgpt_jax.sample.commands:add_chat_command"),
    ("annotate", "the A/B preference labelling web app",
     "batgpt_jax.annotate.command:add_annotate_command"),
    ("reward", "reward model tools: score preference JSONL (calibrated)",
     "batgpt_jax.align.commands:add_reward_command"),
    ("label", "AI preference labels (RLAIF): a judge checkpoint asked in both orders",
     "batgpt_jax.align.commands:add_label_command"),
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
  """The `batgpt` parser with the full flags of `command` (the others listed by name only)."""
  parser = argparse.ArgumentParser(prog="batgpt", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--debug", action="store_true",
                      help="show the traceback of a bad-input error instead of one line")
  sub = parser.add_subparsers(dest="command", required=True)
  for name, summary, adder in COMMANDS:
    if name == command:
      module, function = adder.split(":")
      getattr(importlib.import_module(module), function)(sub)
    else:
      sub.add_parser(name, help=summary, add_help=False)
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv[:1] == ["annotate"]:  # the web app takes no gin and must not load JAX: its own parser
    from batgpt_jax.annotate import command  # pylint: disable=import-outside-toplevel
    return command.main(argv[1:], prog="batgpt")
  logs.setup_logging()
  debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
  argv, bindings = config.split_bindings([arg for arg in argv if arg != "--debug"])
  command = next((arg for arg in argv if not arg.startswith("-")), None)
  try:
    with logs.native_noise_filtered():  # the commands' imports load TensorFlow and JAX
      args = build_parser(command).parse_args(argv)
      gin_text = config.parse_gin(args.gin_file, bindings)
    return args.run(args, gin_text)
  except Exception as err:  # pylint: disable=broad-except
    message = config.input_error_message(err)  # bad input (also from a tf.data reader thread)
    if message is None or debug:
      traceback.print_exc()  # a bug, or --debug: the whole story
    else:
      print(f"error: {message}", file=sys.stderr)
    # The traceback's frames hold the input pipeline's tf.data iterators; left to interpreter
    # shutdown, their teardown deadlocks (a reader thread's error hung the exit for 700 s).
    # Dropped now, while everything is alive, they end at once.
    traceback.clear_frames(err.__traceback__)
    del err
    gc.collect()
    return 1 if message is None else config.INPUT_ERROR_EXIT


if __name__ == "__main__":
  sys.exit(main())
