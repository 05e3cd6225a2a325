"""The flags that generate, chat and `eval --task=instructions` share: argparse only, so that
building a command's parser (and `--help`) loads neither JAX nor TensorFlow."""

import argparse


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
