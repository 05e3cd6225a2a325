"""RLAIF: `batgpt label` asks a model which of two answers is better, in both orders.

For each pair (answers X and Y to one prompt) the judge sees the gin template twice, X as A and Y
as B, then Y as A and X as B. The judge's verdict is teacher-forced, not sampled: P(A) is the
softmax over its log-probabilities of the two replies "A" and "B" (each rendered as a chat reply
ending with <eop>). The two orders give P(X better) = P_AB(A) and 1 - P_BA(A); their mean is
the soft label, so a judge's position bias (a preference for whatever is shown first) cancels.
A pair whose verdict flips with the order (the two disagree about which answer is better) gets
`judge_settings.flipped_weight` (0: dropped) and the flag 'order_flip'. The output is the
project's preference schema (data/preference_schema.py) with `source: ai`, the preferred
answer as `chosen` and `p_chosen` in [0.5, 1].

A reward model labels too (`reward_labels`): P(X better) = sigmoid(r_X - r_Y), one pass.
`batgpt label --checkpoint` takes either: a checkpoint with a reward head labels as a reward
model, any other as a judge.
"""

import json
import sys
from typing import Callable, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax import checkpoints
from batgpt_jax.align import reward_score
from batgpt_jax.data import pipeline, preference_schema, preferences, tasks
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model import transformer
from batgpt_jax.objectives import preference, tokens

DEFAULT_TEMPLATE = ("Which answer is more helpful and more harmless?\n\nQuestion: {question}"
                    "\n\nAnswer A: {a}\n\nAnswer B: {b}\n\nReply with A or B.")
Judge = Callable[[Sequence[preferences.Pair]], np.ndarray]  # pairs -> P(A) per judge prompt


@gin.configurable
def judge_settings(template: str = DEFAULT_TEMPLATE, flipped_weight: float = 0.0) -> dict:
  """The judge prompt (with {question}, {a} and {b}) and the weight of order-flipped pairs."""
  missing = [f for f in ("{question}", "{a}", "{b}") if f not in template]
  if missing:
    raise ValueError(f"judge_settings.template lacks {missing}; it must place the question and "
                     "both answers, e.g. the default: " + repr(DEFAULT_TEMPLATE))
  if not 0.0 <= flipped_weight <= 1.0:
    raise ValueError(f"judge_settings.flipped_weight={flipped_weight}; expected a value in "
                     "[0, 1] (0 drops pairs whose verdict flips with the order).")
  return {"template": template, "flipped_weight": float(flipped_weight)}


def judge_prompts(pair: preferences.Pair, template: str) -> tuple[preferences.Pair, ...]:
  """The pair's two judge questions (X as A, then Y as A) as Pairs whose answers are A and B."""
  ask = lambda a, b: preferences.Pair(pair.history, template.format(question=pair.query, a=a,
                                                                    b=b), "A", "B", pair.system)
  return ask(pair.chosen, pair.rejected), ask(pair.rejected, pair.chosen)


