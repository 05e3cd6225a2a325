"""Token-level terms every language-model objective is built from: cross-entropy and log Z.

`token_terms` runs the decoder on a packed batch and returns per-token (cross-entropy, log Z,
correct) against `batch['targets']`; `chunked_token_cross_entropy` does so without ever holding
the float32 [batch, length, vocab] logits. `token_loss` adds the weighted loss sum that
training differentiates, through `fused_cross_entropy` when the loss is chunked.
"""

import functools

import jax
import jax.numpy as jnp

from batgpt_jax import parallel
from batgpt_jax.model import heads, transformer
from batgpt_jax.model.config import ModelConfig


def token_cross_entropy(logits, targets):
  """logits [batch, length, vocab] float32, targets [batch, length] -> (ce, log_z, correct).

  correct: no logit is above the target's (the max that log Z needs anyway; an exact tie counts
  as correct), which spares an argmax pass over the vocabulary."""
  top, _, total, target_logit = _logit_terms(logits, targets)
  log_z = top + jnp.log(total)
  return log_z - target_logit, log_z, target_logit >= top


def _logit_terms(logits, targets):
  """(max logit, exp(logits - max), its sum, the target's logit): what log Z, the cross-entropy
  and its gradient are made of."""
  top = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  exp = jnp.exp(logits - top[..., None])
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return top, exp, jnp.sum(exp, axis=-1), target_logit


def _chunk_logits(hidden, kernel):
  """One chunk's float32 logits [batch, chunk, vocab], sharded like the full ones."""
  logits = jnp.einsum("bcd,dv->bcv", hidden, kernel.astype(hidden.dtype),
                      preferred_element_type=jnp.float32)
  return parallel.constrain(logits, ("batch", "length", "vocab"))


def weighted_loss(ce, log_z, weights, z_loss: float):
  """The loss of every LM objective: sum of weights * (ce + z_loss * log_z^2)."""
  return jnp.sum(ce * weights) + z_loss * jnp.sum(jnp.square(log_z) * weights)


