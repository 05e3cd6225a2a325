"""The choice of the next token: greedy, or a temperature sample filtered by top-k and top-p.

The log-probability returned beside each token is that of the *unfiltered* distribution at the
sampling temperature, log_softmax(logits / temperature) (log_softmax(logits) when greedy), as
TRL's PPO trainer computes it: it is what a plain forward pass of the policy can recompute during
training, so the PPO ratio starts at exactly 1 and stays differentiable for every token (a
filtered distribution would put -inf on the tokens that top-k / top-p cut).
"""

import jax
import jax.numpy as jnp


def filter_logits(logits, top_k: int, top_p: float):
  """Sets the logits outside the top-k and outside the nucleus (top-p) to -inf. [batch, vocab]"""
  if top_k > 0:
    kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
    cutoff = jnp.min(jnp.where(before < top_p, ordered, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def choose(logits, key, *, temperature: float, top_k: int, top_p: float):
  """(token [batch] int32, its log-probability [batch] float32) from logits [batch, vocab].

  Argmax when temperature is 0, else a sample from the filtered, tempered distribution. The
  settings are Python numbers (static under jit): each combination compiles once.
  """
  logits = logits.astype(jnp.float32)
  if temperature == 0.0:
    scaled = logits
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  else:
    scaled = logits / temperature
    token = jax.random.categorical(key, filter_logits(scaled, top_k, top_p),
                                   axis=-1).astype(jnp.int32)
  logprob = jnp.take_along_axis(jax.nn.log_softmax(scaled, axis=-1), token[:, None], axis=-1)
  return token, logprob[:, 0]
