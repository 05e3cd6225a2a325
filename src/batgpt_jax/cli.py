"""The `batgpt` command, configured T5X-style by gin files and --gin.X=Y bindings.

  batgpt train --gin_file=gin/smoke.gin --gin.TrainConfig.steps=100
  batgpt eval --gin_file=gin/smoke.gin
  batgpt tokenizer train --gin_file=gin/smoke.gin --output=runs/tok/sp --vocab_size=4096
  batgpt grow --from_checkpoint=runs/small --to_gin=gin/models/big.gin --out=runs/big
  batgpt convert export|import ...
  batgpt generate --gin_file=gin/smoke.gin --prompt="Once upon a time"
"""

import argparse
import difflib
import inspect
import logging
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gin  # noqa: E402  (after the TF logging default)

GIN_DIR = pathlib.Path(__file__).resolve().parents[2] / "gin"
PREEMPTED_EXIT = 143  # 128 + SIGTERM: a checkpoint was saved, and the run is not finished


def _gin_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--gin_file", action="append", default=[],
                      help="a gin file (repeatable); relative paths also resolve under gin/")
  parser.add_argument("--gin.NAME=VALUE", dest="_gin_doc", metavar="",
                      help="a gin binding, e.g. --gin.TrainConfig.steps=100 (repeatable)")


def _split_bindings(argv: list[str]) -> tuple[list[str], list[str]]:
  """Pulls the `--gin.X=Y` flags out of argv as gin bindings `X = Y`."""
  rest, bindings = [], []
  for arg in argv:
    if arg.startswith("--gin.") and "=" in arg:
      name, value = arg[len("--gin."):].split("=", 1)
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
  return rest, bindings


def _suggest(binding_name: str) -> str:
  """A 'did you mean' for a misspelt configurable or parameter name."""
  configurable, _, param = binding_name.split("/")[-1].rpartition(".")
  registry = {selector.split(".")[-1]: item.wrapped
              for selector, item in gin.config._REGISTRY.items()}  # pylint: disable=protected-access
  if configurable not in registry:
    close = difflib.get_close_matches(configurable, list(registry), n=3)
    return f" Did you mean {' or '.join(close)}?" if close else ""
  target = registry[configurable]
  fields = list(inspect.signature(target).parameters)
  close = difflib.get_close_matches(param, fields, n=3)
  hint = f" Did you mean {configurable}.{close[0]}?" if close else ""
  return f"{hint} {configurable} takes: {', '.join(fields)}."


def parse_gin(files: list[str], bindings: list[str]) -> str:
  """Parses gin files and bindings; unknown names become a clear error. Returns the gin text."""
  # Importing the loop registers every configurable (model, data, mesh, optimizer, train).
  import batgpt_jax.train.loop  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  import batgpt_jax.distributed  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  gin.add_config_file_search_path(str(GIN_DIR))
  gin.add_config_file_search_path(str(GIN_DIR.parent))
  try:
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=False)
  except (ValueError, KeyError, IOError) as err:
    message = str(err).splitlines()[0].rstrip(".")
    hint = "".join(_suggest(b.split("=")[0].strip()) for b in bindings
                   if b.split("=")[0].strip().rpartition(".")[0].split("/")[-1] in message)
    raise SystemExit(f"error: bad gin configuration: {message}.{hint}\n"
                     "Check the spelling of the binding against the configurables in "
                     "src/batgpt_jax (e.g. TrainConfig, ModelConfig, DataConfig, MeshConfig, "
                     "OptimizerConfig) and the files under gin/.") from None
  return gin.config_str()


def _configs():
  from batgpt_jax import parallel  # pylint: disable=import-outside-toplevel
  from batgpt_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from batgpt_jax.model.config import ModelConfig  # pylint: disable=import-outside-toplevel
  from batgpt_jax.train import loop, state  # pylint: disable=import-outside-toplevel
  try:
    return dict(cfg=loop.TrainConfig(), model_cfg=ModelConfig(), data_cfg=pipeline.DataConfig(),
                mesh_cfg=parallel.MeshConfig(), opt_cfg=state.OptimizerConfig())
  except ValueError as err:  # the configs validate themselves; say which setting to change
    raise SystemExit(f"error: {str(err).splitlines()[0]}") from None


def join_processes(args) -> None:
  """Starts JAX's multi-process runtime when this is one process of many (before any device use)."""
  from batgpt_jax import distributed  # pylint: disable=import-outside-toplevel
  try:
    distributed.initialize(distributed.DistributedConfig(), distributed.flags_of(args))
  except ValueError as err:
    raise SystemExit(f"error: {err}") from None
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1:  # tell the hosts' interleaved logs apart
    tag = f"[{jax.process_index()}/{jax.process_count()}] "
    for handler in logging.getLogger().handlers:
      handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname).1s {tag}%(message)s",
                                             datefmt="%H:%M:%S"))


def cmd_train(args, gin_text: str) -> int:
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  join_processes(args)
  history = loop.train(**_configs(), gin_text=gin_text)
  if history and history[-1]["kind"] == "preempted":
    return PREEMPTED_EXIT  # saved, but not finished: schedulers should restart it
  return 0


def cmd_eval(args, gin_text: str) -> int:
  from batgpt_jax.train import loop  # pylint: disable=import-outside-toplevel
  join_processes(args)
  loop.evaluate_checkpoint(**_configs(), gin_text=gin_text)
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
  _gin_args(train)
  distributed.add_flags(train)
  train.set_defaults(run=cmd_train)
  evaluate = sub.add_parser("eval", help="evaluate the latest checkpoint of a run")
  _gin_args(evaluate)
  distributed.add_flags(evaluate)
  evaluate.set_defaults(run=cmd_eval)
  tokenizer = sub.add_parser("tokenizer", help="tokenizer tools")
  tok_sub = tokenizer.add_subparsers(dest="tokenizer_command", required=True)
  tok_train = tok_sub.add_parser("train", help="train a SentencePiece model on the configured data")
  _gin_args(tok_train)
  tok_train.add_argument("--output", required=True, help="output prefix: writes PREFIX.model")
  tok_train.add_argument("--vocab_size", type=int, default=32768)
  tok_train.add_argument("--max_documents", type=int, default=200_000)
  tok_train.set_defaults(run=cmd_tokenizer_train)
  # pylint: disable=import-outside-toplevel
  from batgpt_jax import generate
  from batgpt_jax.convert import command as convert_command
  from batgpt_jax.grow import command as grow_command
  grow_command.add_grow_command(sub)
  convert_command.add_convert_command(sub)
  generate.add_generate_command(sub)
  return parser


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s",
                      datefmt="%H:%M:%S", force=True)
  for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # gin logs every search-path miss on the root logger, as an error, before it finds the file.
  quiet_gin = lambda record: not record.pathname.endswith(os.path.join("gin", "resource_reader.py"))
  for handler in logging.getLogger().handlers:
    handler.addFilter(quiet_gin)


def main(argv: list[str] | None = None) -> int:
  setup_logging()
  argv, bindings = _split_bindings(list(sys.argv[1:] if argv is None else argv))
  args = build_parser().parse_args(argv)
  gin_text = parse_gin(args.gin_file, bindings)
  return args.run(args, gin_text)


if __name__ == "__main__":
  sys.exit(main())
