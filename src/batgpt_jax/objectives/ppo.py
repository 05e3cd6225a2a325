"""PPO's math and its two objectives: the policy's (with the anchoring terms) and the value's.

A rollout row is a left-padded prompt of width P followed by R reply slots: `tokens [batch,
P + R]`, with `positions` and `segment_ids` (1 on real tokens, 0 on padding) as for training,
and per reply slot `reply_mask [batch, R]` (1 on the generated tokens, the stop token included).
The model's outputs at columns P - 1 .. P + R - 2 are those that chose the R reply tokens
(`reply_outputs`); every per-token array below is [batch, R] on those slots.

  rewards     r_t = -kl_coef * kl_t, plus the sequence score at the reply's last token
  kl_t        'k1': log pi - log ref;  'k3': (ref / pi - 1) - log(ref / pi)   (both >= 0 in mean)
  GAE         delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lambda A_{t+1}
              (V and A are 0 after the last token); returns = A + V
  policy      max(-A rho, -A clip(rho, 1 - eps, 1 + eps)) - entropy_coef * H,  rho = pi / pi_old
  value       0.5 max((V - G)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - G)^2)

The value model is its own decoder (`value_objective`) or, with a shared backbone, a value head
on the policy (`policy_objective(..., value_head=True)`: one forward pass, policy loss +
value_coef x value loss).

Both objectives follow the contract (`contract.py`) with exact means under any microbatching:
a minibatch carries its own global normalisers on every row (`norm`: its reply-token count;
`share`: 1 / its rows, so the shares of all microbatches add up to 1), and each part of the loss
is its sum over that count. The policy's batch may also hold a `ptx` batch (pretraining rows,
scored by the bidirectional objective: InstructGPT's PPO-ptx) and an `sft` batch (instruction
rows, the SFT objective), each with its own `norm` (its objective's weight total over the whole
batch); they add gamma_ptx and gamma_sft times their mean losses.
"""

import gin
import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax.model import heads, transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import pretrain, sft
from batgpt_jax.objectives.contract import Objective

KL_ESTIMATORS = ("k1", "k3")
VALUE_HEAD = "value_head"


@gin.configurable
def ppo_settings(clip: float = 0.2, value_clip: float = 0.2, entropy_coef: float = 0.0,
                 gamma: float = 1.0, lam: float = 0.95, temperature: float = 1.0,
                 gamma_ptx: float = 0.0, gamma_sft: float = 0.0,
                 kl_estimator: str = "k1", value_coef: float = 0.1) -> dict:
  """PPO's loss knobs, from gin (the loop's own settings are align/ppo.py's PPOConfig)."""
  problems = []
  if clip <= 0 or value_clip <= 0:
    problems.append(f"clip={clip} and value_clip={value_clip} must be > 0 (usually 0.2)")
  if not 0.0 <= gamma <= 1.0 or not 0.0 <= lam <= 1.0:
    problems.append(f"gamma={gamma} and lam={lam} must be in [0, 1]")
  if temperature <= 0:
    problems.append(f"temperature={temperature} must be > 0 (PPO samples its rollouts)")
  if min(entropy_coef, gamma_ptx, gamma_sft, value_coef) < 0:
    problems.append(f"entropy_coef={entropy_coef}, gamma_ptx={gamma_ptx}, gamma_sft={gamma_sft} "
                    f"and value_coef={value_coef} must be >= 0")
  if kl_estimator not in KL_ESTIMATORS:
    problems.append(f"kl_estimator={kl_estimator!r}; expected one of {KL_ESTIMATORS}")
  if problems:
    raise ValueError("Invalid ppo_settings: " + "; ".join(problems) + ".")
  return {"clip": float(clip), "value_clip": float(value_clip),
          "entropy_coef": float(entropy_coef), "gamma": float(gamma), "lam": float(lam),
          "temperature": float(temperature), "gamma_ptx": float(gamma_ptx),
          "gamma_sft": float(gamma_sft), "kl_estimator": kl_estimator,
          "value_coef": float(value_coef)}


# --- per-token math (closed forms; tests check them against the formulas above) -----------------

def kl_estimate(logp, ref_logp, estimator: str):
  """Per-token estimate of KL(pi || ref) from the sampled token's log-probs."""
  if estimator == "k1":
    return logp - ref_logp
  log_ratio = ref_logp - logp
  return jnp.expm1(log_ratio) - log_ratio  # k3: unbiased and never negative


