"""Sampling with a KV cache, left to right or right to left; and the `batgpt generate` command.

Batches of prompts of different lengths are LEFT-PADDED: every row writes its next token to the
same cache slot, so one `dynamic_update_slice` serves the batch, while each row keeps its own
positions (slot - first real slot) and masks the padding slots before its prompt. A row's
tokens are therefore computed exactly as if it were alone.

Prompts start with a direction token, as training documents do (data/preprocessors.py):
  l2r: [<l2r>] + tokens(text); the model continues the text.
  r2l: [<r2l>] + reversed(tokens(text)); the model writes, backwards, what comes BEFORE the text,
       and the output is reversed back. The text is tokenized on its own (with SentencePiece's
       leading '▁'), which may differ slightly from its tokenization inside a longer document.
Generation stops for a row at any stop token (EOS by default, which ends documents in both
directions; chat adds <eop>), which is not part of the output.
"""

import argparse
import dataclasses
import functools
import sys
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax import config
from batgpt_jax.data import chat
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig

DIRECTIONS = ("l2r", "r2l")


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


@functools.partial(jax.jit, static_argnames=("temperature", "top_k", "top_p"))
def choose(logits, key, *, temperature: float, top_k: int, top_p: float):
  """The next token of each row: argmax when temperature is 0, else a filtered sample."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnames=("cache",))
def decode_step(cfg: ModelConfig, params, tokens, cache, index, start):
  """Feeds tokens [batch, t] at cache slot `index`; returns the last logits and the cache."""
  positions = jnp.maximum(index + jnp.arange(tokens.shape[1])[None, :] - start[:, None], 0)
  logits, cache = transformer.decode(cfg, params, tokens, positions, cache, index, start)
  return logits[:, -1], cache


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _buckets(width: int, new_tokens: int, max_len: int) -> tuple[int, int]:
  """(padded prompt width, cache slots), rounded up so that few shapes are ever compiled.

  Extra left padding is masked like any other, so the bucket never changes a result.
  """
  padded = _round_up(width, 16)
  slots = _round_up(padded + new_tokens, 64)
  if slots > max_len:
    padded, slots = width, width + new_tokens
  return padded, slots


def generate_ids(cfg: ModelConfig, params, prompts: Sequence[Sequence[int]],
                 sampling: SamplingConfig) -> list[list[int]]:
  """The new tokens of each prompt (stop token excluded), sampled with a KV cache."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("Every prompt needs at least one token (the direction token).")
  lengths = np.array([len(p) for p in prompts], np.int32)
  width = int(lengths.max())
  if width + sampling.max_new_tokens > cfg.max_len:
    raise ValueError(f"The longest prompt ({width} tokens) plus max_new_tokens="
                     f"{sampling.max_new_tokens} is {width + sampling.max_new_tokens} positions, "
                     f"beyond the model's max_len={cfg.max_len}; shorten the prompt or lower "
                     "max_new_tokens.")
  width, slots = _buckets(width, sampling.max_new_tokens, cfg.max_len)
  tokens = np.full((len(prompts), width), vocab_lib.PAD_ID, np.int32)
  for row, prompt in enumerate(prompts):
    tokens[row, width - len(prompt):] = prompt
  start = jnp.asarray(width - lengths)
  cache = transformer.init_cache(cfg, len(prompts), slots)
  logits, cache = decode_step(cfg, params, jnp.asarray(tokens), cache, 0, start)
  stop = np.asarray(sampling.stop_ids, np.int32)
  done = np.zeros(len(prompts), bool)
  outputs: list[list[int]] = [[] for _ in prompts]
  key = jax.random.key(sampling.seed)
  for step in range(sampling.max_new_tokens):
    key, sub = jax.random.split(key)
    chosen = np.asarray(choose(logits, sub, temperature=float(sampling.temperature),
                               top_k=int(sampling.top_k), top_p=float(sampling.top_p)))
    for row in np.flatnonzero(~done):
      if chosen[row] in stop:
        done[row] = True
      else:
        outputs[row].append(int(chosen[row]))
    if done.all() or step == sampling.max_new_tokens - 1:
      break
    chosen = np.where(done, vocab_lib.PAD_ID, chosen).astype(np.int32)
    logits, cache = decode_step(cfg, params, jnp.asarray(chosen)[:, None], cache, width + step,
                                start)
  return outputs


def prompt_ids(vocabulary, text: str, direction: str) -> list[int]:
  """The direction token followed by the text's tokens (reversed for r2l)."""
  if direction not in DIRECTIONS:
    raise ValueError(f"direction {direction!r}; expected one of {DIRECTIONS}")
  l2r_id, r2l_id = vocab_lib.direction_ids(vocabulary)
  ids = [int(i) for i in vocabulary.encode(text)]
  return [l2r_id] + ids if direction == "l2r" else [r2l_id] + ids[::-1]


def output_text(vocabulary, ids: Sequence[int], direction: str) -> str:
  """Generated ids as text in reading order (r2l output is reversed back)."""
  ids = list(ids)[::-1] if direction == "r2l" else list(ids)
  return vocabulary.decode(ids)


def generate_text(cfg: ModelConfig, params, vocabulary, texts: Sequence[str],
                  sampling: SamplingConfig, *, direction: str = "l2r") -> list[str]:
  """The text after (l2r) or before (r2l) each of `texts`."""
  prompts = [prompt_ids(vocabulary, text, direction) for text in texts]
  return [output_text(vocabulary, ids, direction)
          for ids in generate_ids(cfg, params, prompts, sampling)]


