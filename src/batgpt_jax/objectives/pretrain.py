"""Bidirectional pretraining: next-token loss on L2R and R2L documents, with per-direction metrics.

`directions` marks each token 0 (L2R) or 1 (R2L); `loss_weights` is 1 where a target exists.
The R2L share of the loss (`loss_weights.r2l_weight`) and the z-loss come from gin. Held-out
batches are scored with both directions weighted 1 and no z-loss, so eval numbers do not move
when the training mix does.
"""

import gin
import jax.numpy as jnp

from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import tokens
from batgpt_jax.objectives.contract import Objective, group_means

DIRECTIONS = ("l2r", "r2l")


@gin.configurable
def loss_weights(r2l_weight: float = 1.0, z_loss: float = 0.0) -> dict[str, float]:
  """The objective's knobs, from gin: the R2L share of the loss and the z-loss coefficient."""
  if r2l_weight < 0 or z_loss < 0:
    raise ValueError(f"loss_weights.r2l_weight={r2l_weight} and z_loss={z_loss} must be >= 0")
  return {"r2l_weight": float(r2l_weight), "z_loss": float(z_loss)}


def token_weights(batch, r2l_weight: float, xp=jnp):
  """Each token's weight in the loss: 1 on L2R targets, r2l_weight on R2L ones, 0 elsewhere.

  xp: jnp under jit, or numpy for host batches (PPO's anchor normalisers)."""
  return (xp.where(batch["directions"] == 1, r2l_weight, 1.0)
          * batch["loss_weights"].astype(xp.float32))


def bidirectional_sums(ce, log_z, correct, batch, r2l_weight: float, z_loss: float):
  """Per-token terms -> (weighted loss sum, its weight total, per-direction metric sums)."""
  weights = batch["loss_weights"].astype(jnp.float32)
  is_r2l = batch["directions"] == 1
  dir_weight = token_weights(batch, r2l_weight)
  loss_sum = tokens.weighted_loss(ce, log_z, dir_weight, z_loss)
  sums = {}
  for name, mask in (("l2r", ~is_r2l), ("r2l", is_r2l)):
    w = weights * mask
    sums[f"{name}/loss_sum"] = jnp.sum(ce * w)
    sums[f"{name}/correct"] = jnp.sum(correct * w)
    sums[f"{name}/tokens"] = jnp.sum(w)
  sums["z_sum"] = jnp.sum(jnp.square(log_z) * weights)
  return loss_sum, jnp.sum(dir_weight), sums


def summarize(loss_sum, weight_total, sums: dict) -> dict:
  """Metric sums -> the reported means: loss, and per direction loss, accuracy, perplexity."""
  out = {"loss": loss_sum / jnp.maximum(weight_total, 1e-9)}
  out.update(group_means(sums, DIRECTIONS))
  total = sums["l2r/tokens"] + sums["r2l/tokens"]
  out["z_loss"] = sums["z_sum"] / jnp.maximum(total, 1.0)
  return out


def objective(model_cfg: ModelConfig, loss_chunk: int = 0,
              weights: dict | None = None) -> Objective:
  """The BatGPT pretraining objective over batches from `data.pipeline.train_batches`.

  `weights` ({'r2l_weight', 'z_loss'}) defaults to gin's `loss_weights`.
  """
  weights = loss_weights() if weights is None else loss_weights(**weights)

  def sums_with(params, batch, r2l_weight, z_loss):
    loss_sum, ce, log_z, correct = tokens.token_loss(
        params, batch, model_cfg, token_weights(batch, r2l_weight), z_loss, loss_chunk)
    _, total, sums = bidirectional_sums(ce, log_z, correct, batch, r2l_weight, z_loss)
    return loss_sum, total, sums

  return Objective(
      name="pretrain",
      loss=lambda params, batch, frozen: sums_with(params, batch, **weights),
      eval_loss=lambda params, batch, frozen: sums_with(params, batch, 1.0, 0.0),
      summarize=summarize)
