"""Instruction tuning: next-token loss on the assistant replies (and their <eop>) only.

The data decides what is a target: `loss_weights` is 1 exactly where a position predicts a reply
token (see data/chat.py), so prompts, system text and the chat template are context, never
targets. Metrics are reported under `reply/`.
"""

import gin
import jax.numpy as jnp

from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import tokens
from batgpt_jax.objectives.contract import Objective, group_means


@gin.configurable
def sft_weights(z_loss: float = 0.0) -> dict[str, float]:
  if z_loss < 0:
    raise ValueError(f"sft_weights.z_loss={z_loss} must be >= 0")
  return {"z_loss": float(z_loss)}


def reply_sums(ce, log_z, correct, batch, z_loss: float):
  """Per-token terms -> (loss sum over reply tokens, their count, metric sums)."""
  weights = batch["loss_weights"].astype(jnp.float32)
  ce_sum = jnp.sum(ce * weights)
  loss_sum = tokens.weighted_loss(ce, log_z, weights, z_loss)
  sums = {"reply/loss_sum": ce_sum, "reply/correct": jnp.sum(correct * weights),
          "reply/tokens": jnp.sum(weights)}
  return loss_sum, jnp.sum(weights), sums


def summarize(loss_sum, weight_total, sums: dict) -> dict:
  out = {"loss": loss_sum / jnp.maximum(weight_total, 1e-9)}
  out.update(group_means(sums, ("reply",)))
  return out


def objective(model_cfg: ModelConfig, loss_chunk: int = 0) -> Objective:
  """Supervised fine-tuning over batches of rendered conversations with a reply mask."""
  z_loss = sft_weights()["z_loss"]

  def sums_with(params, batch, z):
    weights = batch["loss_weights"].astype(jnp.float32)
    loss_sum, ce, log_z, correct = tokens.token_loss(params, batch, model_cfg, weights, z,
                                                     loss_chunk)
    _, total, sums = reply_sums(ce, log_z, correct, batch, z)
    return loss_sum, total, sums

  return Objective(
      name="sft",
      loss=lambda params, batch, frozen: sums_with(params, batch, z_loss),
      eval_loss=lambda params, batch, frozen: sums_with(params, batch, 0.0),
      summarize=summarize)
