"""The generation engine: a batch of prompts decoded on device in one call, with a KV cache.

One jitted call runs the prefill of the prompt batch and then `jax.lax.while_loop`, one token per
iteration, until every row has stopped or `max_new_tokens` are out: the host sees nothing between
the prompts going in and the finished `Samples` coming out (no round trip per token).

Batches of prompts of different lengths are LEFT-PADDED: every row writes its next token to the
same cache slot, so one `dynamic_update_slice` serves the batch, while each row keeps its own
positions (slot - first real slot) and masks the padding slots before its prompt. A row's tokens
are therefore computed exactly as if it were alone. Prompt widths, cache sizes and batch sizes are
rounded up to buckets so that few shapes are ever compiled; the extra padding is masked (or, for
extra rows, never decoded into the result), so a bucket never changes a result.

A row stops at any of its stop tokens (EOS by default; chat adds <eop>). Its stop token IS part of
`Samples.tokens` (its log-probability is part of the policy's choice: PPO scores it), and
`Samples.output_ids()` drops it for text.

Sharding: give the training mesh and its logical axis rules and the parameters placed by
`place_params` (the training layout, `train.state.param_shardings`). The KV cache carries the
logical names of the attention's k and v activations (`CACHE_AXES`), so the rules shard it like
them (batch over data and fsdp, KV heads over tensor) and writing to it never reshards.

Streaming (chat only): `on_token` adds an `io_callback` to the loop body, so tokens reach the host
as they are sampled; without it the compiled program has no callback and no transfer at all.
"""

import contextlib
import dataclasses
import functools
import math
import threading
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from batgpt_jax import parallel
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model import heads, transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import filters
from batgpt_jax.train import state as train_state

# [layers, batch, slots, kv_heads, head_dim]: the cache holds the attention's k and v activations.
CACHE_AXES = ("layers", "batch", "length", "kv_heads", "head_dim")
NO_STOP = -1  # pads a row's stop ids; never a token


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 64
  temperature: float = 0.0  # 0: greedy
  top_k: int = 0  # 0: no top-k filter
  top_p: float = 1.0  # 1.0: no nucleus filter
  seed: int = 0
  stop_ids: tuple[int, ...] = (vocab_lib.EOS_ID,)

  def __post_init__(self):
    problems = []
    if self.max_new_tokens < 1:
      problems.append(f"max_new_tokens={self.max_new_tokens} (need >= 1)")
    if self.temperature < 0:
      problems.append(f"temperature={self.temperature} (need >= 0; 0 is greedy)")
    if self.top_k < 0:
      problems.append(f"top_k={self.top_k} (need >= 0; 0 is off)")
    if not 0.0 < self.top_p <= 1.0:
      problems.append(f"top_p={self.top_p} (need a value in (0, 1]; 1 is off)")
    if problems:
      raise ValueError("Invalid sampling settings: " + "; ".join(problems))


class Samples(NamedTuple):
  """What the engine returns for a batch (device arrays from `decode_loop`, numpy from `sample`).

  tokens:   [batch, max_new_tokens] int32, the sampled tokens; PAD after a row's end.
  logprobs: [batch, max_new_tokens] float32, each token's log-probability under
            log_softmax(logits / temperature) before top-k / top-p (filters.py); 0 after the end.
  lengths:  [batch] int32, how many tokens each row generated, its stop token included.
  stopped:  [batch] bool, whether the row ended on a stop token (its last one) rather than on
            max_new_tokens.
  """
  tokens: jax.Array
  logprobs: jax.Array
  lengths: jax.Array
  stopped: jax.Array

  def output_ids(self) -> list[list[int]]:
    """Each row's new tokens without its stop token, as Python lists (host side)."""
    tokens, lengths, stopped = (np.asarray(x) for x in (self.tokens, self.lengths, self.stopped))
    return [row[:n - int(s)].tolist() for row, n, s in zip(tokens, lengths, stopped)]


class _Loop(NamedTuple):
  step: jax.Array  # tokens chosen so far
  cache: dict
  logits: jax.Array  # [batch, vocab], the next token's
  key: jax.Array
  done: jax.Array  # [batch] bool
  samples: Samples


