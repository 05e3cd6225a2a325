"""The one log-likelihood scorer: how likely a checkpoint finds a continuation after a context.

A request is (context ids, continuation ids); its score is the summed log-probability of the
continuation's tokens given everything before them, and whether each of them is the model's
greedy (argmax) choice. Contexts start with the direction token, as generation prompts do
(`sample/text.py: prompt_ids`); `text_request` builds them from text.

Requests run through one jitted forward pass per batch (`objectives/tokens.py: token_terms`, the
training loss's own terms), RIGHT-padded to power-of-two length buckets and a fixed row count so
that few shapes compile. Padding never changes a score: attention is causal, so the padding after
a row cannot reach its real tokens, and the padding's terms get weight zero. A request longer than
the model's `max_len + 1` tokens keeps its last `max_len + 1` (the context is cut on the left).

`rolling_loglikelihood` scores a whole text in windows of `max_len` predicted tokens, each window
seeing as much of the text before it as fits (perplexity of documents longer than the model).
"""

import contextlib
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax import parallel
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import tokens as token_terms_lib
from batgpt_jax.sample import engine, text

MIN_BUCKET = 16


class Request(NamedTuple):
  context: tuple[int, ...]  # direction token first
  continuation: tuple[int, ...]


class Score(NamedTuple):
  logprob: float  # summed log-probability of the continuation, nats
  greedy: bool  # every continuation token is the argmax of its position


def text_request(vocabulary, context: str, continuation: str) -> Request:
  """The ids of `continuation` after `context`, tokenized as the text reads together.

  The whole text is tokenized once and cut where the context's own tokens end, so the
  continuation's first piece keeps the space that joins it to the context ('答案：' + 'A' is
  scored as it appears in '答案：A'). Where the pieces straddle the cut (the context's last piece
  would merge with the continuation's first), the continuation is tokenized on its own instead.
  """
  if not continuation:
    raise ValueError(f"An empty continuation after {context[-40:]!r}: there is nothing to score; "
                     "give at least one character.")
  # A context's trailing spaces belong to the continuation's first piece ('▁world'), as the
  # whole text would tokenize them.
  stripped = context.rstrip(" ")
  context, continuation = stripped, context[len(stripped):] + continuation
  own = [int(i) for i in vocabulary.encode(context)] if context else []
  whole = [int(i) for i in vocabulary.encode(context + continuation)]
  if whole[:len(own)] == own and len(whole) > len(own):
    cont = whole[len(own):]
  else:
    cont = [int(i) for i in vocabulary.encode(continuation)]
  return Request((vocab_lib.direction_ids(vocabulary)[0], *own), tuple(cont))


def fit(request: Request, max_len: int) -> Request:
  """`request` cut on the left to the model's window: at most max_len inputs (+1 predicted)."""
  if not request.context:
    raise ValueError("A request with an empty context; it needs at least the direction token "
                     "(`text_request` puts <l2r> first).")
  if not request.continuation:
    raise ValueError(f"A request with an empty continuation after {len(request.context)} context "
                     "tokens; there is nothing to score.")
  if len(request.continuation) > max_len:
    raise ValueError(f"A continuation of {len(request.continuation)} tokens does not fit the "
                     f"model's max_len={max_len}; score it with `rolling_loglikelihood`, or "
                     "shorten it.")
  keep = max_len + 1 - len(request.continuation)
  return Request(tuple(request.context[-keep:]), tuple(request.continuation))


def bucket(length: int, max_len: int) -> int:
  """Padded input width: powers of two from MIN_BUCKET, at most max_len."""
  return min(max(MIN_BUCKET, 1 << (length - 1).bit_length()), max_len)


def batch_arrays(requests: Sequence[Request], rows: int, width: int) -> dict[str, np.ndarray]:
  """Right-padded inputs, next-token targets and the continuation's weights, [rows, width].

  Rows past len(requests) are empty (all weights zero).
  """
  out = {name: np.zeros((rows, width), np.int32)
         for name in ("tokens", "positions", "segment_ids", "targets")}
  out["loss_weights"] = np.zeros((rows, width), np.float32)
  for row, (context, continuation) in enumerate(requests):
    ids = list(context) + list(continuation)
    n = len(ids) - 1  # inputs; the last id is only predicted
    out["tokens"][row, :n] = ids[:-1]
    out["targets"][row, :n] = ids[1:]
    out["positions"][row, :n] = np.arange(n)
    out["segment_ids"][row, :n] = 1
    out["loss_weights"][row, len(context) - 1:n] = 1.0
  return out


