"""Masked token cross-entropy, z-loss, and the bidirectional loss with per-direction metrics.

Losses are returned as *sums* with their token counts, so microbatches, devices and hosts can be
added up first and divided once: the mean over the whole global batch is then exact, whatever the
split. `directions` marks each token 0 (L2R) or 1 (R2L); `loss_weights` is 1 where a target exists.
"""

import gin
import jax
import jax.numpy as jnp

from batgpt_jax import parallel

DIRECTIONS = ("l2r", "r2l")


@gin.configurable
def loss_weights(r2l_weight: float = 1.0, z_loss: float = 0.0) -> dict[str, float]:
  """The objective's knobs, from gin: the R2L share of the loss and the z-loss coefficient."""
  if r2l_weight < 0 or z_loss < 0:
    raise ValueError(f"loss_weights.r2l_weight={r2l_weight} and z_loss={z_loss} must be >= 0")
  return {"r2l_weight": float(r2l_weight), "z_loss": float(z_loss)}


def token_cross_entropy(logits, targets):
  """logits [batch, length, vocab] float32, targets [batch, length] -> (ce, log_z, correct)."""
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  correct = jnp.argmax(logits, axis=-1) == targets
  return log_z - target_logit, log_z, correct


def chunked_token_cross_entropy(hidden, lm_head, targets, chunk: int):
  """`token_cross_entropy(hidden @ lm_head, targets)` without the [batch, length, vocab] logits.

  hidden [batch, length, embed] (compute dtype), lm_head [embed, vocab]. The sequence is cut into
  chunks of `chunk` positions; each chunk's float32 logits live only inside a rematerialised scan
  step, so the backward pass recomputes them instead of keeping all of them.
  """
  batch, length, _ = hidden.shape
  n = -(-length // chunk)
  pad = n * chunk - length
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  # [n, batch, chunk, ...]: scan over chunks, keeping the batch axis (and its sharding) whole.
  hidden = hidden.reshape(batch, n, chunk, -1).swapaxes(0, 1)
  targets = targets.reshape(batch, n, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one_chunk(h, t):
    logits = jnp.einsum("bcd,dv->bcv", h, lm_head.astype(h.dtype),
                        preferred_element_type=jnp.float32)
    logits = parallel.constrain(logits, ("batch", "length", "vocab"))
    return token_cross_entropy(logits, t)

  outs = jax.lax.map(lambda args: one_chunk(*args), (hidden, targets))
  return tuple(o.swapaxes(0, 1).reshape(batch, n * chunk)[:, :length] for o in outs)


def bidirectional_sums(ce, log_z, correct, batch, r2l_weight: float, z_loss: float):
  """Per-token terms -> (weighted loss sum, its weight total, per-direction metric sums)."""
  weights = batch["loss_weights"].astype(jnp.float32)
  is_r2l = batch["directions"] == 1
  dir_weight = jnp.where(is_r2l, r2l_weight, 1.0) * weights
  loss_sum = jnp.sum(ce * dir_weight) + z_loss * jnp.sum(jnp.square(log_z) * dir_weight)
  sums = {}
  for name, mask in (("l2r", ~is_r2l), ("r2l", is_r2l)):
    w = weights * mask
    sums[f"{name}/loss_sum"] = jnp.sum(ce * w)
    sums[f"{name}/correct"] = jnp.sum(correct * w)
    sums[f"{name}/tokens"] = jnp.sum(w)
  sums["z_sum"] = jnp.sum(jnp.square(log_z) * weights)
  return loss_sum, jnp.sum(dir_weight), sums


def summarize(sums: dict, loss_sum, weight_total) -> dict:
  """Metric sums -> the reported means: loss, and per direction loss, accuracy, perplexity."""
  out = {"loss": loss_sum / jnp.maximum(weight_total, 1e-9)}
  total = 0.0
  for name in DIRECTIONS:
    tokens = sums[f"{name}/tokens"]
    total = total + tokens
    mean = sums[f"{name}/loss_sum"] / jnp.maximum(tokens, 1.0)
    out[f"{name}/loss"] = mean
    out[f"{name}/accuracy"] = sums[f"{name}/correct"] / jnp.maximum(tokens, 1.0)
    out[f"{name}/perplexity"] = jnp.exp(jnp.minimum(mean, 50.0))
    out[f"{name}/tokens"] = tokens
  out["z_loss"] = sums["z_sum"] / jnp.maximum(total, 1.0)
  return out
