"""Preference objectives: the pairwise reward-model loss and the DPO family (DPO, IPO, cDPO).

Batches come from data/preferences.py: a pair is two adjacent segments of one row, its chosen
side (segment 2p - 1) and its rejected side (segment 2p), each `[<l2r>] prompt answer <eop> EOS`.
Per token: `loss_weights` is 1 where the next token is part of an answer, `score_at` is 1 at the
last token of each answer (its <eop>; never a pad), and `pair_weight`, `pair_margin`,
`pair_p_chosen` hold the pair's scalars on each of its tokens. `side_sums` turns per-token values
into per-pair [batch, pairs] values; everything after it is per pair.

Soft labels. With p = p_chosen every loss is p * f(chosen over rejected) + (1 - p) * f(rejected
over chosen): linear in p, so a flipped label is p = 0 and a tie is p = 0.5 (data/preferences.py
maps `tie: true` to p = 0.5 and margin 0). Label-smoothed DPO (conservative DPO, eps) is the same
formula with p' = p (1 - eps) + (1 - p) eps, exactly.

  reward  f(d) = -log sigmoid(d - margin),           d = r_chosen - r_rejected
  dpo     f(h) = -log sigmoid(beta h),               h = (log pi_c - log ref_c)
  ipo     f(h) = (h - 1 / (2 beta))^2                      - (log pi_r - log ref_r)

With `dpo_settings.sft_coef = alpha > 0` the DPO family adds the preferred answer's own
likelihood (RPO, TRL's `rpo_alpha`): alpha * (p * nll_c + (1 - p) * nll_r), nll the answer's mean
negative log-probability per token. DPO alone can widen h by lowering both answers (the rejected
faster); on answers that differ in one place, such as the planted pairs, that leaves the chosen
answer no likelier and the samples malformed. The term keeps the preferred answer's probability up.

Each pair's loss is multiplied by its weight; loss_sum and weight_total are sums over the pairs of
the batch (the contract's sums). Accuracy counts decided pairs (p != 0.5): correct when the
model's difference has the label's sign. `margin` is used by the reward loss only.
"""

import gin
import jax
import jax.numpy as jnp

from batgpt_jax.model import heads, transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives.contract import Objective

DPO_LOSSES = ("sigmoid", "ipo")
REFERENCE = "reference"


@gin.configurable
def dpo_settings(beta: float = 0.1, loss: str = "sigmoid", label_smoothing: float = 0.0,
                 sft_coef: float = 0.0) -> dict:
  """DPO's knobs, from gin: beta, the loss ('sigmoid' = DPO, 'ipo'), cDPO's label smoothing and
  the weight of the preferred answer's per-token NLL (RPO; 0 is plain DPO)."""
  if beta <= 0:
    raise ValueError(f"dpo_settings.beta={beta}; it must be > 0 (DPO's usual range is 0.01-0.5).")
  if loss not in DPO_LOSSES:
    raise ValueError(f"dpo_settings.loss={loss!r}; expected one of {DPO_LOSSES}.")
  if not 0.0 <= label_smoothing < 0.5:
    raise ValueError(f"dpo_settings.label_smoothing={label_smoothing}; expected a value in "
                     "[0, 0.5) (the assumed share of flipped labels; 0 is plain DPO).")
  if sft_coef < 0:
    raise ValueError(f"dpo_settings.sft_coef={sft_coef}; it must be >= 0 (0 is plain DPO; RPO "
                     "uses about 1).")
  return {"beta": float(beta), "loss": loss, "label_smoothing": float(label_smoothing),
          "sft_coef": float(sft_coef)}


# --- per-token values -> per-pair values --------------------------------------------------------

def side_sums(values, segment_ids):
  """values [batch, L] summed over each pair's chosen and rejected side: two [batch, L//2 + 1]."""
  length = segment_ids.shape[-1]
  pairs = length // 2 + 1  # a side has at least one token, so at most this many pairs
  per_segment = jax.vmap(lambda v, s: jax.ops.segment_sum(v, s, num_segments=2 * pairs + 1))(
      values.astype(jnp.float32), segment_ids)  # [batch, 2 * pairs + 1]; column 0 is padding
  sides = per_segment[:, 1:].reshape(values.shape[0], pairs, 2)
  return sides[..., 0], sides[..., 1]


def pair_fields(batch) -> dict:
  """The pairs of a batch: present (0/1), weight, margin, p_chosen, each [batch, pairs]."""
  score_at = batch["score_at"].astype(jnp.float32)
  at_chosen = lambda name: side_sums(batch[name] * score_at, batch["segment_ids"])[0]
  chosen_ends, rejected_ends = side_sums(score_at, batch["segment_ids"])
  present = ((chosen_ends == 1) & (rejected_ends == 1)).astype(jnp.float32)
  return {"present": present, "weight": at_chosen("pair_weight") * present,
          "margin": at_chosen("pair_margin"), "p_chosen": at_chosen("pair_p_chosen")}