def token_rewards(score, kl, mask, kl_coef):
  """r_t = -kl_coef kl_t on the reply, plus `score` [batch] at its last token. [batch, R]"""
  mask = mask.astype(jnp.float32)
  last = jnp.maximum(jnp.sum(mask, axis=-1).astype(jnp.int32) - 1, 0)
  at_last = jax.nn.one_hot(last, mask.shape[-1], dtype=jnp.float32) * mask
  return -kl_coef * kl * mask + score[:, None] * at_last


def gae(rewards, values, mask, gamma: float, lam: float):
  """(advantages, returns), each [batch, R]: generalised advantage estimation over the reply."""
  mask = mask.astype(jnp.float32)
  values = values * mask
  next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=-1)
  deltas = (rewards + gamma * next_values - values) * mask

  def back(carry, delta_and_mask):  # from the last slot to the first
    delta, m = delta_and_mask
    advantage = (delta + gamma * lam * carry) * m
    return advantage, advantage

  _, advantages = jax.lax.scan(back, jnp.zeros_like(rewards[:, 0]),
                               (deltas.T, mask.T), reverse=True)
  advantages = advantages.T
  return advantages, (advantages + values) * mask


def masked_mean_var(x, mask):
  mask = mask.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(mask), 1.0)
  mean = jnp.sum(x * mask) / count
  return mean, jnp.sum(jnp.square(x - mean) * mask) / count


def whiten(x, mask, eps: float = 1e-8):
  """(x - mean) / std over the masked entries of the whole batch; 0 off the mask."""
  mean, var = masked_mean_var(x, mask)
  return (x - mean) * jax.lax.rsqrt(var + eps) * mask


def policy_terms(logp, old_logp, advantages, clip: float):
  """Per token: (clipped policy loss, clipped (0/1), k3 estimate of KL(pi_old || pi))."""
  log_ratio = logp - old_logp
  ratio = jnp.exp(log_ratio)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
  return (jnp.maximum(unclipped, clipped), (clipped > unclipped).astype(jnp.float32),
          jnp.expm1(log_ratio) - log_ratio)


def value_terms(values, old_values, returns, clip: float):
  """Per token: (clipped value loss, clipped (0/1): the clip moved the value and won)."""
  clipped_values = old_values + jnp.clip(values - old_values, -clip, clip)
  unclipped_loss = jnp.square(values - returns)
  clipped_loss = jnp.square(clipped_values - returns)
  # Where V == V_old up to rounding the two losses tie; only a clip that moved V counts.
  won = (jnp.abs(values - old_values) > clip) & (clipped_loss > unclipped_loss)
  return 0.5 * jnp.maximum(unclipped_loss, clipped_loss), won.astype(jnp.float32)


def entropy(logits):
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


# --- the models on rollout rows -----------------------------------------------------------------

def reply_width(batch) -> int:
  return batch["reply_mask"].shape[-1]


def reply_outputs(x, batch):
  """x [batch, P + R, ...] -> its R columns that chose the reply tokens, [batch, R, ...]."""
  width, replies = batch["tokens"].shape[-1], reply_width(batch)
  return jax.lax.slice_in_dim(x, width - replies - 1, width - 1, axis=1)


def reply_hidden(cfg: ModelConfig, params, batch):
  """The decoder's final hidden states over the reply slots, [batch, R, hidden]."""
  hidden = transformer.apply(cfg, heads.decoder_params(params), batch["tokens"],
                             batch["positions"], batch["segment_ids"], method="hidden_states")
  return reply_outputs(hidden, batch)


def logprobs_from_hidden(cfg: ModelConfig, params, hidden, batch, temperature: float):
  """(log-prob of each reply token [batch, R], the tempered logits [batch, R, vocab] float32)
  from the reply slots' hidden states: the LM head runs on those R columns only."""
  logits = transformer.project(cfg, heads.decoder_params(params), hidden) / temperature
  targets = batch["tokens"][:, -reply_width(batch):]
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None],
                             axis=-1)[..., 0]
  return logp, logits


def reply_logprobs(cfg: ModelConfig, params, batch, temperature: float):
  """(log-prob of each reply token [batch, R], the logits it came from [batch, R, vocab])."""
  return logprobs_from_hidden(cfg, params, reply_hidden(cfg, params, batch), batch, temperature)


def reply_scores(cfg: ModelConfig, params, batch, head: str):
  """A scalar head over the reply slots, [batch, R] float32 (values, or rewards per prefix)."""
  return heads.scores(params, reply_hidden(cfg, params, batch), head)


def sequence_scores(cfg: ModelConfig, params, batch, head: str = "reward_head"):
  """A reward model's score of each whole row, read at its last real token. [batch]"""
  hidden = transformer.apply(cfg, heads.decoder_params(params), batch["tokens"],
                             batch["positions"], batch["segment_ids"], method="hidden_states")
  scores = heads.scores(params, hidden, head)  # [batch, P + R]
  last = jnp.sum(batch["reply_mask"], axis=-1) + batch["tokens"].shape[-1] \
      - reply_width(batch) - 1
  return jnp.take_along_axis(scores, last[:, None], axis=-1)[:, 0]