@functools.partial(jax.jit, static_argnames=("cfg", "loss_chunk", "mesh", "rules"))
def _scores(cfg: ModelConfig, params, batch, *, loss_chunk: int, mesh, rules):
  """[rows, width] log-probabilities of the weighted targets (0 elsewhere); [rows] whether all
  of them were the argmax. The host sums them in float64: a float32 sum of a long option's
  tokens would drift by more than the 1e-5 the scores are checked to."""
  sharded = (parallel.activation_sharding(mesh, rules) if mesh is not None
             else contextlib.nullcontext())
  with sharded:
    ce, _, correct = token_terms_lib.token_terms(params, batch, cfg, loss_chunk)  # [rows, width]
  weights = batch["loss_weights"]
  logprob = -ce * weights
  greedy = jnp.all(correct | (weights == 0), axis=-1)
  return logprob, greedy


def score(loaded, requests: Sequence[Request], *, batch_size: int = 16,
          loss_chunk: int = 0) -> list[Score]:
  """The Score of each request, in order, for a checkpoint from `sample/options.load`.

  loss_chunk: compute the LM head in chunks of this many positions (0: all at once); for large
  vocabularies, where [batch, length, vocab] float32 logits would not fit.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}; give a positive number of rows per batch.")
  cfg = loaded.cfg
  fitted = [fit(Request(tuple(c), tuple(x)), cfg.max_len) for c, x in requests]
  # Longest first: neighbours share a bucket, and the first batch shows the largest shape.
  order = sorted(range(len(fitted)), key=lambda i: -(len(fitted[i][0]) + len(fitted[i][1])))
  multiple = engine._batch_multiple(loaded.mesh, loaded.rules)  # pylint: disable=protected-access
  rows = -(-batch_size // multiple) * multiple  # the batch axis divides into its shards
  out: list[Score | None] = [None] * len(fitted)
  for start in range(0, len(order), batch_size):
    chunk = order[start:start + batch_size]
    width = bucket(max(len(fitted[i][0]) + len(fitted[i][1]) - 1 for i in chunk), cfg.max_len)
    arrays = batch_arrays([fitted[i] for i in chunk], rows, width)
    if loaded.mesh is None:
      batch = jax.device_put(arrays)
    else:
      batch = {k: jax.device_put(v, parallel.batch_sharding(loaded.mesh, loaded.rules, v.shape))
               for k, v in arrays.items()}
    logprob, greedy = jax.device_get(_scores(cfg, loaded.params, batch, loss_chunk=loss_chunk,
                                             mesh=loaded.mesh, rules=tuple(loaded.rules)))
    for row, i in enumerate(chunk):
      out[i] = Score(float(np.sum(logprob[row], dtype=np.float64)), bool(greedy[row]))
  return out


def rolling_windows(ids: Sequence[int], max_len: int) -> list[Request]:
  """Requests that together predict ids[1:] once each, in windows of at most max_len tokens.

  Window [a, b) predicts ids[a:b] from the up to max_len ids before position b - 1, so every
  window after the first sees a full max_len of text before its tokens.
  """
  ids = [int(i) for i in ids]
  if len(ids) < 2:
    raise ValueError(f"{len(ids)} token(s): a rolling log-likelihood needs the direction token "
                     "and at least one token of text.")
  out = []
  for a in range(1, len(ids), max_len):
    b = min(a + max_len, len(ids))
    out.append(Request(tuple(ids[max(0, b - 1 - max_len):a]), tuple(ids[a:b])))
  return out


def rolling_loglikelihood(loaded, texts: Sequence[str], *, batch_size: int = 16,
                          loss_chunk: int = 0) -> list[float]:
  """The summed log-probability of each whole text after <l2r>, in windows of the model's length."""
  per_text = [rolling_windows(text.prompt_ids(loaded.vocabulary, t, "l2r"), loaded.cfg.max_len)
              for t in texts]
  flat = [request for windows in per_text for request in windows]
  scores = iter(score(loaded, flat, batch_size=batch_size, loss_chunk=loss_chunk))
  return [sum(next(scores).logprob for _ in windows) for windows in per_text]

