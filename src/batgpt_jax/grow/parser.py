"""The `batgpt grow` parser: argparse only, so that `batgpt grow --help` loads no JAX."""

from batgpt_jax import config
from batgpt_jax.grow import modes


def add_grow_command(subparsers) -> None:
  grow = subparsers.add_parser(
      "grow", help="grow a trained checkpoint into a larger model, verified function-preserving")
  grow.add_argument("--from_checkpoint", required=True,
                    help="run directory (or its checkpoints/ directory) of the small model")
  grow.add_argument("--to_gin", required=True,
                    help="gin file of the target model (its ModelConfig, mesh and optimizer)")
  grow.add_argument("--out", required=True, help="new run directory for the grown checkpoint")
  config.add_gin_flags(grow)  # applied on top of --to_gin
  grow.add_argument("--depth_mode", choices=modes.DEPTH_MODES, default="interleave",
                    help="where new layers go: 'interleave' (after old ones, evenly) or "
                         "'append' (identity blocks, function-preserving), or 'stack' (copy the "
                         "stack g times, G_stack: NOT function-preserving)")
  grow.add_argument("--noise_snr_db", type=float, default=None,
                    help="paired symmetry-breaking noise at this signal-to-noise ratio in dB "
                         "(the function stays exact); default: none")
  grow.add_argument("--optimizer", choices=modes.OPTIMIZER_MODES, default="carry",
                    help="carry the Adam moments through the growth, or reset them to zero")
  grow.add_argument("--schedule", choices=modes.SCHEDULE_MODES, default="restart",
                    help="restart the step and learning-rate schedule at 0, continue the source's "
                         "step, or rescale it: the same fraction of the target's schedule as the "
                         "source had reached of its own (see docs/growth.md)")
  grow.add_argument("--seed", type=int, default=0, help="seed of the noise")
  grow.add_argument("--tolerance", type=float, default=None,
                    help="largest probe logit difference accepted (default 1e-4 in float32)")
  grow.set_defaults(run=config.run_later("batgpt_jax.grow.command", "run"))