# --- the losses, per pair (closed forms; tests check them against the formulas above) -----------

def soft_label_loss(f, diff, p_chosen):
  return p_chosen * f(diff) + (1.0 - p_chosen) * f(-diff)


def reward_pair_loss(r_chosen, r_rejected, p_chosen, margin):
  """p * -log sigmoid(d - m) + (1 - p) * -log sigmoid(-d - m), d = r_chosen - r_rejected."""
  return soft_label_loss(lambda d: -jax.nn.log_sigmoid(d - margin), r_chosen - r_rejected,
                         p_chosen)


def dpo_pair_loss(logratio_diff, p_chosen, *, beta: float, loss: str, label_smoothing: float):
  """The DPO family on h = chosen log-ratio - rejected log-ratio (policy over reference)."""
  p = p_chosen * (1.0 - label_smoothing) + (1.0 - p_chosen) * label_smoothing
  if loss == "ipo":
    return soft_label_loss(lambda h: jnp.square(h - 1.0 / (2.0 * beta)), logratio_diff, p)
  return soft_label_loss(lambda h: -jax.nn.log_sigmoid(beta * h), logratio_diff, p)


def preferred_nll(logp_chosen, logp_rejected, tokens_chosen, tokens_rejected, p_chosen):
  """p * nll_c + (1 - p) * nll_r, nll an answer's mean negative log-probability per token."""
  per_token = lambda logp, tokens: -logp / jnp.maximum(tokens, 1.0)
  return (p_chosen * per_token(logp_chosen, tokens_chosen)
          + (1.0 - p_chosen) * per_token(logp_rejected, tokens_rejected))


def decided_correct(diff, p_chosen, present):
  """(decided pairs, correctly ordered among them), each [batch, pairs] 0/1."""
  decided = present * (p_chosen != 0.5)
  correct = decided * jnp.where(p_chosen > 0.5, diff > 0, diff < 0)
  return decided, correct


# --- the objectives -----------------------------------------------------------------------------

def reward_sums(r_chosen, r_rejected, pairs: dict):
  """Per-pair rewards -> (weighted loss sum, weight total, metric sums)."""
  present, weight = pairs["present"], pairs["weight"]
  losses = reward_pair_loss(r_chosen, r_rejected, pairs["p_chosen"], pairs["margin"])
  diff = r_chosen - r_rejected
  decided, correct = decided_correct(diff, pairs["p_chosen"], present)
  sums = {"pairs": jnp.sum(present), "decided": jnp.sum(decided), "correct": jnp.sum(correct),
          "margin_sum": jnp.sum(diff * present),
          "chosen_sum": jnp.sum(r_chosen * present), "rejected_sum": jnp.sum(r_rejected * present),
          "square_sum": jnp.sum((jnp.square(r_chosen) + jnp.square(r_rejected)) * present)}
  return jnp.sum(losses * weight), jnp.sum(weight), sums


def summarize_reward(loss_sum, weight_total, sums: dict) -> dict:
  pairs, answers = jnp.maximum(sums["pairs"], 1.0), jnp.maximum(2.0 * sums["pairs"], 1.0)
  mean = (sums["chosen_sum"] + sums["rejected_sum"]) / answers
  return {"loss": loss_sum / jnp.maximum(weight_total, 1e-9),
          "reward/accuracy": sums["correct"] / jnp.maximum(sums["decided"], 1.0),
          "reward/margin": sums["margin_sum"] / pairs,
          "reward/chosen": sums["chosen_sum"] / pairs,
          "reward/rejected": sums["rejected_sum"] / pairs,
          "reward/mean": mean,
          "reward/std": jnp.sqrt(jnp.maximum(sums["square_sum"] / answers - mean**2, 0.0)),
          "pairs": sums["pairs"]}


def answer_rewards(cfg: ModelConfig, params, batch):
  """The reward head at each answer's last token: (r_chosen, r_rejected), each [batch, pairs]."""
  hidden = transformer.apply(cfg, heads.decoder_params(params), batch["tokens"],
                             batch["positions"], batch["segment_ids"], method="hidden_states")
  scores = heads.scores(params, hidden, "reward_head")  # [batch, L] float32
  return side_sums(scores * batch["score_at"], batch["segment_ids"])


def reward_objective(model_cfg: ModelConfig, loss_chunk: int = 0) -> Objective:
  """The pairwise reward model: the decoder plus a scalar head (model/heads.py), trained."""
  del loss_chunk  # no vocabulary-sized logits are computed

  def loss(params, batch, frozen):
    del frozen
    return reward_sums(*answer_rewards(model_cfg, params, batch), pair_fields(batch))

  return Objective(name="reward", loss=loss, eval_loss=loss, summarize=summarize_reward,
                   heads=("reward_head",))