def place_params(cfg: ModelConfig, params: dict, mesh: Mesh | None, rules) -> dict:
  """The parameters in the training layout on `mesh` (unchanged without a mesh)."""
  if mesh is None:
    return params
  return jax.device_put(params, train_state.param_shardings(cfg, mesh, rules))


class _Stream:
  """The host end of the streaming callback, one listener at a time.

  The compiled program names only `_Stream.emit`, so every listener shares one compilation (a
  listener compiled in would recompile for each new function); the lock keeps two streaming
  calls from crossing their listeners.
  """
  lock = threading.Lock()
  listener: Callable | None = None

  @classmethod
  def emit(cls, step, tokens, emitted) -> None:
    cls.listener(step, tokens, emitted)


def decode_loop(cfg: ModelConfig, params: dict, tokens, lengths, stop_ids, key, *,
                sampling: SamplingConfig, slots: int, mesh: Mesh | None = None, rules=(),
                on_token: Callable | None = None) -> Samples:
  """The whole decode, on device: prefill `tokens`, then one token per loop iteration.

  tokens: [batch, width] int32, left-padded prompts; lengths: [batch] int32, each prompt's length
  (0 marks a padding row, which generates nothing); stop_ids: [batch, n] int32, each row's stop
  tokens padded with NO_STOP; key: a PRNG key (today's sequence: split once per token); slots: the
  cache size, at least width + max_new_tokens - 1. Only `sampling`'s decoding settings shape the
  compiled program; its seed and stop ids are read from `key` and `stop_ids`.

  Without `on_token` nothing leaves the device until the end, and the call returns at once
  (asynchronous dispatch). With it, on_token(step, tokens [batch], emitted [batch]) is called on
  the host as each token is sampled (`emitted`: the row is still writing, the token is not a
  stop), and the call returns when decoding is done: chat streams its reply this way.
  """
  run = functools.partial(
      _decode_loop, cfg, params, tokens, lengths, stop_ids, key, slots=slots,
      max_new_tokens=sampling.max_new_tokens, temperature=float(sampling.temperature),
      top_k=int(sampling.top_k), top_p=float(sampling.top_p), mesh=mesh,
      rules=tuple(rules) if mesh is not None else ())
  if on_token is None:
    return run(stream=False)
  with _Stream.lock:
    _Stream.listener = on_token
    try:
      return jax.block_until_ready(run(stream=True))
    finally:
      _Stream.listener = None


@functools.partial(jax.jit, static_argnames=("cfg", "slots", "max_new_tokens", "temperature",
                                             "top_k", "top_p", "mesh", "rules", "stream"))
def _decode_loop(cfg, params, tokens, lengths, stop_ids, key, *, slots, max_new_tokens,
                 temperature, top_k, top_p, mesh, rules, stream) -> Samples:
  choose = functools.partial(filters.choose, temperature=temperature, top_k=top_k, top_p=top_p)
  sharded = (parallel.activation_sharding(mesh, rules) if mesh is not None
             else contextlib.nullcontext())
  with sharded:  # activations and the cache constrained by the rules while tracing
    return _decode(cfg, params, tokens, lengths, stop_ids, key, slots, max_new_tokens, choose,
                   stream)


