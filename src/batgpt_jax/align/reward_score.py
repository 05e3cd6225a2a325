"""`batgpt reward score`: preference JSONL in, the same records with their answers' scores out.

Each record's two answers are scored as one pair row (data/preferences.py: the same rendering,
the same <eop> position as in training), so a score is exactly what the reward model computed
while it trained. With the calibration saved in the checkpoint (the mean and std of the
reward model's scores on its held-out split, train/loop.py), the output holds
`score_chosen` and `score_rejected` normalised, (r - mean) / std, and `reward_chosen`,
`reward_rejected` raw; without one, the scores are the raw rewards and the log says so.
"""

import dataclasses
import json
import logging
import sys

import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax import checkpoints, parallel
from batgpt_jax.data import pipeline, preferences, tasks
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import preference
from batgpt_jax.train import state as train_state

HEAD = "reward_head"


@dataclasses.dataclass(frozen=True)
class RewardModel:
  cfg: ModelConfig
  params: dict
  calibration: dict | None
  source: str


def has_head(directory: str, step: int) -> bool:
  """Whether the checkpoint at directory/step holds a reward head."""
  return any(name.startswith(HEAD + "/") for name in checkpoints.param_shapes(directory, step))


def load(checkpoint: str, step: int | None = None, mesh=None, rules=()) -> RewardModel:
  """A reward model's parameters (decoder and head) and calibration from its checkpoint."""
  directory, step = checkpoints.find_step(checkpoint, step)
  cfg, _ = checkpoints.read_config(directory, step)
  if not has_head(directory, step):
    raise ValueError(f"{directory}/{step} has no {HEAD}: it is not a reward model. Train one "
                     "with --gin_file=reward.gin (TrainConfig.objective = 'reward').")
  shardings = None if mesh is None else train_state.param_shardings(cfg, mesh, rules, (HEAD,))
  return RewardModel(cfg, checkpoints.read_params(directory, step, shardings),
                     checkpoints.read_calibration(directory, step), f"{directory}/{step}")


def normalised(rewards: np.ndarray, calibration: dict | None) -> np.ndarray:
  if not calibration:
    return rewards
  return (rewards - calibration["mean"]) / max(calibration["std"], 1e-6)


def preference_probability(rewards: np.ndarray) -> np.ndarray:
  """P(the first answer is better) = sigmoid(r_first - r_second), from rewards [n, 2]."""
  rewards = np.asarray(rewards)
  return 0.5 * (1.0 + np.tanh((rewards[:, 0] - rewards[:, 1]) / 2.0))  # sigmoid, no overflow


def score_pairs(model: RewardModel, vocabulary, pairs, *, seq_len: int,
                batch: int) -> np.ndarray:
  """Raw rewards [n, 2] (chosen, rejected) of `pairs`, one pair a row, `batch` rows a call."""
  l2r, _ = vocab_lib.direction_ids(vocabulary)
  rows = []
  for n, pair in enumerate(pairs):
    doc = preferences.pair_example(vocabulary, pair, seq_len=seq_len, eos_id=vocab_lib.EOS_ID,
                                   l2r_id=l2r)
    if doc is None:
      raise ValueError(f"Pair {n} does not fit in --seq_len={seq_len} even without its history; "
                       "raise --seq_len.")
    rows.append(preferences.pair_row(doc, seq_len, l2r))
  scorer = jax.jit(preference.answer_rewards, static_argnums=0)
  out = np.zeros((len(rows), 2), np.float32)
  for start in range(0, len(rows), batch):
    chunk = rows[start:start + batch]
    chunk += [{k: np.zeros_like(v) for k, v in chunk[0].items()}] * (batch - len(chunk))
    stacked = {k: jnp.asarray(np.stack([r[k] for r in chunk])) for k in chunk[0]}
    chosen, rejected = scorer(model.cfg, model.params, stacked)  # [batch, pairs]
    count = min(batch, len(rows) - start)
    out[start:start + count] = np.stack([chosen[:count, 0], rejected[:count, 0]], axis=1)
  return out


def score_file(model: RewardModel, vocabulary, input_path: str, output_path: str, *,
               fmt: str = "auto", seq_len: int = 512, batch: int = 16) -> int:
  """Scores every record of `input_path` into `output_path`; returns the record count."""
  records, pairs = [], []
  for lineno, line in tasks.decoded_lines(input_path):
    if line.strip():
      records.append(json.loads(line))
      pairs.append(preferences.pair_from_record(records[-1], fmt, f"{input_path}:{lineno}"))
  rewards = score_pairs(model, vocabulary, pairs, seq_len=seq_len, batch=batch)
  scores = normalised(rewards, model.calibration)
  with open(output_path, "w", encoding="utf-8") as f:
    for record, raw, score in zip(records, rewards, scores):
      out = dict(record, score_chosen=float(score[0]), score_rejected=float(score[1]),
                 reward_chosen=float(raw[0]), reward_rejected=float(raw[1]))
      f.write(json.dumps(out, ensure_ascii=False, sort_keys=True) + "\n")
  return len(records)


def run(args, gin_text: str) -> int:
  del gin_text
  try:
    mesh_cfg = parallel.MeshConfig()
    mesh, rules = ((parallel.mesh_from_config(mesh_cfg), parallel.check_rules(mesh_cfg.axis_rules))
                   if mesh_cfg.axis_rules else (None, ()))
    model = load(args.checkpoint, args.step, mesh, rules)
    vocabulary = (vocab_lib.load_vocabulary(args.vocab) if args.vocab
                  else pipeline.vocabulary_for(pipeline.DataConfig()))
    if model.calibration is None:
      logging.warning("%s has no calibration (the run never evaluated): writing raw rewards.",
                      model.source)
    count = score_file(model, vocabulary, args.input, args.output, fmt=args.format,
                       seq_len=args.seq_len, batch=args.batch)
  except (FileNotFoundError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(f"Scored {count} pairs with {model.source} into {args.output}")
  return 0
