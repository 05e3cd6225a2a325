"""`batgpt generate` at run time (its parser and help text: sample/commands.py)."""

import sys

from batgpt_jax.data import chat
from batgpt_jax.sample import options, text


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
                                 direction=args.direction, unit=_r2l_unit(args), **model)
    wholes = [out + t if args.direction == "r2l" else t + out for t, out in zip(texts, outputs)]
  for i, whole in enumerate(wholes):
    print(f"--- [{i}] ---\n{whole}")
  return 0


def _r2l_unit(args) -> str:
  """--r2l_unit, else the run's DataConfig.r2l_unit (its gin files): how its R2L data reads."""
  if args.r2l_unit:
    return args.r2l_unit
  from batgpt_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  return pipeline.DataConfig().r2l_unit


cmd_generate = options.report_errors(_generate)