def _decode(cfg, params, tokens, lengths, stop_ids, key, slots, max_new_tokens, choose,
            stream: bool) -> Samples:
  batch, width = tokens.shape
  start = width - lengths  # [batch], each row's first real slot
  cache = jax.tree.map(lambda c: parallel.constrain(c, CACHE_AXES),
                       transformer.init_cache(cfg, batch, slots))
  positions = jnp.maximum(jnp.arange(width)[None, :] - start[:, None], 0)  # [batch, width]
  logits, cache = transformer.decode(cfg, params, tokens, positions, cache, 0, start,
                                     last_only=True)  # [batch, 1, vocab]
  empty = Samples(tokens=jnp.full((batch, max_new_tokens), vocab_lib.PAD_ID, jnp.int32),
                  logprobs=jnp.zeros((batch, max_new_tokens), jnp.float32),
                  lengths=jnp.zeros((batch,), jnp.int32),
                  stopped=jnp.zeros((batch,), bool))
  state = _Loop(step=jnp.zeros((), jnp.int32), cache=cache, logits=logits[:, -1], key=key,
                done=lengths == 0, samples=empty)

  def choose_and_record(state: _Loop) -> _Loop:
    key, sub = jax.random.split(state.key)
    token, logprob = choose(state.logits, sub)  # [batch], [batch]
    emitted = ~state.done
    ends = emitted & jnp.any(token[:, None] == stop_ids, axis=-1)
    token = jnp.where(emitted, token, vocab_lib.PAD_ID)
    old = state.samples
    samples = Samples(
        tokens=jax.lax.dynamic_update_slice(old.tokens, token[:, None], (0, state.step)),
        logprobs=jax.lax.dynamic_update_slice(
            old.logprobs, jnp.where(emitted, logprob, 0.0)[:, None], (0, state.step)),
        lengths=old.lengths + emitted.astype(jnp.int32),
        stopped=old.stopped | ends)
    if stream:
      io_callback(_Stream.emit, None, state.step, token, emitted & ~ends)
    return state._replace(step=state.step + 1, key=key, done=state.done | ends, samples=samples)

  def feed_last_token(state: _Loop) -> _Loop:
    last = jax.lax.dynamic_slice_in_dim(state.samples.tokens, state.step - 1, 1, axis=1)
    last = jnp.where(state.done[:, None], vocab_lib.PAD_ID, last)  # [batch, 1]
    slot = width + state.step - 1
    positions = jnp.maximum(slot - start, 0)[:, None]  # [batch, 1]
    logits, cache = transformer.decode(cfg, params, last, positions, state.cache, slot, start)
    return state._replace(cache=cache, logits=logits[:, -1])

  def running(state: _Loop):
    return (state.step < max_new_tokens) & ~jnp.all(state.done)

  # The first token comes from the prefill's logits; each iteration feeds the last one back.
  state = choose_and_record(state)
  state = jax.lax.while_loop(running, lambda s: choose_and_record(feed_last_token(s)), state)
  return state.samples


# --- from Python lists of ids to a bucketed device batch and back -------------------------------

def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def buckets(width: int, new_tokens: int, max_len: int) -> tuple[int, int]:
  """(padded prompt width, cache slots), rounded up so that few shapes are ever compiled.

  Widths go up in powers of two from 16 (a conversation that grows turn by turn meets a new
  shape only when it doubles); the cache then rounds up to a multiple of 64 slots.
  """
  padded = max(16, 1 << (width - 1).bit_length())
  slots = _round_up(padded + new_tokens, 64)
  if slots > max_len:  # near max_len: fewer spare slots, then no spare padding
    slots = padded + new_tokens
    if slots > max_len:
      padded, slots = width, width + new_tokens
  return padded, slots


def _batch_multiple(mesh: Mesh | None, rules) -> int:
  """The number of shards the rules give the batch axis: padded batches divide into them."""
  if mesh is None:
    return 1
  target = dict(rules).get("batch")
  axes = target if isinstance(target, tuple) else (target,)
  return math.prod(mesh.shape[a] for a in axes if a)


def _stop_matrix(shared: Sequence[int], per_row: Sequence[Sequence[int]]) -> np.ndarray:
  """[rows, n] stop ids: `shared` plus each row's own, padded with NO_STOP to a multiple of 4."""
  lists = [tuple(dict.fromkeys(tuple(shared) + tuple(own))) for own in per_row]
  out = np.full((len(lists), _round_up(max(1, max(len(s) for s in lists)), 4)), NO_STOP, np.int32)
  for row, ids in enumerate(lists):
    out[row, :len(ids)] = ids
  return out