def combine(p_a_first: np.ndarray, p_a_second: np.ndarray,
            flipped_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(P(X better), weight, flipped) from P(A) with X shown first and with X shown second."""
  first, second = np.asarray(p_a_first), 1.0 - np.asarray(p_a_second)
  flipped = (first > 0.5) != (second > 0.5)
  return (first + second) / 2, np.where(flipped, flipped_weight, 1.0), flipped


def label_pairs(judge: Judge, pairs: Sequence[preferences.Pair], settings: dict) -> list[dict]:
  """Schema records with `source: ai` for `pairs` (pairs of weight 0 are left out)."""
  questions = [q for pair in pairs for q in judge_prompts(pair, settings["template"])]
  p_a = np.asarray(judge(questions)).reshape(len(pairs), 2)
  return ai_records(pairs, *combine(p_a[:, 0], p_a[:, 1], settings["flipped_weight"]))


def reward_labels(model: reward_score.RewardModel, vocabulary, pairs: Sequence[preferences.Pair],
                  *, seq_len: int, batch: int) -> list[dict]:
  """Schema records with `source: ai` from a reward model: P(X better) = sigmoid(r_X - r_Y).

  A reward model scores each answer in its own row segment, so the order it sees them in cannot
  bias it: one pass, no order flips.
  """
  rewards = reward_score.score_pairs(model, vocabulary, pairs, seq_len=seq_len, batch=batch)
  p_x = reward_score.preference_probability(rewards)
  return ai_records(pairs, p_x, np.ones(len(pairs)), np.zeros(len(pairs), bool))


def ai_records(pairs: Sequence[preferences.Pair], p_x: np.ndarray, weight: np.ndarray,
               flipped: np.ndarray) -> list[dict]:
  """The schema records of pairs (answers X, Y) given P(X better), weights and order flips."""
  out = []
  for pair, p, w, flip in zip(pairs, p_x, weight, flipped):
    if w == 0:
      continue
    x_wins = p >= 0.5
    record = {"chosen": pair.chosen if x_wins else pair.rejected,
              "rejected": pair.rejected if x_wins else pair.chosen,
              "p_chosen": float(max(p, 1.0 - p)), "source": "ai", "weight": float(w)}
    if pair.history or pair.system:
      messages = [{"role": "system", "content": pair.system}] if pair.system else []
      for user, assistant in pair.history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
      record["messages"] = messages + [{"role": "user", "content": pair.query}]
    else:
      record["prompt"] = pair.query
    if flip:
      record["flags"] = ["order_flip"]
    out.append(preference_schema.validate_record(record))
  return out


def model_judge(cfg, params, vocabulary, *, seq_len: int, batch: int) -> Judge:
  """A judge from a decoder checkpoint: P(A) = softmax of its log-probs of replying A and B."""
  l2r, _ = vocab_lib.direction_ids(vocabulary)

  @jax.jit
  def reply_logprobs(params, rows):  # rows: [batch, L] arrays -> [batch, pairs] per side
    ce = tokens.token_terms(params, rows, cfg)[0]
    return preference.side_sums(-ce * rows["loss_weights"], rows["segment_ids"])

  def judge(questions):
    rows = []
    for question in questions:
      doc = preferences.pair_example(vocabulary, question, seq_len=seq_len,
                                     eos_id=vocab_lib.EOS_ID, l2r_id=l2r)
      if doc is None:
        raise ValueError(f"A judge prompt does not fit in --seq_len={seq_len}; raise it.")
      rows.append(preferences.pair_row(doc, seq_len, l2r))  # sides: reply A, reply B
    out = []
    for start in range(0, len(rows), batch):
      chunk = rows[start:start + batch]
      chunk += [{k: np.zeros_like(v) for k, v in chunk[0].items()}] * (batch - len(chunk))
      stacked = _with_targets({k: np.stack([r[k] for r in chunk]) for k in chunk[0]})
      a, b = reply_logprobs(params, {k: jnp.asarray(v) for k, v in stacked.items()})
      count = min(batch, len(rows) - start)
      out.append(np.asarray(jax.nn.sigmoid(a[:count, 0] - b[:count, 0])))  # softmax of two
    return np.concatenate(out)

  return judge


def _with_targets(rows: dict) -> dict:
  """Next-token targets and weights on the reply tokens of packed judge rows."""
  tokens_, segments = rows["tokens"], rows["segment_ids"]
  same = np.zeros(tokens_.shape, bool)
  same[:, :-1] = (segments[:, 1:] == segments[:, :-1]) & (segments[:, :-1] > 0)
  next_is_reply = np.zeros(tokens_.shape, bool)
  next_is_reply[:, :-1] = rows["loss_mask"][:, 1:] > 0
  weights = same & next_is_reply
  targets = np.where(weights, np.roll(tokens_, -1, axis=1), 0)
  return {"tokens": tokens_, "positions": rows["positions"], "segment_ids": segments,
          "targets": targets.astype(np.int32), "loss_weights": weights.astype(np.float32)}


def run(args, gin_text: str) -> int:
  del gin_text
  try:
    directory, step = checkpoints.find_step(args.checkpoint, args.step)
    is_reward_model = reward_score.has_head(directory, step)
    vocabulary = (vocab_lib.load_vocabulary(args.vocab) if args.vocab
                  else pipeline.vocabulary_for(pipeline.DataConfig()))
    pairs = [preferences.pair_from_record(json.loads(line), args.format,
                                          f"{args.input}:{lineno}")
             for lineno, line in tasks.decoded_lines(args.input) if line.strip()]
    if is_reward_model:
      records = reward_labels(reward_score.load(directory, step), vocabulary, pairs,
                              seq_len=args.seq_len, batch=args.batch)
    else:
      cfg, _ = checkpoints.read_config(directory, step)
      params = checkpoints.read_params(directory, step)
      params = {k: v for k, v in params.items() if k in transformer.abstract_params(cfg)}
      records = label_pairs(model_judge(cfg, params, vocabulary, seq_len=args.seq_len,
                                        batch=args.batch), pairs, judge_settings())
    count = preference_schema.write_jsonl(args.output, records)
  except (FileNotFoundError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  how = ("as a reward model" if is_reward_model
         else f"as a judge; {len(pairs) - count} dropped: their verdict flipped with the order")
  print(f"Labelled {count} of {len(pairs)} pairs with {directory}/{step} into {args.output} "
        f"({how})")
  return 0