# --- the objectives -----------------------------------------------------------------------------

def _normalised(batch):
  return jnp.max(batch["norm"]), jnp.sum(batch["share"])


def _value_sums(values, rollout, mask, norm, value_clip: float):
  vf, clipped = value_terms(values, rollout["old_values"], rollout["returns"], value_clip)
  return jnp.sum(vf * mask) / norm, jnp.sum(clipped * mask) / norm


def policy_objective(model_cfg: ModelConfig, settings: dict | None = None,
                     loss_chunk: int = 0, value_head: bool = False) -> Objective:
  """The clipped policy loss and entropy bonus on a rollout minibatch (`batch['ppo']`), plus
  gamma_ptx x the bidirectional loss of `batch['ptx']` and gamma_sft x the SFT loss of
  `batch['sft']` when those are in the batch. value_head: the policy carries the value head
  (a shared backbone) and the loss adds value_coef x the clipped value loss, from the same
  forward pass."""
  settings = ppo_settings() if settings is None else ppo_settings(**settings)
  anchors = {"ptx": pretrain.objective(model_cfg, loss_chunk),
             "sft": sft.objective(model_cfg, loss_chunk)}

  def loss(params, batch, frozen):
    del frozen
    rollout = batch["ppo"]
    norm, share = _normalised(rollout)
    mask = rollout["reply_mask"].astype(jnp.float32)
    hidden = reply_hidden(model_cfg, params, rollout)
    logp, logits = logprobs_from_hidden(model_cfg, params, hidden, rollout,
                                        settings["temperature"])
    pg, clipped, approx_kl = policy_terms(logp, rollout["old_logp"], rollout["advantages"],
                                          settings["clip"])
    ent = entropy(logits)
    loss_sum = jnp.sum((pg - settings["entropy_coef"] * ent) * mask) / norm
    sums = {"policy/loss": jnp.sum(pg * mask) / norm, "policy/clipfrac": jnp.sum(clipped * mask)
            / norm, "policy/approx_kl": jnp.sum(approx_kl * mask) / norm,
            "policy/entropy": jnp.sum(ent * mask) / norm}
    if value_head:
      values = heads.scores(params, hidden, VALUE_HEAD)
      sums["value/loss"], sums["value/clipfrac"] = _value_sums(values, rollout, mask, norm,
                                                               settings["value_clip"])
      loss_sum += settings["value_coef"] * sums["value/loss"]
    for name, objective in anchors.items():
      if name in batch:
        part_sum, _, part_sums = objective.loss(params, batch[name], {})
        part_norm = jnp.max(batch[name]["norm"])
        loss_sum += settings[f"gamma_{name}"] * part_sum / part_norm
        sums[f"{name}/loss"] = part_sum / part_norm
    return loss_sum, share, sums

  return Objective(name="ppo_policy", loss=loss, eval_loss=loss,
                   summarize=lambda loss_sum, total, sums: {"loss": loss_sum, **sums},
                   heads=(VALUE_HEAD,) if value_head else ())


def value_objective(model_cfg: ModelConfig, settings: dict | None = None) -> Objective:
  """The clipped value loss on a rollout minibatch (`batch['ppo']`), for the value model."""
  settings = ppo_settings() if settings is None else ppo_settings(**settings)

  def loss(params, batch, frozen):
    del frozen
    rollout = batch["ppo"]
    norm, share = _normalised(rollout)
    mask = rollout["reply_mask"].astype(jnp.float32)
    values = reply_scores(model_cfg, params, rollout, VALUE_HEAD)
    loss_sum, clipfrac = _value_sums(values, rollout, mask, norm, settings["value_clip"])
    return loss_sum, share, {"value/loss": loss_sum, "value/clipfrac": clipfrac}

  return Objective(name="ppo_value", loss=loss, eval_loss=loss,
                   summarize=lambda loss_sum, total, sums: {"loss": loss_sum, **sums},
                   heads=(VALUE_HEAD,))


def anchor_weight_total(name: str, batch) -> float:
  """The weight total of a whole host (numpy) ptx or sft batch, as its objective counts it (its
  `norm`)."""
  if name == "ptx":
    return float(np.sum(pretrain.token_weights(batch, pretrain.loss_weights()["r2l_weight"],
                                               xp=np)))
  return float(np.sum(batch["loss_weights"], dtype=np.float64))