def answer_terms(policy_logits, reference_logits, targets, weights):
  """Per answer token: log pi(target), log ref(target) and KL(pi || ref) of the next-token
  distributions at that prefix (exact over the vocabulary), each [batch, L], 0 off the answers.

  Summed over an answer, the KL is the sequence KL to the reference along the data's own prefixes
  (the sampled KL belongs to evaluation).
  """
  policy = jax.nn.log_softmax(policy_logits, axis=-1)  # [batch, L, vocab] float32
  reference = jax.nn.log_softmax(reference_logits, axis=-1)
  pick = lambda logp: jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  kl = jnp.sum(jnp.exp(policy) * (policy - reference), axis=-1)
  return pick(policy) * weights, pick(reference) * weights, kl * weights


def dpo_sums(policy, reference, kl, tokens, pairs: dict, settings: dict):
  """(chosen, rejected) log-probs of policy and reference, and answer lengths in tokens -> the
  contract's sums."""
  present, weight = pairs["present"], pairs["weight"]
  chosen_ratio = (policy[0] - reference[0]) * present
  rejected_ratio = (policy[1] - reference[1]) * present
  diff = chosen_ratio - rejected_ratio
  sft_coef = settings["sft_coef"]
  losses = dpo_pair_loss(diff, pairs["p_chosen"], beta=settings["beta"], loss=settings["loss"],
                         label_smoothing=settings["label_smoothing"])
  nll = preferred_nll(*policy, *tokens, pairs["p_chosen"]) * present
  if sft_coef:
    losses = losses + sft_coef * nll
  decided, correct = decided_correct(diff, pairs["p_chosen"], present)
  sums = {"pairs": jnp.sum(present), "decided": jnp.sum(decided), "correct": jnp.sum(correct),
          "margin_sum": settings["beta"] * jnp.sum(diff),
          "logratio_diff_sum": jnp.sum(diff),
          "chosen_ratio_sum": jnp.sum(chosen_ratio), "rejected_ratio_sum": jnp.sum(rejected_ratio),
          "chosen_logp_sum": jnp.sum(policy[0] * present),
          "rejected_logp_sum": jnp.sum(policy[1] * present),
          "kl_sum": jnp.sum((kl[0] + kl[1]) * present),
          "preferred_nll_sum": jnp.sum(nll)}
  return jnp.sum(losses * weight), jnp.sum(weight), sums


def summarize_dpo(loss_sum, weight_total, sums: dict) -> dict:
  pairs = jnp.maximum(sums["pairs"], 1.0)
  return {"loss": loss_sum / jnp.maximum(weight_total, 1e-9),
          "reward/accuracy": sums["correct"] / jnp.maximum(sums["decided"], 1.0),
          "reward/margin": sums["margin_sum"] / pairs,  # beta * h, the implicit reward margin
          "logratio/diff": sums["logratio_diff_sum"] / pairs,  # h (IPO settles at 1/(2 beta))
          "logratio/chosen": sums["chosen_ratio_sum"] / pairs,
          "logratio/rejected": sums["rejected_ratio_sum"] / pairs,
          "logp/chosen": sums["chosen_logp_sum"] / pairs,
          "logp/rejected": sums["rejected_logp_sum"] / pairs,
          "kl/sequence": sums["kl_sum"] / jnp.maximum(2.0 * sums["pairs"], 1.0),
          "nll/preferred": sums["preferred_nll_sum"] / pairs,  # per token, RPO's term
          "pairs": sums["pairs"]}


def dpo_objective(model_cfg: ModelConfig, loss_chunk: int = 0,
                  settings: dict | None = None) -> Objective:
  """DPO / IPO / cDPO against the frozen `reference` role (TrainConfig.reference_from)."""
  settings = dpo_settings() if settings is None else dpo_settings(**settings)

  if loss_chunk:
    raise ValueError(f"TrainConfig.loss_chunk={loss_chunk}: the dpo objective computes whole "
                     "logits (its KL metric needs both models' distributions); set "
                     "TrainConfig.loss_chunk = 0.")

  def logits(params, batch):  # [batch, L, vocab] float32
    return transformer.apply(model_cfg, params, batch["tokens"], batch["positions"],
                             batch["segment_ids"])

  def loss(params, batch, frozen):
    if REFERENCE not in frozen:
      raise ValueError(f"The dpo objective needs the frozen '{REFERENCE}' parameters; found roles "
                       f"{sorted(frozen)}. The loop loads them from TrainConfig.reference_from "
                       "(default: TrainConfig.init_from); set one of them.")
    reference_logits = jax.lax.stop_gradient(logits(frozen[REFERENCE], batch))
    policy, reference, kl = answer_terms(logits(params, batch), reference_logits,
                                         batch["targets"], batch["loss_weights"])
    per_side = lambda values: side_sums(values, batch["segment_ids"])
    return dpo_sums(per_side(policy), per_side(reference), per_side(jax.lax.stop_gradient(kl)),
                    per_side(batch["loss_weights"]), pair_fields(batch), settings)

  return Objective(name="dpo", loss=loss, eval_loss=loss, summarize=summarize_dpo,
                   frozen_roles=(REFERENCE,))
