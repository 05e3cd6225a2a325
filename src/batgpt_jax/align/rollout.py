"""PPO rollouts: prompts -> sampled replies (the engine) -> scored rows with advantages.

`rollout_rows` lays each prompt and its sampled reply out in one row of fixed width: the prompt
left-padded to `max_prompt_len` (P), the reply in the next `max_new_tokens` (R) slots, padding
after it (objectives/ppo.py reads the reply slots from there). The shapes never change, so the
scoring and every update step compile once.

`score_rollout` runs the four roles on those rows in one jitted call: the policy's and the
reference's log-probabilities of the sampled tokens (at the sampling temperature; the policy's
are recomputed by the training forward pass, so the first update's ratio is exactly 1), the
value model's values, and the reward model's score at the reply's last token, normalised by its
calibration and docked `missing_eop_penalty` when the reply hit the length limit without
stopping. The per-token KL to the reference (k1 or k3) is folded into the rewards with the KL
coefficient; GAE gives advantages (whitened over the batch) and returns.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax.data import prompts as prompts_lib
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model import heads
from batgpt_jax.objectives import ppo
from batgpt_jax.sample import engine

ROLES = ("policy", "reference", "value", "reward")


def rollout_rows(prompts: Sequence[prompts_lib.Prompt], samples: engine.Samples, *,
                 max_prompt_len: int) -> dict[str, np.ndarray]:
  """Prompts and their samples as rows [batch, P + R]: tokens, positions, segment_ids, plus
  reply_mask [batch, R], stopped [batch] and the engine's logprobs [batch, R]."""
  replies = np.asarray(samples.tokens).shape[1]
  rows, width = len(prompts), max_prompt_len + replies
  tokens = np.full((rows, width), vocab_lib.PAD_ID, np.int32)
  lengths = np.asarray(samples.lengths, np.int32)
  reply_mask = (np.arange(replies)[None, :] < lengths[:, None]).astype(np.int32)
  segment_ids = np.zeros((rows, width), np.int32)
  positions = np.zeros((rows, width), np.int32)
  for row, prompt in enumerate(prompts):
    if len(prompt.ids) > max_prompt_len:
      raise ValueError(f"A prompt of {len(prompt.ids)} tokens is longer than max_prompt_len="
                       f"{max_prompt_len}.")
    start = max_prompt_len - len(prompt.ids)
    end = max_prompt_len + lengths[row]
    tokens[row, start:max_prompt_len] = prompt.ids
    tokens[row, max_prompt_len:] = np.where(reply_mask[row], samples.tokens[row],
                                            vocab_lib.PAD_ID)
    segment_ids[row, start:end] = 1
    positions[row, start:end] = np.arange(end - start)
  return {"tokens": tokens, "positions": positions, "segment_ids": segment_ids,
          "reply_mask": reply_mask, "stopped": np.asarray(samples.stopped, np.int32),
          "sample_logp": np.asarray(samples.logprobs, np.float32)}


@functools.partial(jax.jit, static_argnames=("cfgs", "settings", "missing_eop_penalty",
                                             "normalise", "shared_backbone"))
def score_rollout(params: dict, batch: dict, kl_coef, calibration, *, cfgs: tuple,
                  settings: tuple, missing_eop_penalty: float, normalise: bool,
                  shared_backbone: bool = False) -> dict:
  """The scored rollout: per-token [batch, R] old_logp, ref_logp, kl, old_values, rewards,
  advantages (whitened), returns; per row [batch] score (what the rewards used) and raw_score.

  params: {role: parameters} for ROLES; cfgs: their ModelConfigs in that order; settings:
  `ppo.ppo_settings()` as sorted items (hashable, static); calibration: (mean, std) of the
  reward model's scores. shared_backbone: the values come from the policy's own value head, read
  off the policy's forward pass (params['value'] is not used).
  """
  s = dict(settings)
  policy_cfg, _, value_cfg, reward_cfg = cfgs
  mask = batch["reply_mask"].astype(jnp.float32)
  hidden = ppo.reply_hidden(policy_cfg, params["policy"], batch)
  logp, _ = ppo.logprobs_from_hidden(policy_cfg, params["policy"], hidden, batch,
                                     s["temperature"])
  ref_logp, _ = ppo.reply_logprobs(policy_cfg, params["reference"], batch, s["temperature"])
  if shared_backbone:
    values = heads.scores(params["policy"], hidden, ppo.VALUE_HEAD) * mask
  else:
    values = ppo.reply_scores(value_cfg, params["value"], batch, ppo.VALUE_HEAD) * mask
  raw = ppo.sequence_scores(reward_cfg, params["reward"], batch)
  score = (raw - calibration[0]) / jnp.maximum(calibration[1], 1e-6) if normalise else raw
  score = score + jnp.where(batch["stopped"] > 0, 0.0, missing_eop_penalty)
  kl = ppo.kl_estimate(logp, ref_logp, s["kl_estimator"]) * mask
  rewards = ppo.token_rewards(score, kl, mask, kl_coef)
  advantages, returns = ppo.gae(rewards, values, mask, s["gamma"], s["lam"])
  return {"old_logp": logp * mask, "ref_logp": ref_logp * mask, "kl": kl, "old_values": values,
          "rewards": rewards, "advantages": ppo.whiten(advantages, mask), "returns": returns,
          "score": score, "raw_score": raw}


def explained_variance(values: np.ndarray, returns: np.ndarray, mask: np.ndarray) -> float:
  """1 - Var(returns - values) / Var(returns) over the reply tokens (1: perfect, <= 0: none)."""
  m = mask.astype(bool)
  var = np.var(returns[m])
  return float(1.0 - np.var(returns[m] - values[m]) / var) if var > 0 else float("nan")


def rollout_metrics(rows: dict, scored: dict, kl_coef: float) -> dict:
  """Per-iteration means over the rollout batch (host side)."""
  mask = rows["reply_mask"].astype(np.float32)
  lengths = mask.sum(-1)
  kl_sequence = scored["kl"].sum(-1)
  return {"reward/raw": float(scored["raw_score"].mean()),
          "reward/score": float(scored["score"].mean()),
          "kl/sequence": float(kl_sequence.mean()), "kl/coef": float(kl_coef),
          "reward/with_kl": float(scored["rewards"].sum(-1).mean()),
          "reply/length": float(lengths.mean()), "reply/eop_rate": float(rows["stopped"].mean()),
          "value/explained_variance": explained_variance(scored["old_values"],
                                                         scored["returns"], mask),
          "value/mean": float((scored["old_values"] * mask).sum() / max(mask.sum(), 1.0)),
          "rollout/logprob_gap": float(np.abs((rows["sample_logp"] - scored["old_logp"])
                                              * mask).max())}
