"""The per-token host loop that the engine replaced (batgpt_jax/generate.py before it).

One jitted decode step per token, the choice made on the host: kept, unchanged in behaviour, as
the oracle of the engine's tests and the baseline of `benchmarks/decode_bench.py`. Nothing else
should call it: use `engine.sample`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model import transformer
from batgpt_jax.sample import engine, filters


@functools.partial(jax.jit, static_argnames=("temperature", "top_k", "top_p"))
def _choose(logits, key, *, temperature: float, top_k: int, top_p: float):
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filters.filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def _decode_step(cfg, params, tokens, cache, index, start):
  positions = jnp.maximum(index + jnp.arange(tokens.shape[1])[None, :] - start[:, None], 0)
  logits, cache = transformer.decode(cfg, params, tokens, positions, cache, index, start)
  return logits[:, -1], cache


def host_loop_ids(cfg, params, prompts, sampling) -> list[list[int]]:
  lengths = np.array([len(p) for p in prompts], np.int32)
  width, slots = engine.buckets(int(lengths.max()), sampling.max_new_tokens, cfg.max_len)
  tokens = np.full((len(prompts), width), vocab_lib.PAD_ID, np.int32)
  for row, prompt in enumerate(prompts):
    tokens[row, width - len(prompt):] = prompt
  start = jnp.asarray(width - lengths)
  cache = transformer.init_cache(cfg, len(prompts), slots)
  logits, cache = _decode_step(cfg, params, jnp.asarray(tokens), cache, 0, start)
  stop = np.asarray(sampling.stop_ids, np.int32)
  done = np.zeros(len(prompts), bool)
  outputs = [[] for _ in prompts]
  key = jax.random.key(sampling.seed)
  for step in range(sampling.max_new_tokens):
    key, sub = jax.random.split(key)
    chosen = np.asarray(_choose(logits, sub, temperature=float(sampling.temperature),
                                top_k=int(sampling.top_k), top_p=float(sampling.top_p)))
    for row in np.flatnonzero(~done):
      if chosen[row] in stop:
        done[row] = True
      else:
        outputs[row].append(int(chosen[row]))
    if done.all() or step == sampling.max_new_tokens - 1:
      break
    chosen = np.where(done, vocab_lib.PAD_ID, chosen).astype(np.int32)
    logits, cache = _decode_step(cfg, params, jnp.asarray(chosen)[:, None], cache, width + step,
                                 start)
  return outputs