def with_chat_stop(vocabulary, sampling: SamplingConfig) -> SamplingConfig:
  """`sampling` that also stops at <eop>, the end of an assistant reply."""
  eop = vocabulary.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  if eop == vocab_lib.UNK_ID or eop in sampling.stop_ids:
    return sampling
  return dataclasses.replace(sampling, stop_ids=tuple(sampling.stop_ids) + (eop,))


def chat_reply(cfg: ModelConfig, params, vocabulary, query: str, sampling: SamplingConfig, *,
               history: Sequence[tuple[str, str]] = (), system: str | None = None) -> str:
  """One assistant reply in BatGPT's chat template; <eop> and EOS end it."""
  text = chat.chat_prompt(query, history, system)
  return generate_text(cfg, params, vocabulary, [text],
                       with_chat_stop(vocabulary, sampling))[0].strip()


# --- the `batgpt generate` command -------------------------------------------------------------

def _stop_ids(vocabulary, stops: Sequence[str]) -> tuple[int, ...]:
  ids = [vocab_lib.EOS_ID]
  for stop in stops:
    if stop.isdigit():
      ids.append(int(stop))
      continue
    piece_id = vocabulary.tokenizer.piece_to_id(stop)
    if piece_id == vocab_lib.UNK_ID or vocabulary.tokenizer.id_to_piece(piece_id) != stop:
      raise SystemExit(f"error: --stop={stop!r} is not a single piece of the tokenizer; give a "
                       "piece (e.g. '<eop>') or a token id.")
    ids.append(piece_id)
  return tuple(dict.fromkeys(ids))


def cmd_generate(args, gin_text: str) -> int:
  try:
    return _generate(args, gin_text)
  except (FileNotFoundError, ValueError) as err:  # no checkpoint, bad settings: say which
    print(f"error: {err}", file=sys.stderr)
    return 2


def _generate(args, gin_text: str) -> int:
  del gin_text
  # pylint: disable=import-outside-toplevel
  from batgpt_jax import checkpoints
  from batgpt_jax.data import pipeline
  from batgpt_jax.train import loop
  run_dir = args.checkpoint or loop.TrainConfig().run_dir
  checkpoints_dir, step = checkpoints.find_step(run_dir, args.step)
  cfg, _ = checkpoints.read_config(checkpoints_dir, step)
  vocabulary = (vocab_lib.load_vocabulary(args.vocab) if args.vocab
                else pipeline.vocabulary_for(pipeline.DataConfig()))
  if vocabulary.vocab_size > cfg.vocab_size:
    raise SystemExit(f"error: the tokenizer has {vocabulary.vocab_size} pieces but the model "
                     f"only {cfg.vocab_size}; pass the run's tokenizer with --vocab.")
  texts = list(args.prompt)
  if args.prompt_file:
    with open(args.prompt_file, encoding="utf-8") as f:
      texts += [line.rstrip("\n") for line in f if line.strip()]
  if not texts:
    raise SystemExit("error: give at least one --prompt (or --prompt_file).")
  if args.chat and args.direction != "l2r":
    raise SystemExit("error: --chat writes replies left to right; drop --direction=r2l.")
  sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                            stop_ids=_stop_ids(vocabulary, args.stop))
  params = checkpoints.read_params(checkpoints_dir, step)
  print(f"# {checkpoints_dir}/{step}, {args.direction}", file=sys.stderr)
  if args.chat:
    texts = [chat.chat_prompt(text, system=args.system) for text in texts]
    sampling = with_chat_stop(vocabulary, sampling)
  outputs = generate_text(cfg, params, vocabulary, texts, sampling, direction=args.direction)
  for i, (text, out) in enumerate(zip(texts, outputs)):
    whole = out.strip() if args.chat else (out + text if args.direction == "r2l" else text + out)
    print(f"--- [{i}] ---\n{whole}")
  return 0


def add_generate_command(subparsers) -> None:
  """Adds `batgpt generate` (run it with the run's gin files, for the tokenizer)."""
  parser = subparsers.add_parser(
      "generate", help="sample text from a checkpoint (KV cache; l2r or r2l)",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  config.add_gin_flags(parser)
  parser.add_argument("--checkpoint", default=None,
                      help="run dir, checkpoints dir or step dir (default: TrainConfig.run_dir)")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
  parser.add_argument("--prompt_file", default=None, help="one prompt per line")
  parser.add_argument("--direction", choices=DIRECTIONS, default="l2r",
                      help="l2r continues the text; r2l writes what comes before it")
  parser.add_argument("--chat", action="store_true",
                      help="wrap each prompt in BatGPT's chat template and stop at <eop>")
  parser.add_argument("--system", default=None, help="system prompt for --chat")
  parser.add_argument("--max_new_tokens", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
  parser.add_argument("--top_k", type=int, default=0, help="0 is off")
  parser.add_argument("--top_p", type=float, default=1.0, help="1.0 is off")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--stop", action="append", default=[],
                      help="extra stop piece or id (repeatable); EOS always stops")
  parser.add_argument("--vocab", default=None,
                      help="SentencePiece model (default: DataConfig's vocabulary)")
  parser.set_defaults(run=cmd_generate)
