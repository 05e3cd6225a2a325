"""The parsers of `batgpt generate` and `batgpt chat`, and the flags they share with
`batgpt eval --task=instructions`. Argparse only: building a parser (and `--help`) loads neither
JAX nor TensorFlow; a command's module is imported when it runs.
"""

import argparse

from batgpt_jax import config

GENERATE_HELP = """Continue texts (l2r), write what comes before them (r2l), or answer (--chat).

  batgpt generate --gin_file=smoke.gin --prompt="She went to the"
  batgpt generate --checkpoint=runs/smoke --prompt="the end." --direction=r2l
  batgpt generate --checkpoint=runs/sft --chat --prompt="What is 2 + 3?"

Every prompt goes through the engine in one batch (sample/engine.py); the printed text is the
prompt joined to its continuation with the spaces SentencePiece gives the whole (sample/text.py).
Run it with the run's gin files, for its tokenizer (DataConfig) and mesh (MeshConfig)."""

CHAT_HELP = """Talk to a checkpoint in BatGPT's chat template; the reply is printed as it comes.

  batgpt chat --checkpoint=runs/sft [--gin_file=sft.gin] [--system="Be brief."]
  echo "What is 2 + 3?" | batgpt chat --checkpoint=runs/sft

Each turn renders the whole conversation (`data.chat.chat_prompt`: the system prompt, every
earlier turn, the new query) and samples the reply until <eop> (or EOS, or --max_new_tokens).
When the conversation no longer fits the model's max_len, its oldest turns are dropped first and
the system prompt is kept, as the instruction data does. Commands: /reset forgets the history,
/system TEXT sets the system prompt (/system alone clears it; the history stays), /quit ends.
On a terminal it prompts `you> ` and prints `bot> ` before each reply; with stdin piped it reads
one query per line and prints one reply per line.

Streaming: the engine's plain decode never leaves the device until the batch is done. Chat alone
passes it a host callback (`on_token`, an `io_callback` inside the loop) that hands each token
over as it is sampled; decoding in device-side chunks would instead cost a re-entry, with its
dispatch and state hand-over, every chunk, and print in bursts."""


def add_model_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", default=None,
                      help="run dir, checkpoints dir or step dir (default: TrainConfig.run_dir)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--vocab", default=None,
                      help="SentencePiece model (default: DataConfig's vocabulary)")


def add_sampling_flags(parser: argparse.ArgumentParser, *, max_new_tokens: int = 64) -> None:
  parser.add_argument("--max_new_tokens", type=int, default=max_new_tokens)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
  parser.add_argument("--top_k", type=int, default=0, help="0 is off")
  parser.add_argument("--top_p", type=float, default=1.0, help="1.0 is off")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--stop", action="append", default=[],
                      help="extra stop piece or id (repeatable); EOS always stops")


def add_generate_command(subparsers) -> None:
  """Adds `batgpt generate` (run it with the run's gin files, for the tokenizer)."""
  parser = subparsers.add_parser(
      "generate", help="sample text from a checkpoint (on-device decoding; l2r or r2l)",
      description=GENERATE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
  config.add_gin_flags(parser)
  add_model_flags(parser)
  parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
  parser.add_argument("--prompt_file", default=None, help="one prompt per line")
  parser.add_argument("--direction", choices=("l2r", "r2l"), default="l2r",
                      help="l2r continues the text; r2l writes what comes before it")
  parser.add_argument("--r2l_unit", choices=("token", "word"), default=None,
                      help="what an r2l prompt reverses: the model's training unit (default: "
                           "DataConfig.r2l_unit of the gin files)")
  parser.add_argument("--chat", action="store_true",
                      help="wrap each prompt in BatGPT's chat template and stop at <eop>")
  parser.add_argument("--system", default=None, help="system prompt for --chat")
  add_sampling_flags(parser)
  parser.set_defaults(run=config.run_later("batgpt_jax.sample.generate", "cmd_generate"))


def add_chat_command(subparsers) -> None:
  """Adds `batgpt chat`."""
  parser = subparsers.add_parser(
      "chat", help="chat with a checkpoint (history, /reset, /system; streamed replies)",
      description=CHAT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
  config.add_gin_flags(parser)
  add_model_flags(parser)
  parser.add_argument("--system", default=None, help="the system prompt to start with")
  parser.add_argument("--show_prompt", action="store_true",
                      help="print each rendered prompt (what the model reads) to stderr")
  add_sampling_flags(parser, max_new_tokens=256)
  parser.set_defaults(run=config.run_later("batgpt_jax.sample.chat", "cmd_chat"))
