"""The `batgpt reward` and `batgpt label` parsers: argparse only, so --help loads no JAX."""

from batgpt_jax import config


def add_reward_command(sub) -> None:
  reward = sub.add_parser("reward", help="reward model tools")
  reward_sub = reward.add_subparsers(dest="reward_command", required=True)
  score = reward_sub.add_parser(
      "score", help="score the answers of preference JSONL records with a reward model")
  config.add_gin_flags(score)
  score.add_argument("--checkpoint", required=True,
                     help="a reward run (TrainConfig.objective = 'reward'), or its step dir")
  score.add_argument("--step", type=int, default=None, help="default: the newest")
  score.add_argument("--input", required=True, help="JSONL: schema, TRL or HH-RLHF pairs")
  score.add_argument("--output", required=True, help="JSONL: each record plus its scores")
  score.add_argument("--format", default="auto", choices=("auto", "schema", "trl", "hh"))
  score.add_argument("--seq_len", type=int, default=512,
                     help="row length: a pair's two sides must fit in it together")
  score.add_argument("--batch", type=int, default=16, help="pairs per forward pass")
  score.add_argument("--vocab", default=None, help="the run's tokenizer (default: DataConfig's)")
  score.set_defaults(run=config.run_later("batgpt_jax.align.reward_score", "run"))


def add_label_command(sub) -> None:
  label = sub.add_parser("label", help="AI preference labels: a judge model asked in both orders")
  config.add_gin_flags(label)
  label.add_argument("--checkpoint", required=True,
                     help="the labeller: a reward model's checkpoint, or any decoder checkpoint "
                          "as a judge asked in both orders")
  label.add_argument("--step", type=int, default=None, help="default: the newest")
  label.add_argument("--input", required=True,
                     help="JSONL pairs (schema, TRL or HH-RLHF); their order is ignored")
  label.add_argument("--output", required=True, help="preference JSONL with source 'ai'")
  label.add_argument("--format", default="auto", choices=("auto", "schema", "trl", "hh"))
  label.add_argument("--seq_len", type=int, default=512, help="row length of a judge prompt")
  label.add_argument("--batch", type=int, default=16, help="judge prompts per forward pass")
  label.add_argument("--vocab", default=None, help="the judge's tokenizer (default: DataConfig's)")
  label.set_defaults(run=config.run_later("batgpt_jax.align.label", "run"))