def sample(cfg: ModelConfig, params: dict, prompts: Sequence[Sequence[int]],
           sampling: SamplingConfig, *, stop_ids: Sequence[Sequence[int]] | None = None,
           mesh: Mesh | None = None, rules=(), max_batch: int | None = None,
           on_token: Callable | None = None) -> Samples:
  """Samples (numpy, one row per prompt, in order) for prompts given as lists of ids.

  stop_ids: optional per-row stop tokens, added to `sampling.stop_ids`. With `mesh`, `params`
  must already be placed on it (`place_params`) and `rules` are the mesh's logical axis rules.
  max_batch: decode at most this many prompts at a time (an evaluation set of thousands), each
  batch padded to max_batch rows so that one compiled shape serves them all; batch n > 0 draws
  from the seed's key folded with n. on_token: see `decode_loop` (called for each batch in turn).
  `params` may carry scalar heads (a PPO policy with its value head); generation ignores them.
  """
  params = heads.decoder_params(params)
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("Every prompt needs at least one token (the direction token).")
  width = max(len(p) for p in prompts)
  if width + sampling.max_new_tokens > cfg.max_len:
    raise ValueError(f"The longest prompt ({width} tokens) plus max_new_tokens="
                     f"{sampling.max_new_tokens} is {width + sampling.max_new_tokens} positions, "
                     f"beyond the model's max_len={cfg.max_len}; shorten the prompt or lower "
                     "max_new_tokens.")
  per_row = list(stop_ids) if stop_ids is not None else [()] * len(prompts)
  if len(per_row) != len(prompts):
    raise ValueError(f"stop_ids has {len(per_row)} rows for {len(prompts)} prompts; give one "
                     "tuple of stop ids per prompt (or None for the sampling config's alone).")
  if max_batch is not None and max_batch < 1:
    raise ValueError(f"max_batch={max_batch}; give a positive number of prompts, or None.")
  size = len(prompts) if max_batch is None else min(max_batch, len(prompts))
  key = jax.random.key(sampling.seed)
  parts = [_sample_batch(cfg, params, prompts[i:i + size], per_row[i:i + size], sampling,
                         rows=size, key=key if i == 0 else jax.random.fold_in(key, i // size),
                         mesh=mesh, rules=rules, on_token=on_token)
           for i in range(0, len(prompts), size)]
  return Samples(*(np.concatenate(fields) for fields in zip(*parts)))


def _sample_batch(cfg, params, prompts, per_row, sampling, *, rows, key, mesh, rules,
                  on_token) -> Samples:
  """One bucketed batch of at most `rows` prompts (more rows where the mesh needs them)."""
  lengths = np.array([len(p) for p in prompts], np.int32)
  width, slots = buckets(int(lengths.max()), sampling.max_new_tokens, cfg.max_len)
  rows = _round_up(rows, _batch_multiple(mesh, rules))
  tokens = np.full((rows, width), vocab_lib.PAD_ID, np.int32)
  for row, prompt in enumerate(prompts):
    tokens[row, width - len(prompt):] = prompt
  lengths = np.pad(lengths, (0, rows - len(prompts)))  # extra rows: length 0, never decoded
  stops = np.pad(_stop_matrix(sampling.stop_ids, per_row), ((0, rows - len(prompts)), (0, 0)),
                 constant_values=NO_STOP)
  if mesh is None:
    inputs = jax.device_put((tokens, lengths, stops))
  else:
    inputs = tuple(jax.device_put(x, parallel.batch_sharding(mesh, rules, x.shape))
                   for x in (tokens, lengths, stops))
    key = jax.device_put(key, NamedSharding(mesh, PartitionSpec()))
  out = decode_loop(cfg, params, *inputs, key, sampling=sampling, slots=slots, mesh=mesh,
                    rules=rules, on_token=on_token)
  return Samples(*(np.asarray(x)[:len(prompts)] for x in jax.device_get(out)))


def generate_ids(cfg: ModelConfig, params: dict, prompts: Sequence[Sequence[int]],
                 sampling: SamplingConfig, *, mesh: Mesh | None = None, rules=(),
                 max_batch: int | None = None) -> list[list[int]]:
  """The new tokens of each prompt, stop token excluded (today's contract, kept for callers)."""
  return sample(cfg, params, prompts, sampling, mesh=mesh, rules=rules,
                max_batch=max_batch).output_ids()
