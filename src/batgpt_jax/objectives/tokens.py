"""Token-level terms every language-model objective is built from: cross-entropy and log Z.

`token_terms` runs the decoder on a packed batch and returns per-token (cross-entropy, log Z,
correct) against `batch['targets']`; `chunked_token_cross_entropy` does so without ever holding
the float32 [batch, length, vocab] logits, for large vocabularies.
"""

import jax
import jax.numpy as jnp

from batgpt_jax import parallel
from batgpt_jax.model import heads, transformer
from batgpt_jax.model.config import ModelConfig


def token_cross_entropy(logits, targets):
  """logits [batch, length, vocab] float32, targets [batch, length] -> (ce, log_z, correct)."""
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  correct = jnp.argmax(logits, axis=-1) == targets
  return log_z - target_logit, log_z, correct


def chunked_token_cross_entropy(hidden, lm_head, targets, chunk: int):
  """`token_cross_entropy(hidden @ lm_head, targets)` without the [batch, length, vocab] logits.

  hidden [batch, length, embed] (compute dtype), lm_head [embed, vocab]. The sequence is cut into
  n chunks of `chunk` positions; each chunk's float32 logits live only inside a rematerialised
  scan step, so the backward pass recomputes them instead of keeping all of them. Chunk i holds
  positions i, i + n, i + 2n, ...: when the sequence is sharded (gin/mesh/rules_long.gin) every
  chunk is spread over all shards and each device walks its own slice, with no gather.
  """
  batch, length, _ = hidden.shape
  n = -(-length // chunk)
  pad = n * chunk - length
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  # [n, batch, chunk, ...]: scan over chunks, keeping the batch axis (and its sharding) whole.
  hidden = jnp.moveaxis(hidden.reshape(batch, chunk, n, -1), 2, 0)
  targets = jnp.moveaxis(targets.reshape(batch, chunk, n), 2, 0)

  @jax.checkpoint
  def one_chunk(h, t):
    logits = jnp.einsum("bcd,dv->bcv", h, lm_head.astype(h.dtype),
                        preferred_element_type=jnp.float32)
    logits = parallel.constrain(logits, ("batch", "length", "vocab"))
    return token_cross_entropy(logits, t)

  outs = jax.lax.map(lambda args: one_chunk(*args), (hidden, targets))
  return tuple(jnp.moveaxis(o, 0, 2).reshape(batch, n * chunk)[:, :length] for o in outs)


def token_terms(params, batch, cfg: ModelConfig, loss_chunk: int = 0):
  """The decoder on a packed batch -> per-token (cross-entropy, log Z, correct), [batch, length].

  `params` may carry scalar heads (a policy with PPO's value head): the decoder ignores them."""
  params = heads.decoder_params(params)
  args = (batch["tokens"], batch["positions"], batch["segment_ids"])
  if loss_chunk:
    hidden = transformer.apply(cfg, params, *args, method="hidden_states")
    return chunked_token_cross_entropy(hidden, params["lm_head"], batch["targets"], loss_chunk)
  logits = transformer.apply(cfg, params, *args)  # [batch, length, vocab] float32
  return token_cross_entropy(logits, batch["targets"])
