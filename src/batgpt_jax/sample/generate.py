"""`batgpt generate`: continue texts (l2r), write what comes before them (r2l), or answer (--chat).

  batgpt generate --gin_file=smoke.gin --prompt="She went to the"
  batgpt generate --checkpoint=runs/smoke --prompt="the end." --direction=r2l
  batgpt generate --checkpoint=runs/sft --chat --prompt="What is 2 + 3?"

Every prompt goes through the engine in one batch (sample/engine.py); the printed text is the
prompt joined to its continuation with the spaces SentencePiece gives the whole (sample/text.py).
Run it with the run's gin files, for its tokenizer (DataConfig) and mesh (MeshConfig).
"""

import argparse
import sys

from batgpt_jax import config
from batgpt_jax.data import chat
from batgpt_jax.sample import flags, options, text


def _generate(args, gin_text: str) -> int:
  del gin_text
  texts = list(args.prompt)
  if args.prompt_file:
    with open(args.prompt_file, encoding="utf-8") as f:
      texts += [line.rstrip("\n") for line in f if line.strip()]
  if not texts:
    raise SystemExit("error: give at least one --prompt (or --prompt_file).")
  if args.chat and args.direction != "l2r":
    raise SystemExit("error: --chat writes replies left to right; drop --direction=r2l.")
  loaded = options.load_from_flags(args)
  sampling = options.sampling_config(args, loaded.vocabulary)
  print(f"# {loaded.source}, {args.direction}", file=sys.stderr)
  model = dict(mesh=loaded.mesh, rules=loaded.rules)
  if args.chat:
    prompts = [chat.chat_prompt(t, system=args.system) for t in texts]
    wholes = text.chat_replies(loaded.cfg, loaded.params, loaded.vocabulary, prompts, sampling,
                               **model)
  else:
    outputs = text.generate_text(loaded.cfg, loaded.params, loaded.vocabulary, texts, sampling,
                                 direction=args.direction, **model)
    wholes = [out + t if args.direction == "r2l" else t + out for t, out in zip(texts, outputs)]
  for i, whole in enumerate(wholes):
    print(f"--- [{i}] ---\n{whole}")
  return 0


cmd_generate = options.report_errors(_generate)


def add_generate_command(subparsers) -> None:
  """Adds `batgpt generate` (run it with the run's gin files, for the tokenizer)."""
  parser = subparsers.add_parser(
      "generate", help="sample text from a checkpoint (on-device decoding; l2r or r2l)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  config.add_gin_flags(parser)
  flags.add_model_flags(parser)
  parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
  parser.add_argument("--prompt_file", default=None, help="one prompt per line")
  parser.add_argument("--direction", choices=text.DIRECTIONS, default="l2r",
                      help="l2r continues the text; r2l writes what comes before it")
  parser.add_argument("--chat", action="store_true",
                      help="wrap each prompt in BatGPT's chat template and stop at <eop>")
  parser.add_argument("--system", default=None, help="system prompt for --chat")
  flags.add_sampling_flags(parser)
  parser.set_defaults(run=cmd_generate)
