"""What `generate` and `chat` share at run time: sampling settings, a checkpoint on the mesh."""

import dataclasses
import sys
from typing import Sequence

from jax.sharding import Mesh

from batgpt_jax import checkpoints, parallel
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import engine
from batgpt_jax.train import state as train_state


def stop_ids(vocabulary, stops: Sequence[str]) -> tuple[int, ...]:
  """EOS plus each `--stop`: a token id, or a piece of the tokenizer such as '<eop>'."""
  ids = [vocab_lib.EOS_ID]
  for stop in stops:
    if stop.isdigit():
      ids.append(int(stop))
      continue
    piece_id = vocabulary.tokenizer.piece_to_id(stop)
    if piece_id == vocab_lib.UNK_ID or vocabulary.tokenizer.id_to_piece(piece_id) != stop:
      raise SystemExit(f"error: --stop={stop!r} is not a single piece of the tokenizer; give a "
                       "piece (e.g. '<eop>') or a token id.")
    ids.append(piece_id)
  return tuple(dict.fromkeys(ids))


def sampling_config(args, vocabulary) -> engine.SamplingConfig:
  return engine.SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                               stop_ids=stop_ids(vocabulary, args.stop))


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A checkpoint ready to sample: its model, parameters placed on the mesh, and tokenizer."""
  cfg: ModelConfig
  params: dict
  vocabulary: object
  mesh: Mesh | None
  rules: tuple
  source: str  # checkpoints_dir/step, for the log line


def mesh_and_rules() -> tuple[Mesh | None, tuple]:
  """The gin-configured training mesh and rules; no mesh when no rules are configured."""
  mesh_cfg = parallel.MeshConfig()
  if not mesh_cfg.axis_rules:
    return None, ()
  return parallel.mesh_from_config(mesh_cfg), parallel.check_rules(mesh_cfg.axis_rules)


def load(checkpoint: str, step: int | None = None, *, vocab_path: str | None = None,
         mesh: Mesh | None = None, rules=()) -> Loaded:
  """A checkpoint (run, checkpoints or step dir) ready to sample, its parameters on `mesh`.

  The tokenizer is `vocab_path`, else the gin-configured DataConfig's (the run's gin files).
  """
  # pylint: disable-next=import-outside-toplevel
  from batgpt_jax.data import pipeline
  checkpoints_dir, step = checkpoints.find_step(checkpoint, step)
  cfg, _ = checkpoints.read_config(checkpoints_dir, step)
  vocabulary = (vocab_lib.load_vocabulary(vocab_path) if vocab_path
                else pipeline.vocabulary_for(pipeline.DataConfig()))
  if vocabulary.vocab_size > cfg.vocab_size:
    raise SystemExit(f"error: the tokenizer has {vocabulary.vocab_size} pieces but the model "
                     f"only {cfg.vocab_size}; pass the run's tokenizer with --vocab.")
  shardings = None if mesh is None else train_state.param_shardings(cfg, mesh, rules)
  params = checkpoints.read_params(checkpoints_dir, step, shardings)
  return Loaded(cfg=cfg, params=params, vocabulary=vocabulary, mesh=mesh,
                rules=tuple(rules) if mesh is not None else (),
                source=f"{checkpoints_dir}/{step}")


def load_from_flags(args) -> Loaded:
  """`load` for --checkpoint (default TrainConfig.run_dir), --step, --vocab, on the gin mesh."""
  # pylint: disable-next=import-outside-toplevel
  from batgpt_jax.train import loop
  mesh, rules = mesh_and_rules()
  return load(args.checkpoint or loop.TrainConfig().run_dir, args.step, vocab_path=args.vocab,
              mesh=mesh, rules=rules)


def report_errors(run):
  """Wraps a command: a missing checkpoint or bad settings print one line and exit 2."""
  def wrapped(args, gin_text: str) -> int:
    try:
      return run(args, gin_text)
    except (FileNotFoundError, ValueError) as err:
      print(f"error: {err}", file=sys.stderr)
      return 2
  return wrapped