def _strided_chunks(x, chunk: int):
  """[batch, length, ...] -> [n, batch, chunk, ...], padded with zeros to n * chunk positions.

  Chunk i holds positions i, i + n, i + 2n, ...: when the sequence is sharded
  (gin/mesh/rules_long.gin) every chunk is spread over all shards, so each device walks its own
  slice and nothing is gathered."""
  batch, length = x.shape[:2]
  n = -(-length // chunk)
  if n * chunk - length:
    x = jnp.pad(x, [(0, 0), (0, n * chunk - length)] + [(0, 0)] * (x.ndim - 2))
  return jnp.moveaxis(x.reshape((batch, chunk, n) + x.shape[2:]), 2, 0)


def _unchunk(x, length: int):
  """The inverse of `_strided_chunks`: [n, batch, chunk, ...] -> [batch, length, ...]."""
  n, batch, chunk = x.shape[:3]
  return jnp.moveaxis(x, 0, 2).reshape((batch, n * chunk) + x.shape[3:])[:, :length]


def chunked_token_cross_entropy(hidden, lm_head, targets, chunk: int):
  """`token_cross_entropy(hidden @ lm_head, targets)` without the [batch, length, vocab] logits.

  hidden [batch, length, embed] (compute dtype), lm_head [embed, vocab]. The sequence is cut into
  strided chunks of `chunk` positions (`_strided_chunks`); each chunk's float32 logits live only
  inside a rematerialised scan step, so a backward pass recomputes them instead of keeping all of
  them. For evaluation; training uses `fused_cross_entropy`, which needs no recompute.
  """

  @jax.checkpoint
  def one_chunk(h, t):
    return token_cross_entropy(_chunk_logits(h, lm_head), t)

  chunks = (_strided_chunks(hidden, chunk), _strided_chunks(targets, chunk))
  outs = jax.lax.map(lambda args: one_chunk(*args), chunks)
  return tuple(_unchunk(o, hidden.shape[1]) for o in outs)


def fused_cross_entropy(hidden, lm_head, targets, weights, z_loss: float, chunk: int):
  """(loss_sum, ce, log_z, correct) of `hidden @ lm_head` against `targets`, for training;
  loss_sum = `weighted_loss(ce, log_z, weights, z_loss)`.

  Each strided chunk's float32 logits exist once: the forward pass turns them into the gradient
  of loss_sum with respect to the chunk's logits, w * ((1 + 2 z log Z) softmax - onehot), and
  folds it straight into the gradients of `hidden` and `lm_head`. The backward pass then only
  scales those: no logits are recomputed and none of [batch, length, vocab] is kept. The
  per-token terms are metrics and carry no gradient.
  """
  loss_sum, *terms = _fused(hidden, lm_head, targets, weights.astype(jnp.float32), z_loss, chunk)
  return (loss_sum,) + tuple(jax.lax.stop_gradient(t) for t in terms)


def _fused_forward(hidden, lm_head, targets, weights, z_loss: float, chunk: int):
  kernel = lm_head.astype(hidden.dtype)
  vocab = lm_head.shape[1]

  def one_chunk(d_kernel, xs):
    h, t, w = xs
    top, exp, total, target_logit = _logit_terms(_chunk_logits(h, kernel), t)
    log_z = top + jnp.log(total)
    ce = log_z - target_logit
    scale = w * (1.0 + 2.0 * z_loss * log_z) / total
    is_target = jnp.arange(vocab, dtype=t.dtype) == t[..., None]
    d_logits = (exp * scale[..., None] - jnp.where(is_target, w[..., None], 0.0)).astype(h.dtype)
    d_h = jnp.einsum("bcv,dv->bcd", d_logits, kernel, preferred_element_type=jnp.float32)
    d_kernel = d_kernel + jnp.einsum("bcd,bcv->dv", h, d_logits,
                                     preferred_element_type=jnp.float32)
    d_kernel = parallel.constrain(d_kernel, ("embed", "vocab"))
    loss = jnp.sum(w * (ce + z_loss * jnp.square(log_z)))
    return d_kernel, (loss, ce, log_z, target_logit >= top, d_h)

  chunks = tuple(_strided_chunks(x, chunk) for x in (hidden, targets, weights))
  d_kernel, (loss, ce, log_z, correct, d_h) = jax.lax.scan(
      one_chunk, jnp.zeros(lm_head.shape, jnp.float32), chunks)
  length = hidden.shape[1]
  terms = tuple(_unchunk(x, length) for x in (ce, log_z, correct))
  return (jnp.sum(loss),) + terms, (_unchunk(d_h, length), d_kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused(hidden, lm_head, targets, weights, z_loss, chunk):
  return _fused_forward(hidden, lm_head, targets, weights, z_loss, chunk)[0]


def _fused_fwd(hidden, lm_head, targets, weights, z_loss, chunk):
  out, (d_h, d_kernel) = _fused_forward(hidden, lm_head, targets, weights, z_loss, chunk)
  return out, (d_h, d_kernel, jnp.zeros((), hidden.dtype), jnp.zeros((), lm_head.dtype))


def _fused_bwd(z_loss, chunk, residuals, cotangents):
  del z_loss, chunk
  d_h, d_kernel, h_like, kernel_like = residuals
  scale = cotangents[0]  # the per-token terms' cotangents are zero (stop_gradient)
  return ((scale * d_h).astype(h_like.dtype), (scale * d_kernel).astype(kernel_like.dtype),
          None, None)


_fused.defvjp(_fused_fwd, _fused_bwd)


def token_terms(params, batch, cfg: ModelConfig, loss_chunk: int = 0):
  """The decoder on a packed batch -> per-token (cross-entropy, log Z, correct), [batch, length].

  `params` may carry scalar heads (a policy with PPO's value head): the decoder ignores them."""
  params = heads.decoder_params(params)
  if loss_chunk:
    return chunked_token_cross_entropy(_hidden_states(params, batch, cfg), params["lm_head"],
                                       batch["targets"], loss_chunk)
  logits = transformer.apply(cfg, params, batch["tokens"], batch["positions"],
                             batch["segment_ids"])  # [batch, length, vocab] float32
  return token_cross_entropy(logits, batch["targets"])


def _hidden_states(decoder_params, batch, cfg: ModelConfig):
  return transformer.apply(cfg, decoder_params, batch["tokens"], batch["positions"],
                           batch["segment_ids"], method="hidden_states")


def token_loss(params, batch, cfg: ModelConfig, weights, z_loss: float, loss_chunk: int = 0):
  """(loss_sum, ce, log_z, correct) for training: `weighted_loss` and the per-token terms.

  loss_chunk > 0 takes `fused_cross_entropy` (its per-token terms carry no gradient)."""
  if not loss_chunk:
    ce, log_z, correct = token_terms(params, batch, cfg)
    return (weighted_loss(ce, log_z, weights, z_loss), ce, log_z, correct)
  params = heads.decoder_params(params)
  return fused_cross_entropy(_hidden_states(params, batch, cfg), params["lm_head"],
                             batch["targets"], weights, z_loss, loss_chunk)
